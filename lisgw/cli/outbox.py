"""``lisgw outbox list|retry``: deliveries to the HIS that wait, failed, or died, and pushing
them again.

Layer: interface. Reads and changes the daemon's store (lisgw.cli.storeopt) through
lisgw.store.queues (``list_outbox``, ``retry_outbox``). ``retry`` sends a dead letter again
(pending, attempts reset) or makes a pending row due now; every retry is written to the audit
trail with the technician's name (``--user``, default the login name). The running gateway
picks retried rows up at its next poll. ``--all`` asks for confirmation unless ``--yes``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from lisgw.cli._view import (
    ListFilters,
    actor,
    cli_store,
    echo_table,
    emit_json,
    fail,
    filter_options,
    format_option,
    user_option,
    when,
)
from lisgw.cli.storeopt import store_options
from lisgw.errors import StoreError
from lisgw.store.queues import list_outbox, retry_outbox
from lisgw.store.records import OutboxState

_STATES = ", ".join(str(s) for s in OutboxState)
RETRY_ALL_MAX = 10_000


@click.group()
def outbox() -> None:
    """Messages for the HIS: what waits, what failed and why; send them again.

    \b
    Examples:
      lisgw outbox list --dead
      lisgw outbox list --dead --reason "unknown patient"
      lisgw outbox retry 812
      lisgw outbox retry --all --reason timeout --yes
    """


@outbox.command("list")
@store_options
@filter_options(state_help=f"Only rows in this state ({_STATES}).")
@click.option("--dead", is_flag=True, help="Only dead letters (same as --state dead).")
@click.option("--reason", metavar="TEXT", help="Only rows whose last error contains TEXT.")
@format_option
def list_command(
    store_url: str | None,
    config_path: Path | None,
    filters: ListFilters,
    dead: bool,
    reason: str | None,
    output: str,
) -> None:
    """Outbox rows, newest first, with attempts and the last error.

    \b
    Examples:
      lisgw outbox list
      lisgw outbox list --dead
      lisgw outbox list --state pending --reason refused
      lisgw outbox list --sample 12345 --format json
    """
    state, now = (str(OutboxState.DEAD) if dead else filters.state), filters.now
    if state is not None and state not in set(OutboxState):
        raise click.BadParameter(f"{state!r}: use one of {_STATES}", param_hint="--state")
    with cli_store(store_url, config_path) as store:
        rows = store.run_sync(
            list_outbox,
            state=state,
            reason=reason,
            sample_id=filters.sample_id,
            analyzer=filters.analyzer,
            window=filters.window,
            limit=filters.limit,
        )
    if output == "json":
        emit_json(rows)
        return
    table_rows = [
        (
            r.id,
            r.sample_id,
            r.state,
            r.attempts,
            when(r.created_at, now),
            when(r.delivered_at if r.delivered_at is not None else r.next_attempt_at, now),
            r.last_error or "-",
        )
        for r in rows
    ]
    headers = ("ID", "SAMPLE", "STATE", "TRIES", "CREATED", "NEXT/DONE", "LAST ERROR")
    echo_table(headers, table_rows, (7, 14, 9, 5, 11, 11, 40), "no outbox rows match")


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every dead letter (with --reason: those).")
@click.option("--reason", metavar="TEXT", help="With --all: only dead rows whose error has TEXT.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all).")
@user_option
@store_options
def retry_command(
    ids: tuple[int, ...],
    every: bool,
    reason: str | None,
    yes: bool,
    user: str | None,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Send rows to the HIS again: dead ones are requeued, pending ones made due now.

    Every retry is written to the audit trail with your name (--user to give another).

    \b
    Examples:
      lisgw outbox retry 812
      lisgw outbox retry 812 813 814
      lisgw outbox retry --all                    # every dead letter, after confirmation
      lisgw outbox retry --all --reason AE --yes  # dead letters whose error mentions AE
    """
    if every == bool(ids):
        raise click.UsageError("give outbox IDs, or --all (not both)")
    if reason and not every:
        raise click.UsageError("--reason goes with --all")
    who = actor(user)
    with cli_store(store_url, config_path) as store:
        if every:
            dead = store.run_sync(
                list_outbox, state=str(OutboxState.DEAD), reason=reason, limit=RETRY_ALL_MAX
            )
            if not dead:
                click.echo("no dead letters" + (f" mentioning {reason!r}" if reason else ""))
                return
            what = f"{len(dead)} dead letter(s)" + (f" mentioning {reason!r}" if reason else "")
            if not yes and not click.confirm(f"Retry {what}?", default=False):
                raise fail("nothing retried")
            ids = tuple(sorted(r.id for r in dead))
        try:
            done = store.run_sync(retry_outbox, list(ids), actor=who, now=time.time())
        except StoreError as error:
            raise fail(f"{error}; nothing retried") from error
    for item in done:
        row = item.row
        if item.action == "requeued":
            click.echo(f"outbox {row.id} (sample {row.sample_id}): dead -> pending, sent again")
        else:
            click.echo(f"outbox {row.id} (sample {row.sample_id}): pending, due now")
    click.echo(f"{len(done)} row(s) retried by {who}; recorded in the audit trail")
