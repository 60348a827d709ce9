"""Every feature of the log, merged within the bundle and committed with the offsets it covers.

What the backfill and the continuous job both run, behind the source (``transforms.pipeline``).
One fused DoFn instead of a chain of stages with a shuffle: a shuffle behind an unbounded
source emits nothing on the local runner, and per-element stage overhead, not feature logic,
set the rate. Within a bundle the DoFn

- takes the source's batches (one element per fetched batch of a partition) and applies every
  extractor (``PER_EVENT_FEATURES``) to each, and the catalog's and impressions' mutations,
  merging them per key into one ``MergedMutations`` as ``CombineMutations`` would;
- collects each (user, session window)'s distinct items in log order (a user's records sit
  in one partition, which a bundle reads in order) and turns them into co-occurrence pairs
  against the items committed before, as ``Cooccurrence`` would;
- *commits* at a size cap and at the end of the bundle: the merged mutations and the next
  offset of every partition they cover, in one Redis transaction guarded by a
  compare-and-set on those offsets (``RedisFeatureStore.commit``). One commit at a time is in
  flight while the next records are extracted; the next commit (whose co-occurrence lookup
  must see it) and the end of the bundle wait for it, and its refusal fails the bundle.
- writes the dead letters a commit covers (each fetched batch carries its own) to the DLQ
  before the commit moves the offsets past them: a crash between the two writes them again,
  where letters written at the end of the bundle, after offsets that moved mid-bundle, were lost.

The cyclic garbage collector is paused while a bundle runs (``_PausedCollector``): every object
a bundle makes (records, keys, members, the merge's dicts) is acyclic, yet the collector's
periodic passes traversed all of them that were still held, over and over: about 40% of the
extraction and encoding CPU. Young cycles are still collected at every commit, once the merge
that held most objects is gone, and the collector runs as before once the bundle ends.

Each commit is a micro-batch of the log in the sense of ``ComputeFeatures`` (its docstring
holds the merge property), so any split of the log into commits gives one pass's state:
stream == backfill by construction. A record below its partition's committed offset was
applied by an earlier attempt of the bundle and is skipped, so a retried bundle applies
exactly the rest; a commit whose offsets moved meanwhile is refused whole.
"""

from __future__ import annotations

import gc
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import apache_beam as beam

from featurestore.commit import encode_bundle
from featurestore.lookups import RedisSessionItems
from streams import dlq
from streams.dlq import DeadLetter, DeadLetterWriter
from streams.fetched_batch import FetchedBatch
from streams.schema import CatalogEntry, Impression, Interaction
from streams.topics import EVENTS, IMPRESSIONS, ITEMS
from transforms.attribution import impression_mutations
from transforms.catalog import catalog_mutation
from transforms.commit_caps import DEFAULT_MAX_KEYS, PIECE_RECORDS, RECORDS_PER_CAP
from transforms.config import FeatureConfig
from transforms.cooccurrence import LOOKUP_BATCH_SIZE, add_window, session_records
from transforms.extract import EventBatch
from transforms.features import PER_EVENT_FEATURES
from transforms.mutations import MergedMutations

METRICS_NAMESPACE = "kapparec.store"

_TOPIC_OF = {Interaction: EVENTS, CatalogEntry: ITEMS, Impression: IMPRESSIONS}


@dataclass(frozen=True)
class CommitTarget:
    """Where the commits go: the store and the version, the writer lease they are made under, and
    the broker whose DLQ takes the dead letters they cover."""

    redis_url: str
    version: str
    bootstrap: str
    lease: str = ""  # a backfill into a fresh version has no other writer to fence off


class _PausedCollector:
    """The cyclic garbage collector off from ``pause`` to ``resume``, its youngest generation
    collected by ``collect_young``. Process-wide, as the collector is: the source's reading runs
    within the same bundle, on the same thread, and a bundle that failed before ``resume`` leaves
    it off only until another bundle ends."""

    _enabled_before: bool | None = None  # the collector's state before any bundle paused it

    @classmethod
    def pause(cls) -> None:
        if cls._enabled_before is None:
            cls._enabled_before = gc.isenabled()
        gc.disable()

    @staticmethod
    def collect_young() -> None:
        gc.collect(0)

    @classmethod
    def resume(cls) -> None:
        if cls._enabled_before:
            gc.enable()


