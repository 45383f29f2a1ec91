"""The runner: one transaction per unit of work, inline or on a thread pool; clear errors."""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from twisted.python.threadpool import ThreadPool

from lisgw.errors import ConfigError, StoreError
from lisgw.store import records, work
from lisgw.store.database import default_url, make_engine
from lisgw.store.runner import Store
from lisgw.store.schema import audit

from .factories import NOW


class InlineReactor:
    """callFromThread runs at once: enough for deferToThreadPool in a test with no reactor."""

    def callFromThread(self, f: Callable[..., object], *args: object, **kwargs: object) -> None:
        f(*args, **kwargs)


class InlinePool(ThreadPool):
    """A thread pool that runs every call inline (buildbot's NonThreadPool)."""

    def callInThreadWithCallback(  # type: ignore[override]
        self,
        onResult: Callable[[bool, Any], object],
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        try:
            result = func(*args, **kw)
        except Exception as error:
            onResult(False, error)
        else:
            onResult(True, result)


def _audit_count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one())


def _add_then_fail(conn: sa.Connection, error: Exception) -> None:
    work.add_audit(conn, actor="t", action="a", entity="e", entity_id=1, now=NOW)
    raise error


def test_run_sync_commits(store: Store) -> None:
    store.run_sync(work.add_audit, actor="t", action="a", entity="e", entity_id=1, now=NOW)
    assert store.run_sync(_audit_count) == 1


def test_a_failing_unit_commits_nothing(store: Store) -> None:
    with pytest.raises(ConfigError):
        store.run_sync(_add_then_fail, ConfigError(["lisgw errors pass as they are"]))
    assert store.run_sync(_audit_count) == 0


def test_database_errors_become_store_errors(store: Store) -> None:
    with pytest.raises(StoreError, match=store.engine.dialect.name):
        store.run_sync(lambda conn: conn.exec_driver_sql("SELECT * FROM no_such_table").all())


def test_run_returns_a_deferred_with_the_result(store: Store) -> None:
    pool = InlinePool()
    runner = Store(store.engine, reactor=InlineReactor(), threadpool=pool)  # type: ignore[arg-type]
    results: list[object] = []
    runner.run(work.add_audit, actor="t", action="a", entity="e", entity_id=7, now=NOW).addCallback(
        results.append
    )
    (record,) = results
    assert isinstance(record, records.AuditRecord) and record.entity_id == "7"
    failures: list[Any] = []
    runner.run(_add_then_fail, ConfigError(["boom"])).addErrback(failures.append)
    (failure,) = failures
    assert failure.check(ConfigError)
    assert store.run_sync(_audit_count) == 1


def test_run_uses_its_own_thread_pool(tmp_path: Path) -> None:
    store = Store(make_engine(default_url(tmp_path)), reactor=InlineReactor())  # type: ignore[arg-type]
    done = threading.Event()
    threads: list[str] = []
    try:
        deferred = store.run(lambda conn: threading.current_thread().name)
        deferred.addCallback(threads.append).addBoth(lambda _: done.set())
        assert done.wait(timeout=30)
    finally:
        store.close()
    assert threads and threads[0] != threading.current_thread().name
    assert store._threadpool is not None and not store._threadpool.started


def test_default_thread_counts(engine: sa.Engine) -> None:
    store = Store(engine)
    assert store._max_threads == (1 if engine.dialect.name == "sqlite" else 9)


def test_every_record_is_a_frozen_dataclass() -> None:
    for name in records.__all__:
        kind = getattr(records, name)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            continue
        assert dataclasses.is_dataclass(kind), name
        assert vars(kind)["__dataclass_params__"].frozen, name
        assert hasattr(kind, "__slots__"), name
