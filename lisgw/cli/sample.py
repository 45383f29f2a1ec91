"""``lisgw sample SAMPLE_ID``: the whole story of one sample, in time order.

Layer: interface. Reads the daemon's store (lisgw.cli.storeopt) with one read-side unit of
work (lisgw.store.story.sample_story): orders, analyzer queue and downloads, host queries
and replies, results, deliveries to the HIS, review items and audit rows, each with its
time. Patient names are masked unless ``--show-patient``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from lisgw.cli._view import (
    as_json,
    cli_store,
    echo_table,
    emit_json,
    fail,
    format_option,
    patient,
    patient_option,
    when,
)
from lisgw.cli.storeopt import store_options
from lisgw.store.story import SampleStory, sample_story, story_events


@click.command()
@click.argument("sample_id")
@store_options
@patient_option
@format_option
def sample(
    sample_id: str, store_url: str | None, config_path: Path | None, show_patient: bool, output: str
) -> None:
    """Did this sample's results reach the HIS? Everything about one sample, with times.

    Host queries are found through the sample's analyzers within a day of its other events.

    \b
    Examples:
      lisgw sample 12345
      lisgw sample 12345 --format json
      lisgw sample 12345 --show-patient
    """
    with cli_store(store_url, config_path) as store:
        story = store.run_sync(sample_story, sample_id)
    if story.empty:
        raise fail(f"sample {sample_id!r}: nothing stored (no order, result or delivery)")
    if output == "json":
        emit_json(_document(story, show_patient))
        return
    _print(story, show_patient)


def _document(story: SampleStory, show_patient: bool) -> dict[str, Any]:
    document: dict[str, Any] = as_json(story)
    for order in document["orders"]:
        order["summary"]["patient_name"] = patient(order["summary"]["patient_name"], show_patient)
    document["events"] = as_json(story_events(story))
    return document


def _print(story: SampleStory, show_patient: bool) -> None:
    now = time.time()
    click.echo(f"Sample {story.sample_id}")
    for order in story.orders:
        o = order.summary
        name = patient(o.patient_name, show_patient) or "-"
        click.echo(
            f"  order {o.placer}: {o.state}, {o.resulted}/{o.tests} tests resulted; patient {name}"
        )
    delivered = sum(1 for row in story.outbox if row.delivered_at is not None)
    waiting = [row for row in story.outbox if row.delivered_at is None]
    click.echo(
        f"  results {len(story.results)}; HIS messages {len(story.outbox)}: "
        f"{delivered} delivered, {len(waiting)} not"
        + "".join(f"; outbox {row.id} {row.state}" for row in waiting)
    )
    click.echo("")
    rows = [(when(e.at, now), e.kind, e.ref, e.text) for e in story_events(story)]
    echo_table(("TIME", "WHAT", "ABOUT", "EVENT"), rows, (11, 8, 14, 50), "  (no events)")
