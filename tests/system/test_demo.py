"""``lisgw demo`` end to end: the command as a subprocess, in a temporary data directory.

The demo (lisgw.sim.demo) runs the gateway, the HIS simulator and three simulated analyzers
(Sysmex XN-550 over ASTM/TCP, Roche cobas c311 over ASTM on a serial pty, Mindray BC-5130
over HL7/MLLP) in one process, replaying captures of ../shared/corpus read at run time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.system.conftest import CORPUS, REPO, Workdir

ANALYZERS = (
    "Sysmex XN-550 (ASTM, TCP)",
    "Roche cobas c311 (ASTM, serial pty)",
    "Mindray BC-5130 (HL7, MLLP)",
)


def run_demo(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lisgw", "demo", "--data-dir", str(data_dir), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def summary_row(stdout: str, label: str) -> tuple[int, int, int, int]:
    """orders, messages, results, delivered to the HIS: one analyzer's summary row."""
    for line in stdout.splitlines():
        if line.startswith(label):
            numbers = re.findall(r"\d+", line[len(label) :])
            orders, messages, results, delivered = (int(n) for n in numbers)
            return orders, messages, results, delivered
    raise AssertionError(f"no summary row for {label}:\n{stdout}")


def test_demo_delivers_every_analyzers_results_to_the_his() -> None:
    assert CORPUS.is_dir(), f"the shared corpus is missing at {CORPUS}"
    workdir = Workdir()
    try:
        done = run_demo(workdir.path / "data", "--timeout", "60")
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        for label in ANALYZERS:
            orders, messages, results, delivered = summary_row(done.stdout, label)
            assert (orders, messages, delivered) == (1, 1, 1), output
            assert results > 0, output
        assert "dead letters: 0" in done.stdout
        assert "host queries: not part of the demo yet" in done.stdout
        assert "demo OK" in done.stdout
        for event in ("order sent", "analyzer connected", "results stored", "ORU delivered"):
            assert done.stdout.count(event) == 3, output
        assert "MISSING" not in done.stdout
        assert "DEMO^PATIENT" not in output  # the orders' (invented) patients are not shown
        data = workdir.path / "data"
        assert (data / "lisgw.sqlite").is_file()  # an explicit data directory is kept
        assert (data / "lisgw.yaml").is_file()
    finally:
        workdir.remove()
