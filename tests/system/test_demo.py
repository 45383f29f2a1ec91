"""``lisgw demo`` end to end: the command as a subprocess, in a temporary data directory.

The demo (lisgw.sim.demo) runs the gateway, the HIS simulator and the scenario's analyzers
(simulators/demo.yaml: Sysmex XN-550 over ASTM/TCP, Roche cobas c311 over ASTM on a serial
pty asking for its orders by host query, Mindray BC-5130 over HL7/MLLP) in one process,
replaying the captures shipped in simulators/captures.

The main test runs it as a fresh ``pip install .`` would: lisgw copied into the
site-packages of a new virtual environment (no checkout beside it, so no ../shared/corpus),
pyproject's ``data-files`` copied under its ``share/`` as a wheel installs them, started from
a directory outside the repository. Its dependencies come from this test's environment
(PYTHONPATH), which holds no importable lisgw of its own (the editable install is a .pth
file, and PYTHONPATH directories do not run .pth files).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

from tests.system.conftest import REPO, Workdir

ANALYZERS = (
    "Sysmex XN-550 (ASTM, TCP)",
    "Roche cobas c311 (ASTM, serial pty)",
    "Mindray BC-5130 (HL7, MLLP)",
)


def installed_layout(prefix: Path) -> tuple[Path, dict[str, str]]:
    """A virtual environment at ``prefix`` holding lisgw as a wheel installs it; its python
    and the environment to run it with."""
    venv.EnvBuilder(with_pip=False).create(prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = prefix / "lib" / version / "site-packages"
    shutil.copytree(REPO / "lisgw", site / "lisgw", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    for target, patterns in pyproject["tool"]["setuptools"]["data-files"].items():
        (prefix / target).mkdir(parents=True, exist_ok=True)
        for pattern in patterns:
            for source in REPO.glob(pattern):
                shutil.copy2(source, prefix / target / source.name)
    env = dict(os.environ)
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies only
    env.pop("PYTHONHOME", None)
    return prefix / "bin" / "python", env


def run_demo(
    python: Path | str, data_dir: Path, *extra: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "lisgw", "demo", "--data-dir", str(data_dir), *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def summary_row(stdout: str, label: str) -> list[str]:
    """orders, query, messages, results, to HIS: one analyzer's summary row."""
    for line in stdout.splitlines():
        if line.startswith(label):
            return re.split(r"\s{2,}", line[len(label) :].strip())
    raise AssertionError(f"no summary row for {label}:\n{stdout}")


def test_demo_from_an_installed_layout_needs_no_corpus_and_answers_the_host_query() -> None:
    workdir = Workdir()
    try:
        python, env = installed_layout(workdir.path / "venv")
        probe = "import lisgw.sim.scenario as s; print(s.__file__, s.SCENARIO_DIR)"
        where = subprocess.run(
            [str(python), "-c", probe],
            cwd=workdir.path, env=env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()  # fmt: skip
        assert where[0].startswith(str(workdir.path / "venv" / "lib")), where
        assert where[1] == str(workdir.path / "venv" / "share" / "lisgw" / "simulators"), where

        done = run_demo(python, workdir.path / "data", "--timeout", "60", cwd=workdir.path, env=env)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        rows = {label: summary_row(done.stdout, label) for label in ANALYZERS}
        for label, (orders, query, messages, results, delivered) in rows.items():
            assert (orders, messages, delivered) == ("1", "1", "1"), (label, output)
            assert int(results) > 0, output
            expected_query = "1 ord" if "cobas" in label else "-"
            assert query == expected_query, (label, output)
        assert "host queries: 1 sent, 1 answered" in done.stdout, output
        assert "host query answered: cobas-c311 sample CL-PL-24-0370: 1 order(s)" in done.stdout
        assert "tests 685/, 687/" in done.stdout  # the HIS's CHEM-ALT, CHEM-AST, mapped back
        assert "dead letters: 0" in done.stdout
        assert "demo OK" in done.stdout
        for event in ("order sent", "analyzer connected", "results stored", "ORU delivered"):
            assert done.stdout.count(event) == 3, output
        assert "MISSING" not in done.stdout
        assert "DEMO^" not in output  # the orders' (invented) patients are not shown
        data = workdir.path / "data"
        assert (data / "lisgw.sqlite").is_file()  # an explicit data directory is kept
        assert (data / "lisgw.yaml").is_file()
    finally:
        workdir.remove()


def test_demo_faults_scenario_loses_nothing() -> None:
    workdir = Workdir()
    try:
        done = run_demo(
            sys.executable, workdir.path / "data", "--scenario", "faults", "--timeout", "90",
            cwd=REPO,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "HIS down for 3 s" in done.stdout and "HIS up again" in done.stdout
        assert "sent without EOT: cobas-c311 (fault): incomplete" in done.stdout
        for label in ANALYZERS:
            delivered = summary_row(done.stdout, label)[-1]
            assert int(delivered) >= 1, (label, output)
        assert "dead letters: 0" in done.stdout
        assert "demo OK" in done.stdout
    finally:
        workdir.remove()
