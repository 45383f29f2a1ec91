"""Two gateway processes on one PostgreSQL database deliver each result exactly once (issue 5).

The outbox rows are queued by this test; two separate OS processes (tests/system/
outbox_worker.py) then claim and deliver them at the same time to a HIS simulator running
here. Every control ID must reach the HIS once, both processes must have worked, and each
sample's correction must arrive after its original.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from lisgw.sim.his import HisSimulator
from lisgw.store import migrate, work
from lisgw.store.database import make_engine
from lisgw.store.records import OutboxState
from lisgw.store.runner import Store
from tests.integration.test_outbox import glucose, store_results
from tests.pgschema import fresh_pg_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 80


class SharedOutboxProcessesTest(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.url = fresh_pg_schema(self, "lisgw_procs")
        engine = make_engine(self.url)
        migrate.upgrade(engine)
        self.store = Store(engine, reactor=global_reactor)  # type: ignore[arg-type]
        self.addCleanup(self.store.close)

    async def test_two_processes_deliver_each_result_exactly_once(self) -> None:
        now = time.time()
        corrected = {f"S{n}" for n in range(0, SAMPLES, 4)}
        for n in range(SAMPLES):
            self.store.run_sync(store_results, f"S{n}", [glucose(f"5.{n}")], now)
        for sample in sorted(corrected):
            self.store.run_sync(store_results, sample, [glucose("9.9", status="C")], now)
        his = HisSimulator(global_reactor, clock=Clock())  # type: ignore[arg-type]
        port = await his.start()
        self.addCleanup(his.stop)

        start_at = time.time() + 3.0  # both processes start claiming together
        url = self.url.render_as_string(hide_password=False)
        runs = [
            getProcessOutputAndValue(
                sys.executable,
                ["-m", "tests.system.outbox_worker", url, str(port), worker, str(start_at)],
                env=dict(os.environ),
                path=str(REPO_ROOT),
            )
            for worker in ("gw-1", "gw-2")
        ]
        outputs = await gatherResults(runs)
        counts = {}
        for out, err, code in outputs:
            assert code == 0, err.decode(errors="replace")
            line = json.loads(out.decode().strip().splitlines()[-1])
            counts[line["worker"]] = line

        rows = self.store.run_sync(work.outbox_rows)
        assert len(rows) == SAMPLES + len(corrected)
        assert {r.state for r in rows} == {OutboxState.DELIVERED}
        sent = his.control_ids()
        assert sorted(sent) == sorted(r.control_id for r in rows)  # each exactly once
        assert counts["gw-1"]["delivered"] > 0 and counts["gw-2"]["delivered"] > 0
        assert counts["gw-1"]["delivered"] + counts["gw-2"]["delivered"] == len(rows)
        for sample in corrected:
            original, correction = (r.control_id for r in rows if r.sample_id == sample)
            assert sent.index(original) < sent.index(correction)
