"""``lisgw orders list|show``: the HIS orders the gateway holds, and where each test stands.

Layer: interface. Reads the daemon's store (lisgw.cli.storeopt) through lisgw.store.views
(``list_orders``, ``get_order``). Patient names are masked unless ``--show-patient``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lisgw.cli._view import (
    ListFilters,
    as_json,
    cli_store,
    echo_table,
    emit_json,
    fail,
    filter_options,
    format_option,
    full_time,
    patient,
    patient_option,
    when,
)
from lisgw.cli.storeopt import store_options
from lisgw.store.records import OrderState
from lisgw.store.views import OrderDetail, OrderSummary, get_order, list_orders

_STATES = ", ".join(str(s) for s in OrderState)


@click.group()
def orders() -> None:
    """HIS orders: list them, or show one with its tests and analyzer queue.

    \b
    Examples:
      lisgw orders list --since 2h
      lisgw orders list --analyzer xn-1 --state open
      lisgw orders show ORD-12345
      lisgw orders show ORD-12345 --format json
    """


@orders.command("list")
@store_options
@filter_options(state_help=f"Only orders in this state ({_STATES}).")
@patient_option
@format_option
def list_command(
    store_url: str | None,
    config_path: Path | None,
    filters: ListFilters,
    show_patient: bool,
    output: str,
) -> None:
    """Orders, newest first.

    \b
    Examples:
      lisgw orders list
      lisgw orders list --sample 12345
      lisgw orders list --analyzer c311 --since 2026-01-02 --until 2026-01-03
      lisgw orders list --state partial --format json
    """
    state, now = filters.state, filters.now
    if state is not None and state not in set(OrderState):
        raise click.BadParameter(f"{state!r}: use one of {_STATES}", param_hint="--state")
    with cli_store(store_url, config_path) as store:
        found = store.run_sync(
            list_orders,
            analyzer=filters.analyzer,
            sample_id=filters.sample_id,
            state=state,
            window=filters.window,
            limit=filters.limit,
        )
    if output == "json":
        emit_json([_summary_json(o, show_patient) for o in found])
        return
    rows = [
        (
            o.placer,
            o.sample_id,
            o.state,
            f"{o.resulted}/{o.tests}",
            o.priority,
            when(o.created_at, now),
            patient(o.patient_name, show_patient),
        )
        for o in found
    ]
    headers = ("PLACER", "SAMPLE", "STATE", "DONE", "PRIO", "RECEIVED", "PATIENT")
    echo_table(headers, rows, (16, 16, 9, 5, 4, 11, 20), "no orders match")


@orders.command("show")
@click.argument("placer")
@store_options
@patient_option
@format_option
def show_command(
    placer: str, store_url: str | None, config_path: Path | None, show_patient: bool, output: str
) -> None:
    """One order by placer number (or #ID): its data, tests, and queue per analyzer.

    \b
    Examples:
      lisgw orders show ORD-12345
      lisgw orders show '#42' --show-patient
    """
    with cli_store(store_url, config_path) as store:
        order = store.run_sync(get_order, placer)
    if order is None:
        raise fail(f"no order {placer!r} (placer number, or #ID; see `lisgw orders list`)")
    if output == "json":
        document = _summary_json(order.summary, show_patient)
        document.update(
            filler=order.filler,
            ordered_at=order.ordered_at,
            message_id=order.message_id,
            tests=as_json(order.tests),
        )
        emit_json(document)
        return
    _print_detail(order, show_patient)


def _summary_json(order: OrderSummary, show_patient: bool) -> dict[str, Any]:
    document: dict[str, Any] = as_json(order)
    document["patient_name"] = patient(order.patient_name, show_patient)
    return document


def _print_detail(order: OrderDetail, show_patient: bool) -> None:
    o = order.summary
    click.echo(f"Order {o.placer} (#{o.id}): {o.state}, {o.resulted}/{o.tests} tests resulted")
    click.echo(f"  sample     {o.sample_id}")
    click.echo(f"  patient    {patient(o.patient_name, show_patient)} ({o.patient_id or '-'})")
    click.echo(f"  priority   {o.priority or '-'}; ordered {order.ordered_at or '-'}")
    click.echo(f"  received   {full_time(o.created_at)}; updated {full_time(o.updated_at)}")
    click.echo("")
    rows: list[tuple[object, ...]] = []
    for test in order.tests:
        if not test.queue:
            rows.append((test.his_code, test.state, "-", "-", "-", "-", "no analyzer"))
        for q in test.queue:
            note = q.last_error or (f"retry {when(q.next_attempt_at)}" if q.next_attempt_at else "")
            rows.append(
                (
                    test.his_code,
                    test.state,
                    q.connection,
                    q.state,
                    when(q.sent_at),
                    q.attempts,
                    note,
                )
            )
    headers = ("TEST", "STATE", "ANALYZER", "QUEUE", "SENT", "TRIES", "NOTE")
    echo_table(headers, rows, (12, 9, 12, 9, 11, 5, 30), "  (no tests)")
