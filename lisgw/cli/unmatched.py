"""``lisgw unmatched list|assign|discard``: the review queue of results no order matched.

Layer: interface. Reads and changes the daemon's store (lisgw.cli.storeopt) through
lisgw.store.queues (``list_review``, ``assign_review``, ``discard_review``) and
lisgw.store.review_match (``match_review``). ``assign ID --order PLACER`` (or ``--sample
SAMPLE_ID``) matches the item's result to a HIS order and queues its ORU^R01 for the running
gateway to deliver; it reads the gateway configuration for the HIS profile and test codes.
``assign ID [--to NAME]`` gives the item to a technician (yourself by default) to sort out;
``discard`` closes it without delivering the result (a note says why). Every action is
written to the audit trail with the technician's name (``--user``, default the login name).
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
from lisgw.cli.storeopt import DEFAULT_CONFIG, store_options
from lisgw.config import load_config
from lisgw.drivers.mapping import TestCodeMap
from lisgw.errors import ConfigError, StoreError
from lisgw.his.profile import HisProfile
from lisgw.store.queues import ReviewItem, assign_review, discard_review, list_review
from lisgw.store.records import ReviewState
from lisgw.store.review_match import match_review

_STATES = ", ".join([*(str(s) for s in ReviewState), "all"])


@click.group()
def unmatched() -> None:
    """Results waiting for review (no order matched them): list, assign, discard.

    assign --order/--sample matches a result to an order and sends it to the HIS.

    \b
    Examples:
      lisgw unmatched list
      lisgw unmatched assign 17 --order ORD-20240627-0042 --note "tube relabelled"
      lisgw unmatched assign 17 --sample 0000387
      lisgw unmatched assign 17 --to alice --note "call the ward"
      lisgw unmatched discard 17 --note "rerun on the right sample"
    """


@unmatched.command("list")
@store_options
@filter_options(state_help=f"Items in this state ({_STATES}); default open.")
@format_option
def list_command(
    store_url: str | None,
    config_path: Path | None,
    filters: ListFilters,
    output: str,
) -> None:
    """Review items, oldest first (open ones unless --state).

    \b
    Examples:
      lisgw unmatched list
      lisgw unmatched list --state assigned --analyzer xn-1
      lisgw unmatched list --state all --since 1d --format json
    """
    chosen, now = filters.state or str(ReviewState.OPEN), filters.now
    if chosen != "all" and chosen not in set(ReviewState):
        raise click.BadParameter(f"{chosen!r}: use one of {_STATES}", param_hint="--state")
    with cli_store(store_url, config_path) as store:
        items = store.run_sync(
            list_review,
            state=None if chosen == "all" else chosen,
            analyzer=filters.analyzer,
            sample_id=filters.sample_id,
            window=filters.window,
            limit=filters.limit,
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
@click.option(
    "--order", "placer", metavar="PLACER", help="Match the result to this order (placer number)."
)
@click.option(
    "--sample",
    "order_sample",
    metavar="SAMPLE_ID",
    help="Match the result to the one open order of this sample ID.",
)
@click.option("--to", "assignee", metavar="NAME", help="Who takes it (default: you).")
@click.option("--note", default="", help="Why, or what is being done.")
@user_option
@store_options
def assign_command(
    review_id: int,
    placer: str | None,
    order_sample: str | None,
    assignee: str | None,
    note: str,
    user: str | None,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    """Match a review item's result to an order and send it to the HIS, or give the item to
    someone (state assigned). Audited with your name either way.

    With --order or --sample the result is matched as routing would have matched it (test
    codes from the configuration's test_codes), an ORU^R01 is built with the HIS profile and
    queued in the outbox (the running gateway delivers it), and the item is resolved. This
    needs the gateway configuration (--config; --store alone is not enough). --sample needs
    exactly one open order for that sample: otherwise the candidates are listed. Without
    them, the item is assigned to --to NAME (default: you).

    \b
    Examples:
      lisgw unmatched assign 17 --order ORD-20240627-0042 --config /etc/lisgw/lisgw.yaml
      lisgw unmatched assign 17 --sample 0000387 --note "barcode misread, tube relabelled"
      lisgw unmatched assign 17
      lisgw unmatched assign 17 --to alice --note "call the ward"
    """
    who = actor(user)
    if placer is not None and order_sample is not None:
        raise click.UsageError("give --order or --sample, not both")
    if placer is None and order_sample is None:
        _assign_to(review_id, assignee or who, who, note, store_url, config_path)
        return
    if assignee is not None:
        raise click.UsageError(
            "--to gives the item to someone; --order/--sample match its result to an order: "
            "use one or the other"
        )
    profile, codes = _gateway_parts(store_url, config_path)
    with cli_store(store_url, config_path) as store:
        try:
            matched = store.run_sync(
                match_review,
                review_id,
                placer=placer,
                sample_id=order_sample,
                profile=profile,
                codes=codes,
                actor=who,
                now=time.time(),
                note=note,
            )
        except StoreError as error:
            raise fail(str(error)) from error
    row = matched.outbox
    _done(matched.item, f"matched to order {matched.order_placer} ({matched.his_code})", who)
    click.echo(
        f"ORU^R01 {row.control_id} queued as outbox {row.id} (sample {row.sample_id}): "
        "the running gateway sends it (`lisgw outbox list --sample "
        f"{row.sample_id}` to follow it)"
    )


def _assign_to(
    review_id: int,
    assignee: str,
    who: str,
    note: str,
    store_url: str | None,
    config_path: Path | None,
) -> None:
    with cli_store(store_url, config_path) as store:
        try:
            item = store.run_sync(
                assign_review, review_id, assignee=assignee, actor=who, now=time.time(), note=note
            )
        except StoreError as error:
            raise fail(str(error)) from error
    _done(item, f"assigned to {item.assignee}", who)


def _gateway_parts(
    store_url: str | None, config_path: Path | None
) -> tuple[HisProfile, TestCodeMap | None]:
    """The HIS profile and test-code table of the gateway's configuration."""
    if config_path is None and store_url is not None:
        raise fail(
            "matching a result to an order needs the gateway configuration (its HIS profile "
            "and test codes): give --config FILE (with or without --store)"
        )
    path = config_path or DEFAULT_CONFIG
    if not path.exists():
        raise fail(f"configuration not found: {path} (give --config FILE)")
    try:
        config = load_config(path)
        profile = HisProfile.load(config.his.profile_path)
        codes = TestCodeMap.load(config.test_codes) if config.test_codes else None
    except ConfigError as error:
        problems = "\n  ".join(error.problems)
        raise fail(f"configuration {path} has errors:\n  {problems}") from error
    return profile, codes


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
