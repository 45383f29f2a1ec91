"""Simulation scenarios (lisgw.sim.scenario), the shipped captures (lisgw.sim.captures), and
the simulators' message builders: host queries, HIS orders, download summaries.

The scenario files under test are the shipped ones (simulators/*.yaml) and small invented
ones written to tmp_path; the captures are simulators/captures (derived from the corpus,
provenance in simulators/captures/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lisgw.config_schema import WireProtocol
from lisgw.errors import ConfigError, LisgwError, LocalProtocolError
from lisgw.his.orders import parse_orders
from lisgw.his.profile import HisProfile
from lisgw.sim.analyzer import Faults, host_query_records
from lisgw.sim.captures import hl7_messages, read_astm_messages, read_hl7_messages
from lisgw.sim.his import AckMode, order_message
from lisgw.sim.runner import download_summary
from lisgw.sim.scenario import (
    SCENARIO_DIR,
    DownPeriod,
    QueryForm,
    ScenarioTransport,
    find_scenario,
    load_scenario,
    scenario_names,
)

REPO = Path(__file__).resolve().parents[2]
CAPTURES = REPO / "simulators" / "captures"
V251 = HisProfile.load(REPO / "config" / "his" / "hl7-v251.yaml")
# Names the corpus originals carried (placeholders there); the derived captures replace them.
ORIGINAL_NAMES = (b"Jim", b"Brown", b"TESTONE", b"PATIENTA", b"Administrator")


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "one.astm").write_text("H|\\^&|||SIM^1\nL|1|N\n", encoding="utf-8")
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped scenarios and captures ------------------------------------------------------


def test_the_scenarios_ship_beside_the_package_in_a_checkout() -> None:
    assert SCENARIO_DIR == REPO / "simulators"
    assert {"demo", "faults"} <= set(scenario_names())


def test_demo_scenario_has_an_analyzer_per_transport_and_a_host_query() -> None:
    demo = load_scenario("demo")
    assert [(a.connection, a.protocol, a.transport) for a in demo.analyzers] == [
        ("xn-550", WireProtocol.ASTM, ScenarioTransport.TCP),
        ("cobas-c311", WireProtocol.ASTM, ScenarioTransport.SERIAL),
        ("bc-5130", WireProtocol.HL7, ScenarioTransport.TCP),
    ]
    cobas = demo.analyzer("cobas-c311")
    assert (cobas.query, cobas.sample, cobas.order_kind) == (
        QueryForm.ROCHE_TSREQ,
        "CL-PL-24-0370",
        "OML",
    )
    assert demo.his.ack is AckMode.ACCEPT and demo.his.down == ()
    assert demo.test_codes["roche-cobas-c311"] == {"685/": "CHEM-ALT", "687/": "CHEM-AST"}
    with pytest.raises(ConfigError, match=r"no analyzer plays 'nope'.*xn-550"):
        demo.analyzer("nope")


def test_faults_scenario_reads_every_fault_and_the_outage() -> None:
    faults = load_scenario("faults")
    assert faults.his.delay == 0.5
    assert faults.his.down == (DownPeriod(0.0, 3.0),)
    assert faults.analyzer("xn-550").faults == Faults(
        bad_checksum_frame=0, one_byte_writes=True, stall_before_frame=1, stall_seconds=2.0
    )
    cobas = faults.analyzer("cobas-c311")
    assert (cobas.faults.drop_eot_after_message, cobas.repeat) == (0, 2)


def test_shipped_captures_give_the_scenario_samples_and_carry_no_original_names() -> None:
    for analyzer in load_scenario("demo").analyzers:
        data = analyzer.capture.read_bytes()
        for name in ORIGINAL_NAMES:
            assert name not in data, (analyzer.capture.name, name)
        if analyzer.protocol is WireProtocol.HL7:
            messages = read_hl7_messages(analyzer.capture)
            assert len(messages) == 1 and messages[0].startswith(b"MSH|")
            assert b"\rOBR|1||5|" in messages[0]
        else:
            (message,) = read_astm_messages(analyzer.capture)
            assert message[0].startswith(b"H|") and message[-1].startswith(b"L|")
            order = next(r for r in message if r.startswith(b"O|"))
            assert analyzer.sample.encode() in order
    assert (CAPTURES / "README.md").read_text("utf-8").count("corpus") >= 3


def test_hl7_messages_from_lines_and_from_mllp_blocks() -> None:
    lines = b"MSH|^~\\&|A\nPID|1\n\nMSH|^~\\&|B\r\nOBX|1\n"
    assert hl7_messages(lines) == [b"MSH|^~\\&|A\rPID|1\r", b"MSH|^~\\&|B\rOBX|1\r"]
    mllp = b"\x0bMSH|^~\\&|A\rPID|1\r\x1c\r\x0bMSH|^~\\&|B\r\x1c\r"
    assert hl7_messages(mllp) == [b"MSH|^~\\&|A\rPID|1\r", b"MSH|^~\\&|B\r"]


def test_a_capture_without_messages_is_refused_by_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"\n\n")
    with pytest.raises(LisgwError, match=r"empty\.hl7: no HL7 message"):
        read_hl7_messages(empty)
    with pytest.raises(LisgwError, match=r"missing\.astm: cannot read"):
        read_astm_messages(tmp_path / "missing.astm")


# -- loading errors ----------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "his:\n"
        "  ack: OK\n"
        "  down: [{after: 1s}]\n"
        "analyzers:\n"
        "  - connection: a\n"
        "    capture: one.astm\n"
        "    sample: S1\n"
        "    colour: red\n"
        "    faults: {stall_before_frame: 0}\n"
        "  - connection: a\n"
        "    protocol: hl7\n"
        "    transport: serial\n"
        "    capture: nowhere.hl7\n"
        "    query: astm-q\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_scenario(str(path))
    problems = raised.value.problems
    expected = [
        'line 2: his.ack: "OK" is not one of AA | AE | AR | none',
        "line 3: his.down[0].for: missing",
        "line 8: analyzers[0].colour: unknown key",
        "line 9: analyzers[0].faults.stall_seconds: missing",
        'line 10: analyzers[1].connection: "a" is given twice',
        'line 12: analyzers[1].transport: "serial" with protocol hl7',
        "line 13: analyzers[1].capture: ",
        "line 14: analyzers[1].query: host queries are sent by ASTM analyzers only",
        "analyzers[1].sample: missing",
    ]
    for text in expected:
        assert any(str(path) in p and text in p for p in problems), (text, problems)


def test_a_minimal_scenario_takes_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "analyzers:\n  - {connection: a, capture: one.astm, sample: 27, query: none}\n",
    )
    scenario = load_scenario(str(path))
    (analyzer,) = scenario.analyzers
    assert scenario.name == "s"
    assert (analyzer.sample, analyzer.capture) == ("27", tmp_path / "one.astm")
    assert (analyzer.protocol, analyzer.transport, analyzer.query) == (
        WireProtocol.ASTM,
        ScenarioTransport.TCP,
        None,
    )
    assert (scenario.his.ack, scenario.his.delay, analyzer.repeat) == (AckMode.ACCEPT, 0.0, 1)


def test_ack_none_is_a_silent_his_and_zero_delays_are_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "his: {ack: none, delay: 0s, down: [{after: 0, for: 2s}]}\n"
        "analyzers:\n  - {connection: a, capture: one.astm, sample: S}\n",
    )
    his = load_scenario(str(path)).his
    assert (his.ack, his.delay, his.down) == (AckMode.SILENT, 0.0, (DownPeriod(0.0, 2.0),))


def test_an_unknown_scenario_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no scenario 'nope' in .*known: demo, faults"):
        find_scenario("nope")
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such scenario file"):
        find_scenario(str(tmp_path / "missing.yaml"))
    empty = write(tmp_path, "description: nothing\n")
    with pytest.raises(ConfigError, match="analyzers: missing: at least one analyzer"):
        load_scenario(str(empty))


# -- what the simulators send ------------------------------------------------------------------


def test_roche_tsreq_host_query_puts_the_sample_third_in_q3() -> None:
    assert host_query_records("c311", ["CL-1"], "roche-tsreq") == [
        b"H|\\^&|||c311^1|||||host|TSREQ^REAL|P|1",
        b"Q|1|^^CL-1||ALL||||||||O",
        b"L|1|N",
    ]
    with pytest.raises(LocalProtocolError, match="query form 'tsreq'"):
        host_query_records("c311", ["CL-1"], "tsreq")


@pytest.mark.parametrize("kind", ["ORM", "OML"])
def test_order_messages_are_read_by_the_gateways_order_reader(kind: str) -> None:
    message = order_message("P0001", "S-1", ["GLU", "NA"], kind=kind)
    (order,) = parse_orders(message, V251)
    assert (order.control, order.placer, order.sample_id) == ("new", "P0001", "S-1")
    assert [t.his_code for t in order.tests] == ["GLU", "NA"]
    assert order.patient_name.startswith("DEMO^")  # invented


def test_order_message_refuses_delimiters_and_empty_orders() -> None:
    for sample, codes in (("S|1", ["GLU"]), ("S1", []), ("S1", ["G^LU"])):
        with pytest.raises(LocalProtocolError):
            order_message("P1", sample, codes)


def test_download_summary_reads_specimens_and_tests_with_the_h_delimiters() -> None:
    records = (
        b"H|\\^&|||host^1|||||c311|TSDWN^REPLY|P|1",
        b"P|1||PAT1||DEMO^NAME",
        b"O|1|CL-1||^^^685/\\^^^687/|R",
        b"O|2|   27^^|0^50011|^^^^WBC|R",
        b"L|1|N",
    )
    assert download_summary(records) == (["CL-1", "27"], ["685/", "687/", "WBC"])
    backtick = (b"H|`^&", b"O|1|X1||^^^A`^^^B", b"L|1")
    assert download_summary(backtick) == (["X1"], ["A", "B"])
