"""The shipped analyzer profiles (drivers/*.yaml) against the corpus they were written from.

Every corpus capture must be auto-detected as its family's profile, no vendor profile may
claim another family's capture, an unseen analyzer must fall back to the generic drivers, and
decoding each capture with its detected profile must give the hand-written goldens in
tests/data/expected/ with the true sample IDs (no generic fallback accepted). The synthetic
messages below are made up for these tests; every other input is a corpus capture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lisgw.astm.message import MessageAssembler
from lisgw.cli import main
from lisgw.decode import DecodeOptions, decode_capture
from lisgw.drivers import BUILTIN_DIRS, Catalogue, CompiledProfile, default_catalogue
from lisgw.drivers.catalogue import yaml_files
from lisgw.hl7.message import parse_message
from lisgw.model import Kind, NormalizedMessage, Protocol
from tests.conftest import CORPUS_DIR, REPO_ROOT, corpus_manifest
from tests.unit.test_decode_corpus import _message_view, expected_for

CORPUS_FILES = sorted(entry["path"] for entry in corpus_manifest())
GENERIC = ("astm-generic", "hl7-generic")

# Corpus capture → the driver auto-detection must choose for it.
DETECTION = {
    "astm/abbott_afinion2/abbott_afinion2_hba1c_result.bin": "abbott-afinion",
    "astm/abbott_architect_i1000sr/abbott_architect_i1000sr_multi_message_serology_results.bin": (
        "abbott-architect"
    ),
    "astm/beckman_access2/beckman_access2_pct_result_with_comment.bin": "beckman-access",
    "astm/biorad_ih1000/biorad_ih1000_ihcom52_bloodgroup_multi_patient.bin": "biorad-ih",
    "astm/cepheid_genexpert/cepheid_genexpert_mtb_rif_astm_results.bin": "cepheid-genexpert-astm",
    "astm/erba_em200/erba_em200_host_query.bin": "erba-em",
    "astm/erba_em200/erba_em200_results_two_sessions.bin": "erba-em",
    "astm/erba_xl1000/erba_xl1000_result_backtick_repeat_delim.bin": "erba-em",
    "astm/euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin": (
        "euroimmun-analyzer"
    ),
    "astm/horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin": "horiba-pentra",
    "astm/immucor_galileo_echo/immucor_galileo_echo_crossmatch_order.bin": "immucor-galileo",
    "astm/ortho_vitros_3600/ortho_vitros_3600_LIS_order_reply_to_query_single_frame.bin": (
        "ortho-vitros"
    ),
    "astm/ortho_vitros_3600/ortho_vitros_3600_host_query_Q_record.bin": "ortho-vitros",
    "astm/ortho_vitros_3600/ortho_vitros_3600_tsh_result_serum_indices.bin": "ortho-vitros",
    "astm/roche_cobas_c111/roche_cobas_c111_multi_result_ETB_frames.bin": "roche-cobas-c111",
    "astm/roche_cobas_c111/roche_cobas_c111_result_with_M_record.bin": "roche-cobas-c111",
    "astm/roche_cobas_c311/roche_cobas_c311_H7600_batch_frame_split_midrecord.bin": (
        "roche-cobas-c311"
    ),
    "astm/roche_cobas_c311/roche_cobas_c311_chemistry_results.bin": "roche-cobas-c311",
    "astm/roche_cobas_e411/roche_cobas_e411_host_query_TSREQ.bin": "roche-cobas-e411",
    "astm/roche_cobas_e411/roche_cobas_e411_multi_frame_results.bin": "roche-cobas-e411",
    "astm/roche_cobas_e411/roche_cobas_e411_result_fragmented_reads.bin": "roche-cobas-e411",
    "astm/stago_sta_satellite_max/stago_sta_satellite_max_coag_results.bin": "stago-sta",
    "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin": "sysmex-xn",
    "astm/sysmex_xn550/sysmex_xn550_qc_results_framed.bin": "sysmex-xn",
    "astm/sysmex_xp100/sysmex_xp100_cbc_results.bin": "sysmex-xp",
    "hl7/cepheid_genexpert/cepheid_genexpert_hl7_oru_r30_ctng_results.bin": (
        "cepheid-genexpert-hl7"
    ),
    "hl7/cepheid_genexpert/cepheid_genexpert_hl7_qbp_z03_host_query.bin": "cepheid-genexpert-hl7",
    "hl7/cepheid_genexpert/cepheid_genexpert_hl7_qcn_j01_query_cancel.bin": (
        "cepheid-genexpert-hl7"
    ),
    "hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin": "mindray-bc",
    "hl7/siemens_clinitek_status/siemens_clinitek_status_hl7_oru_r01.bin": "siemens-clinitek",
    "hl7/snibe_maglumi/snibe_maglumi_hl7_oul_r22_batch.bin": "snibe-maglumi",
    "other/biomerieux_mini_vidas/biomerieux_mini_vidas_proprietary_result.bin": (
        "biomerieux-vidas"
    ),
}

# Profiles that make up one analyzer family: the cobas fallback and its models. A family's
# profiles may all match its captures; a profile of another family must not.
FAMILY_OF = {
    "roche-cobas": "roche-cobas",
    "roche-cobas-c111": "roche-cobas",
    "roche-cobas-c311": "roche-cobas",
    "roche-cobas-e411": "roche-cobas",
}

# An analyzer no profile knows (made up for this test): sender, header form and test codes
# that appear in no capture.
UNSEEN_ASTM = (
    b"H|\\^&|||NovaLab 9000^2.1^NL123|||||||P|1|20240101120000\r"
    b"P|1\r"
    b"O|1|NL-0001||^^^GLU|R\r"
    b"R|1|^^^GLU|5.4|mmol/L||N||F||||20240101115900\r"
    b"L|1|N\r"
)
UNSEEN_HL7 = (
    b"\x0bMSH|^~\\&|NovaLab 9000||LIS||20240101120000||ORU^R01|42|P|2.5\r"
    b"PID|1||P1\r"
    b"OBR|1||NL-0002|GLU\r"
    b"OBX|1|NM|GLU^Glucose||5.4|mmol/L|3.9-6.1|N|||F\r"
    b"\x1c\r"
)
# Erba header form, one Q asking for two tubes (repeat delimiter: backtick).
ERBA_TWO_TUBES = (
    b"H|`^&||||||||||P|E 1394-97|20240101120000\rQ|1|^TUBE-A`^TUBE-B|||S|||||||O\rL|1|N\r"
)


def shipped_profiles() -> list[Path]:
    """The vendor profiles this test module covers: drivers/*.yaml minus the generic roots."""
    return [
        path for path in sorted((REPO_ROOT / "drivers").glob("*.yaml")) if path.stem not in GENERIC
    ]


def family(driver: str) -> str:
    return FAMILY_OF.get(driver, driver)


def decode(corpus_path: str, catalogue: Catalogue | None = None) -> list[NormalizedMessage]:
    return decode_capture((CORPUS_DIR / corpus_path).read_bytes(), catalogue=catalogue)


def strict_view(message: NormalizedMessage, expected: dict[str, Any]) -> dict[str, Any]:
    """The decoded message in the golden's shape; sample IDs compared as they are."""
    view = _message_view(message.to_json())
    if "query" in view:  # compare the query keys the golden states
        view["query"] = {k: v for k, v in view["query"].items() if k in expected.get("query", {})}
    return view


# Detection ---------------------------------------------------------------------------------


def test_the_detection_table_covers_every_capture_and_every_profile() -> None:
    assert sorted(DETECTION) == CORPUS_FILES
    detected = set(DETECTION.values())
    shipped = {path.stem for path in shipped_profiles()}
    # Every vendor profile is the detected one for some capture, except the cobas fallback,
    # which its model profiles outrank on every cobas capture.
    assert shipped - detected == {"roche-cobas"}
    assert detected <= shipped


@pytest.mark.parametrize("corpus_path", CORPUS_FILES)
def test_every_capture_is_detected_as_its_profile(corpus_path: str) -> None:
    messages = decode(corpus_path)
    assert {m.driver for m in messages} == {f"{DETECTION[corpus_path]}@1"}


def test_detect_on_the_first_decoded_message() -> None:
    """``Catalogue.detect`` itself, on messages built by the codecs (not through decode)."""
    catalogue = default_catalogue()
    assembler = MessageAssembler()
    astm = [m for record in UNSEEN_ASTM.split(b"\r") for m in assembler.feed(record)]
    assert catalogue.detect(astm[0]).name == "astm-generic"
    hl7 = parse_message(UNSEEN_HL7.strip(b"\x0b\x1c\r"))
    assert catalogue.detect(hl7).name == "hl7-generic"
    # The Erba query capture is one frame: STX, frame number, records, ETX.
    frame = (CORPUS_DIR / "astm/erba_em200/erba_em200_host_query.bin").read_bytes()
    text = frame[frame.index(b"\x02") + 2 : frame.index(b"\x03")]
    assembler = MessageAssembler()
    erba = [m for record in text.split(b"\r") for m in assembler.feed(record)]
    assert catalogue.detect(erba[0]).name == "erba-em"


# A regex that matches nothing: an identify key that must match, but never does.
NEVER = "(?!)"


def _catalogue_blind_to(excluded: str, directory: Path) -> Catalogue:
    """The repository's catalogue with one family's detection switched off.

    Its profiles stay (others inherit them: sysmex-xp from sysmex-xn) but each gets an
    identify key that never matches, copied into ``directory``.
    """
    files: list[Path] = []
    for path in yaml_files(BUILTIN_DIRS):
        if path.parent.name == "drivers" and family(path.stem) == excluded:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            data["identify"] = {"content": [NEVER]}
            blind = directory / path.name
            blind.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            files.append(blind)
        else:
            files.append(path)
    return Catalogue.from_files(files)


@pytest.mark.parametrize("excluded", sorted({family(d) for d in DETECTION.values()}))
def test_no_vendor_profile_claims_another_familys_capture(excluded: str, tmp_path: Path) -> None:
    """With a family's detection off, its captures fall back to the generic drivers."""
    catalogue = _catalogue_blind_to(excluded, tmp_path)
    captures = [p for p, driver in DETECTION.items() if family(driver) == excluded]
    assert captures
    for corpus_path in captures:
        drivers = {m.driver for m in decode(corpus_path, catalogue)}
        if corpus_path.startswith("other/"):
            assert drivers == {""}, corpus_path  # not recognised: nothing claims it
        else:
            assert drivers <= {f"{name}@1" for name in GENERIC}, corpus_path


def test_an_unseen_astm_analyzer_gets_the_generic_driver() -> None:
    [message] = decode_capture(UNSEEN_ASTM)
    assert message.driver == "astm-generic@1"
    assert message.kind is Kind.RESULTS
    assert message.specimens[0].sample_id == "NL-0001"
    assert message.specimens[0].results[0].value == "5.4"


def test_an_unseen_hl7_analyzer_gets_the_generic_driver() -> None:
    [message] = decode_capture(UNSEEN_HL7)
    assert message.driver == "hl7-generic@1"
    assert message.specimens[0].sample_id == "NL-0002"
    assert message.specimens[0].results[0].test == "GLU"


# Decoding with the detected profile ---------------------------------------------------------


@pytest.mark.parametrize("corpus_path", CORPUS_FILES)
def test_decode_gives_the_goldens_with_the_true_sample_ids(corpus_path: str) -> None:
    expected = expected_for(corpus_path)
    messages = decode(corpus_path)
    assert [str(m.protocol) for m in messages] == [expected["protocol"]] * len(messages)
    assert len(messages) == len(expected["messages"])
    for index, (got, want) in enumerate(zip(messages, expected["messages"], strict=True)):
        assert strict_view(got, want) == _message_view(want), f"message {index}"
        joined = " ".join(got.warnings).lower().replace("_", " ")
        for fragment in want.get("warnings_expected", []):
            assert fragment.replace("_", " ") in joined, f"message {index}: no {fragment} warning"


GENERIC_RULE_CASES = [
    (path, index, specimen_index, specimen)
    for path in CORPUS_FILES
    for index, message in enumerate(expected_for(path)["messages"])
    for specimen_index, specimen in enumerate(message.get("specimens", []))
    if "sample_id_generic_rule" in specimen
]


@pytest.mark.parametrize(("corpus_path", "index", "specimen_index", "specimen"), GENERIC_RULE_CASES)
def test_the_profile_not_the_generic_rule_finds_the_sample_id(
    corpus_path: str, index: int, specimen_index: int, specimen: dict[str, Any]
) -> None:
    """Where the goldens note what the generic rule gives, the generic driver gives exactly
    that and the detected profile gives the true ID."""
    data = (CORPUS_DIR / corpus_path).read_bytes()
    generic = GENERIC[0] if corpus_path.startswith("astm/") else GENERIC[1]
    pinned = decode_capture(data, DecodeOptions(driver=generic))
    detected = decode_capture(data)
    assert pinned[index].specimens[specimen_index].sample_id == specimen["sample_id_generic_rule"]
    assert detected[index].specimens[specimen_index].sample_id == specimen["sample_id"]
    assert specimen["sample_id"] != specimen["sample_id_generic_rule"]


@pytest.mark.parametrize("corpus_path", CORPUS_FILES)
def test_the_profile_knows_every_test_code_of_its_captures(corpus_path: str) -> None:
    profile = default_catalogue().get(DETECTION[corpus_path])
    seen = {
        result["test"]
        for message in expected_for(corpus_path)["messages"]
        for specimen in message.get("specimens", [])
        for result in specimen.get("results", [])
    } | {
        test
        for message in expected_for(corpus_path)["messages"]
        for specimen in message.get("specimens", [])
        for test in specimen.get("tests", [])
    }
    assert seen <= set(profile.tests)


def test_each_profile_names_the_captures_it_was_written_from() -> None:
    catalogue = default_catalogue()
    for corpus_path, name in DETECTION.items():
        assert corpus_path in catalogue.get(name).sources, name
    for path in shipped_profiles():
        sources = catalogue.get(path.stem).sources
        assert sources, path.name
        assert set(sources) <= set(CORPUS_FILES), path.name


# What the profiles say beyond the goldens ---------------------------------------------------


def profile(name: str) -> CompiledProfile:
    return default_catalogue().get(name)


def test_euroimmun_values_are_read_with_a_decimal_comma() -> None:
    [message] = decode(
        "astm/euroimmun_analyzer_i/euroimmun_analyzer_i_sarscov2_iga_multi_patient_results.bin"
    )
    first, second = message.specimens[0].results[0], message.specimens[1].results[0]
    assert (first.value, first.numeric, first.censor) == (">8", 8.0, ">")
    assert (second.value, second.numeric) == ("7,41", 7.41)


def test_sysmex_qc_is_recognised_by_action_code_and_sample_number() -> None:
    [qc] = decode("astm/sysmex_xn550/sysmex_xn550_qc_results_framed.bin")
    [patient] = decode("astm/sysmex_xn550/sysmex_xn550_cbc_results.bin")
    assert [(s.sample_id, s.qc) for s in qc.specimens] == [("QC-82151403", True)]
    assert [(s.sample_id, s.qc) for s in patient.specimens] == [("27", False)]
    assert profile("sysmex-xp").orders.test_id_template == "^^^^{code}"  # inherited from XN


@pytest.mark.parametrize(
    ("name", "form", "reply", "cancel"),
    [
        ("roche-cobas-e411", "roche-tsreq", "roche-tsdwn", None),
        ("roche-cobas-c311", "roche-tsreq", "roche-tsdwn", None),
        ("ortho-vitros", "vitros", "astm-orders", None),
        ("erba-em", "erba-multi-tube", "astm-orders", None),
        ("cepheid-genexpert-hl7", "hl7-qbp-z03", "hl7-qbp-z03-rsp", "hl7-qcn-j01"),
    ],
)
def test_query_forms_and_replies(name: str, form: str, reply: str, cancel: str | None) -> None:
    query = profile(name).query
    assert (query.form, query.reply, query.cancel) == (form, reply, cancel)


def test_host_queries_name_the_sample_ids_where_each_analyzer_puts_them() -> None:
    cases = {
        "astm/roche_cobas_e411/roche_cobas_e411_host_query_TSREQ.bin": ("0000000387",),
        "astm/ortho_vitros_3600/ortho_vitros_3600_host_query_Q_record.bin": ("1068687",),
        "astm/erba_em200/erba_em200_host_query.bin": ("010520182",),
        "hl7/cepheid_genexpert/cepheid_genexpert_hl7_qbp_z03_host_query.bin": (
            "SpecimenID-DEV01210000000000005",
        ),
    }
    for corpus_path, ids in cases.items():
        [message] = decode(corpus_path)
        assert message.kind is Kind.QUERY
        assert message.query is not None and message.query.sample_ids == ids, corpus_path
    [cancel] = decode("hl7/cepheid_genexpert/cepheid_genexpert_hl7_qcn_j01_query_cancel.bin")
    assert cancel.query is not None
    assert cancel.query.query_tag == "662f165ebb1b4354b100cba090f1e7e5"


def test_an_erba_query_for_several_tubes_names_each_tube() -> None:
    [message] = decode_capture(ERBA_TWO_TUBES)
    assert message.driver == "erba-em@1"
    assert message.query is not None and message.query.sample_ids == ("TUBE-A", "TUBE-B")


def test_vidas_payloads_are_recognised_and_kept_raw() -> None:
    data = (
        CORPUS_DIR / "other/biomerieux_mini_vidas/biomerieux_mini_vidas_proprietary_result.bin"
    ).read_bytes()
    [message] = decode_capture(data)
    vidas = profile("biomerieux-vidas")
    assert (vidas.protocol, vidas.not_mine) == ("other", True)
    assert message.protocol is Protocol.UNKNOWN and message.kind is Kind.UNKNOWN
    assert message.raw == data and message.specimens == ()


def test_status_flag_and_name_readings() -> None:
    [pentra] = decode("astm/horiba_pentra_xlr/horiba_pentra_xlr_cbc_diff_results.bin")
    results = {r.test: r for r in pentra.specimens[0].results}
    assert results["WBC"].status_meaning == "questionable"  # E1394 W
    assert results["BAS#"].status_meaning == "cannot_be_done"
    assert results["BAS#"].flag_meanings == ("critical_high",)
    assert results["RBC"].status_meaning == "final"
    architect = decode(
        "astm/abbott_architect_i1000sr/abbott_architect_i1000sr_multi_message_serology_results.bin"
    )
    assert {r.test_name for r in architect[0].specimens[0].results} == {"Anti-HBcII"}
    [mindray, *_] = decode("hl7/mindray_bc5130/mindray_bc5130_hl7_oru_r01_cbc.bin")
    assert mindray.specimens[0].results[4].test_name == "WBC"


def test_instrument_identity_where_the_header_layout_differs() -> None:
    [access] = decode("astm/beckman_access2/beckman_access2_pct_result_with_comment.bin")
    assert access.instrument is not None
    assert (access.instrument.name, access.instrument.serial) == ("ACCESS", "508178")
    [genexpert] = decode("astm/cepheid_genexpert/cepheid_genexpert_mtb_rif_astm_results.bin")
    assert genexpert.instrument is not None
    assert (genexpert.instrument.name, genexpert.instrument.software) == ("GeneXpert", "4.8")
    [c111] = decode("astm/roche_cobas_c111/roche_cobas_c111_result_with_M_record.bin")
    assert c111.instrument is not None
    assert (c111.instrument.name, c111.instrument.software) == ("c111", "4.2.2.1730")


def test_patient_names_are_sent_in_a_form_each_analyzer_takes() -> None:
    name = "Nguyễn Thị Kim Tiến"
    for path in shipped_profiles():
        driver = profile(path.stem)
        if driver.protocol == "other":
            continue
        sent = driver.outgoing_text(name)
        assert sent.encode(driver.charset.encoding or "utf-8"), path.name
    assert profile("roche-cobas-c311").outgoing_text(name) == "Nguyen Thi Kim Tien"
    assert profile("sysmex-xn").outgoing_text("Müller") == "Mueller"
    assert profile("snibe-maglumi").outgoing_text(name) == name  # UTF-8 analyzer


def test_framed_families_read_e1381_strictly_records_only_families_stay_lenient() -> None:
    """Profiles whose captures are well-formed E1381 frames refuse frames without checksums;
    those known only from de-framed records keep the generic, lenient link."""
    framing = {entry["path"]: entry["framing"] for entry in corpus_manifest()}
    for corpus_path, name in DETECTION.items():
        link = profile(name).link
        if framing[corpus_path] == "astm-frames":
            assert link is not None and not link.lenient, name
        elif framing[corpus_path] == "astm-records":
            assert link is not None and link.lenient, name


# Validation --------------------------------------------------------------------------------


def test_lisgw_drivers_check_accepts_every_shipped_profile() -> None:
    files = [str(path) for path in shipped_profiles()]
    result = CliRunner().invoke(main, ["drivers", "check", *files])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: "), result.output
    assert "problem" not in result.output
