"""A second gateway process, for the shared-outbox test: one OutboxDispatcher, run to the end.

Usage: python -m tests.system.outbox_worker STORE_URL HIS_PORT WORKER START_AT
Waits until START_AT (epoch seconds) so that both processes begin together, then claims and
delivers until two passes in a row find nothing, and prints one JSON line with its counts.
"""

from __future__ import annotations

import json
import sys
import time

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime

from lisgw.services.outbox import DispatcherSettings, OutboxDispatcher
from lisgw.store.database import make_engine
from lisgw.store.runner import Store
from lisgw.transports.mllp import MllpSettings
from lisgw.transports.tls import client_endpoint


async def _run(reactor: IReactorTCP, url: str, port: int, worker: str, start_at: float) -> None:
    clock: IReactorTime = reactor  # type: ignore[assignment]
    await task.deferLater(clock, max(0.0, start_at - time.time()), lambda: None)
    store = Store(make_engine(url), reactor=reactor)  # type: ignore[arg-type]
    dispatcher = OutboxDispatcher(
        store,
        endpoint=client_endpoint(reactor, host="127.0.0.1", port=port),
        clock=clock,
        settings=DispatcherSettings(
            worker=worker, batch_size=2, ack_timeout=10.0, mllp=MllpSettings(idle_timeout=None)
        ),
    )
    claimed = delivered = empty = 0
    while empty < 2:
        report = await dispatcher.run_once()
        claimed += report.claimed
        delivered += report.delivered
        empty = 0 if report.claimed else empty + 1
    await dispatcher.stopService()
    store.close()
    print(json.dumps({"worker": worker, "claimed": claimed, "delivered": delivered}))


def main() -> None:
    url, port, worker, start_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])

    def run(reactor: IReactorCore) -> defer.Deferred[None]:
        return defer.ensureDeferred(_run(reactor, url, port, worker, start_at))  # type: ignore[arg-type]

    task.react(run)


if __name__ == "__main__":
    main()