class _CommitFeaturesFn(beam.DoFn):
    def __init__(self, target: CommitTarget, config: FeatureConfig, max_records: int | None, max_keys: int):
        self._target, self._config = target, config
        self._max_records, self._max_keys = max_records, max_keys
        self._piece_records = max(1, min(PIECE_RECORDS, max_keys // RECORDS_PER_CAP))
        self._commits = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "commits")
        self._committed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_committed")
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "mutations_committed")
        # Its max is what the size cap holds: one commit's work on Redis's one thread.
        self._commit_fields = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "commit_fields")
        self._letters_written = beam.metrics.Metrics.counter(dlq.METRICS_NAMESPACE, dlq.LETTERS_WRITTEN)

    def setup(self):
        from featurestore.redis_store import RedisFeatureStore

        self._store = RedisFeatureStore(self._target.redis_url)
        self._prior = RedisSessionItems(self._target.redis_url, self._target.version)
        self._extractors = tuple(feature.extract for feature in PER_EVENT_FEATURES)
        self._dead_letters = DeadLetterWriter(self._target.bootstrap, self._target.redis_url)
        # One commit in flight while the next is extracted: Redis merges on its own core.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._in_flight: Future | None = None

    def teardown(self):
        committer = getattr(self, "_committer", None)
        if committer is not None:
            committer.shutdown(wait=True)
            self._dead_letters.close()
        _PausedCollector.resume()  # a failed bundle never reached finish_bundle

    def start_bundle(self):
        if self._in_flight is not None:
            # Left by a bundle that failed: settle it before the committed offsets are read again
            # (its outcome does not matter: the offsets' compare-and-set fences whatever follows).
            wait([self._in_flight])
            self._in_flight = None
        # Every partition's committed offset, read at the bundle's first records (None until then).
        self._expected: dict[tuple[str, int], int] | None = None
        self._reset()
        _PausedCollector.pause()

    def _reset(self):
        self._merged = MergedMutations()
        self._windows: dict[tuple[str, int], dict[str, None]] = {}  # (entity, partition) -> its items
        self._next: dict[tuple[str, int], int] = {}
        self._letters: list[DeadLetter] = []
        self._records = 0
        self._pair_keys = 0

    def process(self, records: FetchedBatch):
        """``records``: one fetched batch of one partition, in log order (the source's batched output)."""
        for letter in records.letters:
            self._add_letter(letter)
        if not records:
            return ()
        position = (_TOPIC_OF[type(records[0])], records[0].partition)
        committed = self._committed_offsets().get(position)
        if committed is not None and records[0].offset < committed:
            # Applied by an earlier attempt of this bundle.
            records = [record for record in records if record.offset >= committed]
        while records:
            room = self._piece_records if self._max_records is None else min(self._piece_records,
                                                                             self._max_records - self._records)
            self._add_records(position, records[:room])
            records = records[room:]
            if self._full():
                self._commit()
        return ()  # a sink emits nothing

    def _committed_offsets(self) -> dict[tuple[str, int], int]:
        if self._expected is None:
            # Read with no commit of ours running: a long merge script makes Redis answer BUSY.
            # All partitions in one read: a round of the continuous job brings several.
            self._land()
            self._expected = self._store.offsets(self._target.version)
        return self._expected

    def _add_letter(self, letter: DeadLetter) -> None:
        position = (letter.topic, letter.partition)
        committed = self._committed_offsets().get(position)
        if committed is not None and letter.offset < committed:
            return  # written before the commit that moved past it
        self._letters.append(letter)
        self._advance(position, letter.offset + 1)

    def _advance(self, position: tuple[str, int], next_offset: int) -> None:
        # max: a batch's letters are taken before its records, and may lie past its last valid record.
        self._next[position] = max(self._next.get(position, 0), next_offset)

    def _full(self) -> bool:
        return len(self._merged) + self._pair_keys >= self._max_keys or (
            self._max_records is not None and self._records >= self._max_records
        )

    def _add_records(self, position: tuple[str, int], records: list) -> None:
        self._advance(position, records[-1].offset + 1)
        self._records += len(records)
        if position[0] == EVENTS:
            self._add_events(EventBatch(self._config, records))
        elif position[0] == ITEMS:
            for entry in records:
                self._merged.add(catalog_mutation(entry))
        else:
            for impression in records:
                for mutation in impression_mutations(self._config, impression):
                    self._merged.add(mutation)

    def _add_events(self, batch: EventBatch) -> None:
        for extract in self._extractors:
            extract(batch, self._merged)
        cap = self._config.max_items_per_session_window
        for entity, (partition, _, item) in session_records(batch):
            items = self._windows.setdefault((entity, partition), {})
            if item not in items:
                # The keys this item adds at commit (its SESSION_ITEMS member, OCCURRENCE and
                # both pair directions with up to the cap of others) count toward the size cap
                # now: dense sessions would otherwise bring their pairs past it.
                self._pair_keys += 2 + 2 * min(len(items), cap)
                items[item] = None

    def finish_bundle(self):
        self._commit()
        self._land()  # the bundle is done only once its last commit is
        _PausedCollector.resume()
        return ()

    def _commit(self) -> None:
        if not self._next:
            return
        self._land()
        self._add_pairs()
        expected = {position: self._expected.get(position) for position in self._next}
        bundle = encode_bundle(self._merged.merged())
        self._in_flight = self._committer.submit(self._write_letters_and_commit, self._letters, bundle, expected,
                                                 dict(self._next))
        self._expected.update(self._next)  # what the next commit expects, once this one landed
        self._commits.inc()
        self._committed.inc(self._records)
        self._reset()
        _PausedCollector.collect_young()

    def _write_letters_and_commit(self, letters: list[DeadLetter], bundle: bytes, expected: dict,
                                  offsets: dict) -> tuple[int, int]:
        """The letters the offsets cover, durable before the commit moves them; (mutations merged, letters written)."""
        written = self._dead_letters.write(letters)
        return self._store.commit(self._target.version, bundle, expected, offsets, self._target.lease), written

    def _land(self) -> None:
        """Waits for the commit in flight; its refusal (a stale bundle, a lost lease) fails the bundle."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            merged, letters = in_flight.result()
            self._written.inc(merged)  # counted here: Beam's counters belong to the bundle's thread
            self._commit_fields.update(merged)
            self._letters_written.inc(letters)

    def _add_pairs(self) -> None:
        # Read only after the previous commit, so the lookup sees exactly the earlier log.
        windows = list(self._windows)
        for start in range(0, len(windows), LOOKUP_BATCH_SIZE):
            chunk = windows[start:start + LOOKUP_BATCH_SIZE]
            prior = self._prior.lookup([entity for entity, _ in chunk])
            for entity, partition in chunk:
                add_window(self._merged, self._config, entity, partition, list(self._windows[entity, partition]),
                           prior.get(entity, set()))


class CommitFeatures(beam.PTransform):
    """PCollection[FetchedBatch] of Interaction, CatalogEntry or Impression (the source's batches)
    -> every feature, committed into ``target`` per bundle, and every batch's dead letters,
    written to the DLQ before the offsets that cover them move.

    ``max_records`` caps the records of one commit (None: only ``max_keys`` does), so a test
    or an operator can force many small commits.
    """

    def __init__(self, target: CommitTarget, config: FeatureConfig | None = None,
                 max_records: int | None = None, max_keys: int = DEFAULT_MAX_KEYS):
        super().__init__()
        self._fn = _CommitFeaturesFn(target, config or FeatureConfig(), max_records, max_keys)

    def expand(self, records):
        return records | "MergeAndCommit" >> beam.ParDo(self._fn)
