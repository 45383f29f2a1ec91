"""What a scenario run did: per-analyzer tallies, the report and its summary table.

Layer: simulator helpers (pure). lisgw.sim.runner fills the tallies; ``lisgw demo`` and
``lisgw simulate`` print ``ScenarioReport.summary``: counts, codes and sample IDs, never a
patient. ``download_summary`` reads an order message a gateway downloaded to an analyzer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lisgw.sim.scenario import ScenarioAnalyzer

__all__ = ["AnalyzerTally", "ScenarioReport", "download_summary"]


@dataclass(slots=True)
class AnalyzerTally:
    """What one analyzer did during the run."""

    analyzer: ScenarioAnalyzer
    orders: int = 0  # order messages the gateway accepted (AA)
    messages: int = 0  # messages the gateway acknowledged
    results: int = 0  # R records / OBX segments in them
    delivered: int = 0  # ORU^R01 for its sample the HIS received
    downloads: int = 0  # order messages the gateway downloaded to it
    query: str = ""  # "" (none asked), "answered", "no reply", "not sent: …"
    query_orders: int = 0  # O records in the reply


@dataclass(slots=True)
class ScenarioReport:
    """The run's outcome: per analyzer tallies, what is missing, how long it took."""

    tallies: list[AnalyzerTally]
    elapsed: float = 0.0
    dead_letters: int | None = None  # known when the gateway runs in this process
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        """The summary table (plain text, no patient data)."""
        header = (
            f"{'analyzer':<38} {'orders':>6} {'query':>9} {'messages':>8} {'results':>7} "
            f"{'to HIS':>6}"
        )
        lines = [header, "-" * len(header)]
        for t in self.tallies:
            query = {"": "-", "answered": f"{t.query_orders} ord"}.get(t.query, "no reply")
            lines.append(
                f"{t.analyzer.label:<38} {t.orders:>6} {query:>9} {t.messages:>8} "
                f"{t.results:>7} {t.delivered:>6}"
            )
        asked = [t for t in self.tallies if t.query]
        answered = sum(1 for t in asked if t.query == "answered")
        lines.append(f"host queries: {len(asked)} sent, {answered} answered")
        lines.append(f"order downloads: {sum(t.downloads for t in self.tallies)}")
        if self.dead_letters is not None:
            lines.append(f"dead letters: {self.dead_letters}")
        lines.append(f"elapsed: {self.elapsed:.1f} s")
        lines.extend(f"MISSING: {what}" for what in self.missing)
        return "\n".join(lines)


def download_summary(records: tuple[bytes, ...]) -> tuple[list[str], list[str]]:
    """(specimen IDs, test codes) of a downloaded order message: O.3 (components joined,
    padding removed) and O.5 (the first non-empty component of each repeat), read with the
    delimiters of its H record."""
    header = records[0] if records and records[0][:1] == b"H" else b"H|\\^&"
    field_sep, repeat, component = header[1:2], header[2:3], header[3:4]
    samples: list[str] = []
    tests: list[str] = []
    for record in records:
        fields = record.split(field_sep)
        if fields[0] != b"O" or len(fields) < 3:
            continue
        parts = [p.strip() for p in fields[2].split(component)]
        samples.append(b"^".join(parts).strip(b"^").decode("latin-1"))
        for test in fields[4].split(repeat) if len(fields) > 4 else []:
            codes = [c.strip() for c in test.split(component) if c.strip()]
            if codes:
                tests.append(codes[0].decode("latin-1"))
    return samples, tests
