"""Training data is a replay of the log through the same Beam source the feature pipelines use.

``replay_log`` snapshots where the ``events`` and ``items`` topics end (or takes the caller's
stop offsets), reads them with ``streams.source.ReadFromKafka``, keeps interactions before an
optional event-time cutoff, and hands the records back to the driver as JSON lines written
to a temporary directory (Beam has no ``collect()``). The returned metadata names exactly
which offsets were read, so a registered model can say what data it saw and a later replay
of the same ranges reproduces it.

Records that fail validation are counted, not re-sent: the feature pipelines already put
them on the dead-letter topic, and a retrain must not add copies there.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from kapparec.errors import KapparecError
from streams import offsets, topics
from streams.schema import CatalogEntry, Interaction, parse_catalog, parse_interaction
from streams.source import DEAD_LETTER, RECORDS, ReadFromKafka
from training.data import Catalog, Interactions

Ranges = dict[int, tuple[int, int]]

INTERACTIONS_FILE, CATALOG_FILE, DEAD_LETTERS_FILE = "interactions", "catalog", "dead_letters"
EXPORT_BATCH = 2_000


def replay_log(
    bootstrap: str,
    *,
    until_offsets: dict[int, int] | None = None,
    until_event_time_ms: int | None = None,
    runner: str = "DirectRunner",
    pipeline_args: list[str] | None = None,
) -> tuple[Interactions, Catalog, dict]:
    """Interactions and catalog from the log, plus ``{"offsets", "cutoff_ms", ...}`` metadata.

    ``until_offsets`` (events partition → exclusive stop offset) bounds the read by log
    position; partitions it leaves out are read to their snapshot end. ``until_event_time_ms``
    keeps only interactions with an event time strictly before it. The catalog is always the
    whole ``items`` snapshot (latest version per item).
    """
    event_ranges = _event_ranges(bootstrap, until_offsets)
    item_ranges = _snapshot(bootstrap, topics.ITEMS)
    with tempfile.TemporaryDirectory(prefix="kapparec-replay-") as out:
        with beam.Pipeline(options=PipelineOptions(pipeline_args or [], runner=runner)) as pipeline:
            _export_log(pipeline, bootstrap, event_ranges, item_ranges, until_event_time_ms, out)
        interactions = Interactions.from_events(Interaction(*row) for row in _load(out, INTERACTIONS_FILE))
        catalog = Catalog.from_entries(_catalog_entry(row) for row in _load(out, CATALOG_FILE))
        dead_letters = sum(_load(out, DEAD_LETTERS_FILE))
    if len(interactions) == 0:
        before = "" if until_event_time_ms is None else f" before event time {until_event_time_ms}"
        raise KapparecError(f"no interactions in the replayed offset ranges{before}")
    metadata = {
        "offsets": {topics.EVENTS: _listed(event_ranges), topics.ITEMS: _listed(item_ranges)},
        "cutoff_ms": until_event_time_ms if until_event_time_ms is not None else int(interactions.event_times.max()) + 1,
        "until_event_time_ms": until_event_time_ms,
        "interactions": len(interactions),
        "catalog_items": len(catalog),
        "dead_letters": dead_letters,
    }
    return interactions, catalog, metadata


def _export_log(
    pipeline: beam.Pipeline, bootstrap: str, event_ranges: Ranges, item_ranges: Ranges, until_event_time_ms: int | None, out: str
) -> None:
    """Interactions before the cutoff, catalog versions and the dead-letter count, as files under ``out``."""
    events = pipeline | "ReadEvents" >> ReadFromKafka(bootstrap, topics.EVENTS, parse_interaction, ranges=event_ranges)
    _ = (
        events[RECORDS]
        | "BeforeCutoff" >> beam.Filter(_before, until_event_time_ms)
        | "ExportInteractions" >> ExportJsonLines(os.path.join(out, INTERACTIONS_FILE))
    )
    dead = (events[DEAD_LETTER],)
    if item_ranges:  # a log without a catalog still trains (items are known from interactions)
        items = pipeline | "ReadItems" >> ReadFromKafka(bootstrap, topics.ITEMS, parse_catalog, ranges=item_ranges)
        _ = items[RECORDS] | "ExportCatalog" >> ExportJsonLines(os.path.join(out, CATALOG_FILE))
        dead += (items[DEAD_LETTER],)
    _ = (
        dead
        | "AllDeadLetters" >> beam.Flatten()
        | "CountDeadLetters" >> beam.combiners.Count.Globally()
        | "ExportCount" >> ExportJsonLines(os.path.join(out, DEAD_LETTERS_FILE))
    )


class ExportJsonLines(beam.PTransform):
    """Writes the elements as JSON lines, each line a list of up to ``EXPORT_BATCH`` elements.

    Batching matters: per-element work in the runner and in ``json`` costs more than the
    encoding itself, and one line per thousand records cuts both a thousandfold.
    """

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, records: beam.PCollection) -> beam.PDone:
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=EXPORT_BATCH, max_batch_size=EXPORT_BATCH)
            | "ToJson" >> beam.Map(json.dumps)
            | "Write" >> beam.io.WriteToText(self.prefix, file_name_suffix=".jsonl")
        )


def _event_ranges(bootstrap: str, until_offsets: dict[int, int] | None) -> Ranges:
    snapshot = _snapshot(bootstrap, topics.EVENTS)
    if not any(stop > start for start, stop in snapshot.values()):
        raise KapparecError(f"the log is empty: topic {topics.EVENTS!r} at {bootstrap} holds no interactions")
    unknown = sorted(set(until_offsets or {}) - set(snapshot))
    if unknown:
        raise KapparecError(f"topic {topics.EVENTS!r} has no partition {unknown}")
    # ReadFromKafka refuses a stop beyond the log end or before the start, with the offsets in the message.
    return {p: (start, (until_offsets or {}).get(p, stop)) for p, (start, stop) in snapshot.items()}


def _snapshot(bootstrap: str, topic: str) -> Ranges:
    """Everything of ``topic`` from its log beginning: the jobs' planner with nothing committed."""
    return offsets.plan_from(offsets.log_snapshot(bootstrap, (topic,)), {})[topic]


def _before(record: Interaction, until_event_time_ms: int | None) -> bool:
    return until_event_time_ms is None or record.event_time < until_event_time_ms


def _load(directory: str, prefix: str) -> Iterable[Any]:
    """The elements ``ExportJsonLines`` wrote under ``prefix``."""
    for path in sorted(glob.glob(os.path.join(directory, f"{prefix}*.jsonl"))):
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                yield from json.loads(line)


def _catalog_entry(row: list) -> CatalogEntry:
    entry = CatalogEntry(*row)
    return entry._replace(categories=tuple(entry.categories), regions=tuple(entry.regions))


def _listed(ranges: Ranges) -> dict[int, list[int]]:
    return {partition: [start, stop] for partition, (start, stop) in sorted(ranges.items())}
