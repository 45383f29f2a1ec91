"""``lisgw unmatched list|assign|discard``: the review queue of results no order matched.

Layer: interface. Reads and changes the daemon's store (lisgw.cli.storeopt) through
lisgw.store.queues (``list_review``, ``assign_review``, ``discard_review``). ``assign`` gives
an item to a technician (yourself by default) to sort out; ``discard`` closes it without
delivering the result (a note says why). Both are written to the audit trail with the
technician's name (``--user``, default the login name).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from lisgw.cli._view import (
    actor,
    cli_store,
    echo_table,
    emit_json,
    fail,
    filter_options,
    format_option,
    user_option,
    when,
    window,
)
from lisgw.cli.storeopt import store_options
from lisgw.errors import StoreError
from lisgw.routing import normalize_sample_id
from lisgw.store.queues import ReviewItem, assign_review, discard_review, list_review
from lisgw.store.records import ReviewState

_STATES = ", ".join([*(str(s) for s in ReviewState), "all"])


@click.group()
def unmatched() -> None:
    """Results waiting for review (no order matched them): list, assign, discard.

    \b
    Examples:
      lisgw unmatched list
      lisgw unmatched assign 17 --note "relabelled tube, checking"
      lisgw unmatched discard 17 --note "rerun on the right sample"
    """


@unmatched.command("list")
@store_options
@filter_options(state_help=f"Items in this state ({_STATES}); default open.")
@format_option
def list_command(
    store_url: str | None,
    config_path: Path | None,
    analyzer: str | None,
    sample: str | None,
    state: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    output: str,
) -> None:
    """Review items, oldest first (open ones unless --state).

    \b
    Examples:
      lisgw unmatched list
      lisgw unmatched list --state assigned --analyzer xn-1
      lisgw unmatched list --state all --since 1d --format json
    """
    chosen = state or str(ReviewState.OPEN)
    if chosen != "all" and chosen not in set(ReviewState):
        raise click.BadParameter(f"{chosen!r}: use one of {_STATES}", param_hint="--state")
    now = time.time()
    span = window(since, until, now)
    with cli_store(store_url, config_path) as store:
        items = store.run_sync(
            list_review,
            state=None if chosen == "all" else chosen,
            analyzer=analyzer,
            sample_id=normalize_sample_id(sample) if sample is not None else None,
            window=span,
            limit=limit,
        )
    if output == "json":
        emit_json(items)
        return
    rows = [
        (
            i.id,
            when(i.created_at, now),
            i.connection,
            i.sample_id,
            f"{i.test}={i.value}",
            i.state + (f" ({i.assignee})" if i.assignee else ""),
            i.reason,
        )
        for i in items
    ]
    headers = ("ID", "TIME", "ANALYZER", "SAMPLE", "RESULT", "STATE", "REASON")
    echo_table(headers, rows, (6, 11, 10, 14, 14, 16, 30), f"no {chosen} review items")


@unmatched.command("assign")
@click.argument("review_id", type=int)
@click.option("--to", "assignee", metavar="NAME", help="Who takes it (default: you).")
@click.option("--note", default="", help="Why, or what is being done.")
@user_option
@store_options
def assign_command(
    review_id: int,
    assignee: str | None,
    note: str,
    user: str | None,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Take a review item (or give it to someone): state assigned; audited.

    \b
    Examples:
      lisgw unmatched assign 17
      lisgw unmatched assign 17 --to alice --note "call the ward"
    """
    who = actor(user)
    with cli_store(store_url, config_path) as store:
        try:
            item = store.run_sync(
                assign_review,
                review_id,
                assignee=assignee or who,
                actor=who,
                now=time.time(),
                note=note,
            )
        except StoreError as error:
            raise fail(str(error)) from error
    _done(item, f"assigned to {item.assignee}", who)


@unmatched.command("discard")
@click.argument("review_id", type=int)
@click.option("--note", default="", help="Why it is discarded (kept in the audit trail).")
@user_option
@store_options
def discard_command(
    review_id: int, note: str, user: str | None, store_url: str | None, config_path: Path | None
) -> None:
    """Close a review item without delivering its result; audited.

    \b
    Examples:
      lisgw unmatched discard 17 --note "QC material run as a patient sample"
    """
    who = actor(user)
    with cli_store(store_url, config_path) as store:
        try:
            item = store.run_sync(discard_review, review_id, actor=who, now=time.time(), note=note)
        except StoreError as error:
            raise fail(str(error)) from error
    _done(item, "discarded", who)


def _done(item: ReviewItem, what: str, who: str) -> None:
    result = f"{item.test}={item.value} sample {item.sample_id} from {item.connection}"
    click.echo(f"review item {item.id} ({result}): {what}")
    click.echo(f"recorded in the audit trail as {who}")
