"""kill -9 during a replay (issue 5): every fully acknowledged message is delivered exactly once.

The gateway (``lisgw run``, a subprocess) is killed with SIGKILL at random moments (a seeded
``random.Random``, a bounded number of kills) while the analyzer simulator replays many
sessions over ASTM E1381 on TCP, and restarted each time; the replay goes on until the kills
are over and some messages past the last restart (at least ``MIN_MESSAGES``). The simulator
behaves as a real instrument: it reconnects and sends again, from the start, every message
whose transfer was not fully acknowledged. Mixed in, instruments that give up mid-message
(some frames, no L record, no EOT, line cut): their samples must never be reported as results.

At the end, the set of result messages the HIS simulator received (one ORU^R01 per specimen:
OBR-3 the sample, MSH-10 the control ID derived from the results' content identities) is
compared with the set of messages the simulator saw fully acknowledged: the same samples,
each with exactly one control ID (a copy after a kill between the HIS's ACK and its record in
the store comes with the same MSH-10, which the HIS drops: counted, not an error), and no
sample of an abandoned message. The store agrees: one outbox row per sample, all delivered.

The sessions are the Sysmex XN-550 CBC capture (../shared/corpus, read at test time) with
the sample ID replaced by synthetic ones. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from lisgw.hl7.message import parse_message
from lisgw.sim.analyzer import capture_messages
from tests.system.conftest import (
    ResendingAnalyzer,
    corpus_file,
    eventually,
    free_port,
    query_store,
    send_partial,
    sleep,
    start_gateway,
    start_his,
    store_url_of,
    within,
    workdir_and_store,
    write_config,
)

CAPTURE = "astm/sysmex_xn550/sysmex_xn550_cbc_results.bin"
SEED = 20260105
KILLS = 5
MIN_MESSAGES = 150  # the replay goes on at least this long, and past the last restart …
TAIL_MESSAGES = 20  # … by this many messages
PARTIAL_EVERY = 10  # about one abandoned message in this many


def with_sample(message: Sequence[bytes], sample_id: str) -> tuple[bytes, ...]:
    """The message with O.3.3 (the XN-550's sample ID component) set to ``sample_id``."""
    out = []
    for record in message:
        if record.startswith(b"O|"):
            fields = record.split(b"|")
            components = fields[3].split(b"^")
            components[2] = sample_id.encode("ascii").rjust(22)
            fields[3] = b"^".join(components)
            record = b"|".join(fields)
        out.append(record)
    return tuple(out)


class _Kill9:
    backend = "sqlite"
    timeout = 150

    async def test_every_acked_message_is_delivered_exactly_once(self) -> None:
        case: unittest.TestCase = self  # type: ignore[assignment]
        rng = random.Random(SEED)
        workdir, store_url = workdir_and_store(case, self.backend)
        his, his_port = await start_his(case)
        analyzer_port = free_port()
        config = write_config(
            workdir.path,
            his_results_port=his_port,
            his_orders_port=free_port(),
            analyzer_port=analyzer_port,
            store_url=store_url,
            send_unsolicited=True,  # no orders: every patient result goes to the HIS
        )
        gateway = await start_gateway(case, config, workdir)

        template = capture_messages(corpus_file(CAPTURE))[0]
        analyzer = ResendingAnalyzer(analyzer_port, name="XN-550")
        stop_at = [1 << 30]  # set once the kills are over
        abandoned: list[str] = []

        async def replay() -> int:
            """Send messages K0000, K0001 … (abandoned ones P0000 … among them) until
            ``stop_at``; how many full messages were sent."""
            index = 0
            while index < stop_at[0]:
                if rng.randrange(PARTIAL_EVERY) == 0:
                    sample = f"P{len(abandoned):04d}"
                    abandoned.append(sample)
                    records = with_sample(template, sample)[:-1]  # no L record
                    await send_partial(analyzer_port, records, rng.randint(1, 6))
                await analyzer.send(index, with_sample(template, f"K{index:04d}"))
                index += 1
            return index

        replaying = Deferred.fromCoroutine(replay())
        for _ in range(KILLS):
            await sleep(rng.uniform(0.05, 0.6))
            assert not replaying.called, "the replay stopped while the gateway was killed"
            await gateway.kill9()
            await gateway.start_and_wait_ready()
        stop_at[0] = max(MIN_MESSAGES, len(analyzer.acked) + TAIL_MESSAGES)
        sent: int = await within(replaying, 60, "the replay to finish")
        await analyzer.close()
        assert sorted(analyzer.acked) == list(range(sent))
        assert abandoned, "no abandoned message in the replay: change the seed"

        expected = {f"K{index:04d}" for index in range(sent)}
        await eventually(
            lambda: {sample_of(r.payload) for r in his.received} >= expected,
            30,
            "every acknowledged message at the HIS",
        )
        assert await gateway.terminate() == 0, gateway.log_tail()

        control_ids: dict[str, set[str]] = defaultdict(set)
        for received in his.received:
            control_ids[sample_of(received.payload)].add(received.control_id)
        assert set(control_ids) == expected, set(control_ids) ^ expected
        twice = {sample: ids for sample, ids in control_ids.items() if len(ids) != 1}
        assert not twice, f"delivered with different content: {twice}"
        copies = len(his.received) - len(expected)
        print(
            f"kill -9 x{KILLS}: {sent} messages, {analyzer.attempts} transfers sent, "
            f"{len(abandoned)} abandoned, "
            f"{len(his.received)} ORU received ({copies} same-MSH-10 copies), "
            f"exit codes {gateway.exit_codes}"
        )
        for line in gateway.log_text().splitlines():
            if "recovery:" in line:
                print(line)

        url = store_url_of(workdir.path, store_url)
        rows = query_store(url, "SELECT sample_id, state FROM outbox ORDER BY sample_id")
        assert rows == [(sample, "delivered") for sample in sorted(expected)]
        leaked = query_store(url, "SELECT count(*) FROM results WHERE sample_id LIKE 'P%'")
        assert leaked == [(0,)], "results from messages whose L frame was never ACKed"
        assert gateway.exit_codes[:KILLS] == [None] * KILLS  # killed by SIGKILL
        assert gateway.exit_codes[-1] == 0


def sample_of(payload: bytes) -> str:
    """OBR-3 of a result message: the specimen (lisgw.his.results)."""
    obr = parse_message(payload).segment("OBR")
    return obr.get(3) if obr is not None else ""


class TestKill9OnSqlite(_Kill9, unittest.TestCase):
    backend = "sqlite"


class TestKill9OnPostgresql(_Kill9, unittest.TestCase):
    backend = "postgresql"
