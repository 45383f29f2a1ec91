"""``lisgw results list|show``: the results the analyzers sent, and whether the HIS has them.

Layer: interface. Reads the daemon's store (lisgw.cli.storeopt) through lisgw.store.views
(``list_results``, ``get_result``). ``--state`` filters on the delivery: the state of the
outbox row that carries the result to the HIS (pending, inflight, delivered, dead), or
``none`` for results that go nowhere (QC, unmatched, duplicates).
"""

from __future__ import annotations

from pathlib import Path

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
    when,
)
from lisgw.cli.storeopt import store_options
from lisgw.store.records import OutboxState
from lisgw.store.result_views import get_result, list_results

_MATCHES = ("matched", "qc", "unmatched", "duplicate", "extra")
_DELIVERY = (*(str(s) for s in OutboxState), "none")


@click.group()
def results() -> None:
    """Results from the analyzers: list them, or show one with its delivery.

    \b
    Examples:
      lisgw results list --since 1h
      lisgw results list --sample 12345
      lisgw results list --state dead
      lisgw results show 4711
    """


@results.command("list")
@store_options
@filter_options(state_help=f"Only results whose delivery is {', '.join(_DELIVERY)}.")
@click.option("--match", type=click.Choice(_MATCHES), help="Only results routed this way.")
@format_option
def list_command(
    store_url: str | None,
    config_path: Path | None,
    filters: ListFilters,
    match: str | None,
    output: str,
) -> None:
    """Results, newest first.

    \b
    Examples:
      lisgw results list
      lisgw results list --analyzer xn-1 --since 08:00
      lisgw results list --match unmatched --format json
      lisgw results list --state pending       # not at the HIS yet
    """
    state, now = filters.state, filters.now
    if state is not None and state not in _DELIVERY:
        raise click.BadParameter(
            f"{state!r}: use one of {', '.join(_DELIVERY)}", param_hint="--state"
        )
    with cli_store(store_url, config_path) as store:
        found = store.run_sync(
            list_results,
            analyzer=filters.analyzer,
            sample_id=filters.sample_id,
            match=match,
            delivery=state,
            window=filters.window,
            limit=filters.limit,
        )
    if output == "json":
        emit_json(found)
        return
    rows = [
        (
            r.id,
            when(r.created_at, now),
            r.connection,
            r.sample_id,
            r.test,
            f"{r.value} {r.units}".strip(),
            r.match,
            r.delivery or "-",
        )
        for r in found
    ]
    headers = ("ID", "TIME", "ANALYZER", "SAMPLE", "TEST", "VALUE", "MATCH", "HIS")
    echo_table(headers, rows, (7, 11, 10, 14, 8, 14, 9, 9), "no results match")


@results.command("show")
@click.argument("result_id", type=int)
@store_options
@format_option
def show_command(
    result_id: int, store_url: str | None, config_path: Path | None, output: str
) -> None:
    """One result: values, routing, delivery to the HIS, review.

    \b
    Examples:
      lisgw results show 4711
      lisgw results show 4711 --format json
    """
    with cli_store(store_url, config_path) as store:
        found = store.run_sync(get_result, result_id)
    if found is None:
        raise fail(f"no result {result_id} (see `lisgw results list`)")
    view, document = found
    if output == "json":
        emit_json({**as_json(view), "result": document})
        return
    click.echo(f"Result {view.id}: {view.test} = {view.value} {view.units}".rstrip())
    flags = f"; flags {view.flags}" if view.flags else ""
    lines = [
        ("analyzer", f"{view.connection} ({view.driver or 'auto'}), message {view.message_id}"),
        ("sample", view.sample_id + (" (QC)" if view.qc else "")),
        ("HIS code", f"{view.his_code or '-'}  LOINC {view.loinc or '-'}"),
        ("range", f"{view.reference_range or '-'}{flags}; status {view.status or '-'}"),
        ("completed", view.completed_at or "-"),
        ("stored", full_time(view.created_at)),
        ("routing", f"{view.match}" + (f": {view.reason}" if view.reason else "")),
        ("order", view.order_placer or "-"),
    ]
    if view.correction:
        lines.append(("correction", "yes"))
    if view.outbox_id is not None:
        delivered = f" at {full_time(view.delivered_at)}" if view.delivered_at else ""
        lines.append(("HIS", f"outbox {view.outbox_id}: {view.delivery}{delivered}"))
    else:
        lines.append(("HIS", "not delivered (nothing to deliver for this routing)"))
    if view.review_id is not None:
        lines.append(("review", f"item {view.review_id}: {view.review_state}"))
    for label, text in lines:
        click.echo(f"  {label:<11}{text}")
