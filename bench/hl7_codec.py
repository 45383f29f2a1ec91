"""Benchmark: the fast HL7 codec (lisgw.hl7.message / build) against hl7apy.

The message is an ORU^R01 v2.5.1 with 40 OBX (30 numeric, 10 text values with every kind of
escape), as lisgw.hl7.build writes it. Figures, messages per second on one core:

* fast parse: ``parse_message`` plus reading seven fields of every OBX (the parser is lazy, so
  a parse alone would flatter it); hl7apy parse: ``parse_message`` (tolerant, groups found);
* fast build: ``build_oru_r01``; hl7apy build: the same message through hl7apy's element API
  and ``to_er7`` (byte for byte the same text, checked by the tests).

Run from the repository root: ``.venv/bin/python -m bench.hl7_codec [seconds]``.
``run(seconds)`` returns the figures for bench/decode.py.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message as apy_parse_message
from hl7apy.v2_5_1 import ST

from lisgw.hl7.build import Hl7Header, OruObservation, OruOrder, OruPatient, build_oru_r01
from lisgw.hl7.message import parse_message

OBX_COUNT = 40
HEADER = Hl7Header(
    control_id="BENCH-0001",
    timestamp="20240924181947",
    sending_application="LISGW",
    receiving_application="HIS",
    receiving_facility="LAB^1",
)
PATIENT = OruPatient("P-000071", "TESTONE", "PATIENT^A", "19800101", "F", "HOSP", "MR")
ORDER = OruOrder(
    "S-000123",
    "CBC",
    "Complete blood count & diff",
    placer_order_number="ORD|42",
    observation_time="20240920135955",
    specimen_type="BLD",
)


def sample_observations(count: int = OBX_COUNT) -> list[OruObservation]:
    """``count`` results: three in four numeric, the rest text with escapes."""
    observations = []
    for i in range(count):
        text = i % 4 == 3
        observations.append(
            OruObservation(
                code=f"{1000 + i}-{i % 10}",
                name=f"Analyte {i} & co^x" if text else f"Analyte {i}",
                coding_system="LN",
                value=f"pos|neg~{i} \\ see note" if text else f"{i * 1.37:.2f}",
                units="" if text else "10*3/uL",
                reference_range="" if text else "1.00-9.99",
                abnormal_flags=("A",) if text else ("H", "N"),
                observation_time="20240920135955",
                equipment_id="SN-5130-77",
                equipment_namespace="BC-5130",
            )
        )
    return observations


OBSERVATIONS = sample_observations()


def fast_build() -> bytes:
    return build_oru_r01(HEADER, PATIENT, ORDER, OBSERVATIONS)


SAMPLE = fast_build()
SAMPLE_ER7 = SAMPLE.decode("utf-8").rstrip("\r")


def fast_parse() -> int:
    message = parse_message(SAMPLE)
    seen = 0
    for obx in message.segments("OBX"):
        for field, component in ((3, 1), (3, 2), (5, 1), (6, 1), (7, 1), (8, 1), (11, 1)):
            seen += len(obx.get(field, component))
    return seen


def apy_parse() -> Any:
    return apy_parse_message(SAMPLE_ER7, validation_level=VALIDATION_LEVEL.TOLERANT)


def apy_build() -> str:
    """The same ORU^R01 through hl7apy's element API (escaping by hl7apy's ST)."""
    msg = Message("ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = msg.msh
    msh.msh_3 = HEADER.sending_application
    msh.msh_5 = HEADER.receiving_application
    msh.msh_6 = ST(HEADER.receiving_facility).to_er7()
    msh.msh_7 = HEADER.timestamp
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = HEADER.control_id
    msh.msh_11 = "P"
    msh.msh_12 = "2.5.1"
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    pid = result.add_group("ORU_R01_PATIENT").add_segment("PID")
    pid.pid_1 = "1"
    pid.pid_3 = f"{PATIENT.patient_id}^^^{PATIENT.id_authority}^{PATIENT.id_type}"
    pid.pid_5.xpn_1.fn_1 = ST(PATIENT.family_name)
    pid.pid_5.xpn_2 = ST(PATIENT.given_name)
    pid.pid_7 = PATIENT.birth_date
    pid.pid_8 = PATIENT.sex
    group = result.add_group("ORU_R01_ORDER_OBSERVATION")
    orc = group.add_segment("ORC")
    orc.orc_1 = "RE"
    orc.orc_2 = ST(ORDER.placer_order_number).to_er7()
    orc.orc_3 = ORDER.specimen_id
    obr = group.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = ST(ORDER.placer_order_number).to_er7()
    obr.obr_3 = ORDER.specimen_id
    obr.obr_4.ce_1 = ST(ORDER.test_code)
    obr.obr_4.ce_2 = ST(ORDER.test_name)
    obr.obr_4.ce_3 = ORDER.coding_system
    obr.obr_7 = ORDER.observation_time
    obr.obr_25 = ORDER.result_status
    for index, obs in enumerate(OBSERVATIONS, 1):
        _apy_obx(group.add_group("ORU_R01_OBSERVATION").add_segment("OBX"), index, obs)
    spm = group.add_group("ORU_R01_SPECIMEN").add_segment("SPM")
    spm.spm_1 = "1"
    spm.spm_2 = ORDER.specimen_id
    spm.spm_4 = ORDER.specimen_type
    text: str = msg.to_er7()
    return text


def _apy_obx(obx: Any, index: int, obs: OruObservation) -> None:
    obx.obx_1 = str(index)
    obx.obx_2 = "ST" if obs.units == "" else "NM"
    obx.obx_3.ce_1 = ST(obs.code)
    obx.obx_3.ce_2 = ST(obs.name)
    obx.obx_3.ce_3 = obs.coding_system
    obx.obx_5 = ST(obs.value).to_er7()
    if obs.units:
        obx.obx_6.ce_1 = ST(obs.units)
    if obs.reference_range:
        obx.obx_7 = ST(obs.reference_range).to_er7()
    for flag in obs.abnormal_flags:
        obx.add_field("OBX_8").value = flag
    obx.obx_11 = obs.result_status
    obx.obx_14 = obs.observation_time
    obx.obx_18 = f"{obs.equipment_id}^{obs.equipment_namespace}"


def rate(func: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``func`` over about ``seconds`` (at least 3 calls)."""
    func()  # warm caches and lazy imports
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while calls < 3 or time.perf_counter() < deadline:
        func()
        calls += 1
    return calls / (time.perf_counter() - start)


def run(seconds: float = 8.0) -> dict[str, float]:
    """The six figures, spending about ``seconds`` in total."""
    share = seconds / 4
    figures = {
        "fast_parse_per_s": rate(fast_parse, share),
        "hl7apy_parse_per_s": rate(apy_parse, share),
        "fast_build_per_s": rate(fast_build, share),
        "hl7apy_build_per_s": rate(apy_build, share),
    }
    figures["parse_ratio"] = figures["fast_parse_per_s"] / figures["hl7apy_parse_per_s"]
    figures["build_ratio"] = figures["fast_build_per_s"] / figures["hl7apy_build_per_s"]
    return figures


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}")
    print(f"python:  {platform.python_implementation()} {platform.python_version()}")
    print(f"cpus:    {os.cpu_count()}")
    print(f"message: ORU^R01 v2.5.1, {OBX_COUNT} OBX, {len(SAMPLE)} bytes")
    for name, value in run(seconds).items():
        unit = "x" if name.endswith("ratio") else " msgs/s"
        print(f"{name:20} {value:10.1f}{unit}")


if __name__ == "__main__":
    main()
