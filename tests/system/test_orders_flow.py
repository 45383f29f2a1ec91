"""Orders out, end to end: ``lisgw run`` as a subprocess, the HIS and the analyzer simulated.

The HIS simulator (lisgw.sim.his) sends an order over MLLP; the analyzer simulator
(lisgw.sim.analyzer, the XN-550 on the ``sysmex-xn`` driver) gets it by batch download
(``orders: batch``) or by asking for it (``orders: query``, an E1394 Q record), then reports
results for the sample, and the results reach the HIS as ORU^R01, linked to the order. Runs
on SQLite and on PostgreSQL. The order, the patient and the values are invented; the result
records follow the shape of the corpus capture astm/sysmex_xn550/sysmex_xn550_cbc_results.bin.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from twisted.trial import unittest

from lisgw.his.ack import read_ack
from lisgw.hl7.message import parse_message
from lisgw.sim.his import order_message
from tests.system.conftest import (
    ResendingAnalyzer,
    free_port,
    query_store,
    send_to_gateway,
    start_gateway,
    start_his,
    store_url_of,
    within,
    workdir_and_store,
    write_config,
)

SAMPLE = "S-4711"
RESULTS = [
    b"H|\\^&|||XN-550^00-24^22723^^^^BD634545||||||||E1394-97",
    b"P|1",
    b"O|1||^^" + SAMPLE.encode() + b"^B|^^^^WBC\\^^^^HGB|||||||N",
    b"R|1|^^^^WBC^1|8.13|10*3/uL||N||F||||20240627135407",
    b"R|2|^^^^HGB^1|13.1|g/dL||N||F||||20240627135407",
    b"L|1|N",
]


def set_order_mode(config: Path, mode: str) -> None:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["connections"][0]["orders"] = mode
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


class _OrdersFlow:
    backend = "sqlite"
    timeout = 120

    async def flow(self, mode: str) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        workdir, store_url = workdir_and_store(case, self.backend)
        his, his_port = await start_his(case)
        orders_port, analyzer_port = free_port(), free_port()
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=orders_port,
            analyzer_port=analyzer_port,
            store_url=store_url,
        )
        set_order_mode(config, mode)
        gateway = await start_gateway(case, config, workdir)

        order = order_message("ORD-71", SAMPLE, ["HEM-WBC", "HEM-HGB"])
        ack = read_ack(await send_to_gateway(orders_port, order))
        assert ack.code == "AA", gateway.log_tail()

        analyzer = ResendingAnalyzer(analyzer_port, name="XN-550")
        await analyzer.connect()
        if mode == "query":
            asked = await analyzer.simulator.send_host_query([SAMPLE, "NO-SUCH-TUBE"])
            assert asked.delivered, gateway.log_tail()
        download = await within(analyzer.simulator.next_download(), 30, "the orders")
        orders = [r for r in download if r.startswith(b"O|")]
        assert orders[0].startswith(b"O|1|" + SAMPLE.encode() + b"||^^^^WBC\\^^^^HGB|R|")
        if mode == "query":
            assert orders[1] == b"O|2|NO-SUCH-TUBE|||||||||||||||||||||||Y"
        else:
            assert len(orders) == 1

        await within(analyzer.send(0, RESULTS), 30, "the results to be acknowledged")
        await within(his.wait_for(1), 30, "the ORU^R01 at the HIS")
        oru = parse_message(his.received[0].payload)
        obr = oru.segment("OBR")
        assert obr is not None and (obr.get(2), obr.get(3)) == ("ORD-71", SAMPLE)
        values = {obx.get(3): obx.get(5) for obx in oru.segments("OBX")}
        assert values == {"HEM-WBC": "8.13", "HEM-HGB": "13.1"}
        await analyzer.close()
        assert await gateway.terminate() == 0, gateway.log_tail()

        url = store_url_of(workdir.path, store_url)
        queue = query_store(url, "SELECT analyzer_code, state FROM order_queue ORDER BY id")
        assert queue == [("WBC", "sent"), ("HGB", "sent")]
        kind = "query_reply" if mode == "query" else "orders"
        sent = query_store(
            url, f"SELECT count(*) FROM messages WHERE kind = '{kind}' AND direction = 'out'"
        )
        assert sent == [(1,)]
        assert "PATIENTORD-71" not in gateway.log_text()

    async def test_orders_by_batch_download(self) -> None:
        await self.flow("batch")

    async def test_orders_by_host_query(self) -> None:
        await self.flow("query")


class TestOrdersFlowOnSqlite(_OrdersFlow, unittest.TestCase):
    backend = "sqlite"


class TestOrdersFlowOnPostgres(_OrdersFlow, unittest.TestCase):
    backend = "postgresql"
