"""What a gateway is built from before its services start: the files its configuration
names, its worker name, the order routes, the store (migrated, connections registered) and
the release of a dead predecessor's outbox claims.

Layer: service. Used by lisgw.services.gateway (``Gateway``, ``serve``) and lisgw.sim.demo;
blocking calls here run before the reactor does.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lisgw.config_schema import ConnectionConfig, GatewayConfig
from lisgw.drivers import Catalogue, default_catalogue
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import ConfigError
from lisgw.his.profile import HisProfile
from lisgw.routing import driver_name
from lisgw.store import migrate, work
from lisgw.store.database import make_engine
from lisgw.store.records import OutboxState, QueueTarget
from lisgw.store.runner import Store
from lisgw.transports.tls import TlsMaterial

__all__ = ["GatewayParts", "open_store", "order_routes", "release_own_claims", "worker_name"]


@dataclass(frozen=True, slots=True)
class GatewayParts:
    """What the configuration names, loaded once: drivers, HIS profile, codes, TLS."""

    catalogue: Catalogue
    his_profile: HisProfile
    test_codes: TestCodeMap | None
    tls: TlsMaterial | None

    @classmethod
    def load(cls, config: GatewayConfig) -> GatewayParts:
        """Load the files ``config`` names (already checked by load_config); ConfigError."""
        catalogue = (
            Catalogue.load(config.drivers_dirs) if config.drivers_dirs else default_catalogue()
        )
        codes = TestCodeMap.load(config.test_codes) if config.test_codes else None
        tls = None
        if config.his.tls is not None:
            if config.his.tls.ca is None:
                raise ConfigError(["his.tls.ca: required (the CA of both HIS link ends)"])
            tls = TlsMaterial.from_files(config.his.tls.ca, config.his.tls.cert, config.his.tls.key)
        return cls(catalogue, HisProfile.load(config.his.profile_path), codes, tls)


def worker_name(config: GatewayConfig) -> str:
    """This gateway's name in outbox claims: the same after a restart, different for another
    gateway process (another host, or another data directory) sharing the store."""
    return f"{socket.gethostname()}:{config.data_dir}"[:120]


def order_routes(
    config: GatewayConfig, codes: TestCodeMap | None
) -> dict[str, tuple[QueueTarget, ...]]:
    """HIS test code → the analyzers that perform it (connections with a pinned driver whose
    codes the mapping table lists), for the order queue."""
    routes: dict[str, list[QueueTarget]] = {}
    if codes is None:
        return {}
    for connection in config.connections:
        if connection.driver is None:
            continue
        name = driver_name(connection.driver)
        for mapped in codes:
            if mapped.driver == name:
                target = QueueTarget(connection.name, mapped.analyzer_code)
                routes.setdefault(mapped.his_code, []).append(target)
    return {code: tuple(targets) for code, targets in routes.items()}


def open_store(config: GatewayConfig, reactor: Any) -> Store:
    """The store, migrated to head, with every configured connection registered (blocking:
    called before the reactor runs). StoreError when the database cannot be used."""
    if config.store_url.startswith("sqlite"):
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(config.store_url)
    migrate.upgrade(engine)
    store = Store(engine, reactor=reactor)
    store.run_sync(_register_connections, config.connections, reactor.seconds())
    return store


def _register_connections(
    conn: sa.Connection, connections: Sequence[ConnectionConfig], now: float
) -> None:
    for connection in connections:
        work.register_connection(
            conn,
            connection.name,
            driver=connection.driver or "",
            protocol=str(connection.protocol),
            transport=str(connection.transport),
            now=now,
        )


def release_own_claims(conn: sa.Connection, worker: str, now: float) -> int:
    """One unit of work: outbox rows ``worker`` held when it died go back to pending now
    (their lease could last many minutes); returns how many. The HIS may have received
    one of them: it comes again with the same MSH-10, which the HIS can drop."""
    released = 0
    while True:
        rows = [
            row
            for row in work.outbox_rows(conn, state=OutboxState.INFLIGHT, limit=100_000)
            if row.claimed_by == worker
        ]
        if not rows:
            return released
        for row in rows:
            reason = "released: the gateway restarted before the outcome was recorded"
            work.outbox_retry(
                conn, row.id, worker=worker, next_attempt_at=now, error=reason, now=now
            )
        released += len(rows)
