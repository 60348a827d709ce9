"""The recommendation funnel: candidates -> the page (scores, filters, fill, diversity, exploration) -> explanations.

One ``Funnel`` serves a feature version with a model (or none: then trending and popular
items). Every stage is a module of its own; this file only wires them in order and times them.
Candidates travel as columns over the snapshot's catalog rows (``serving.request``), and only the
page's final items become Python objects. A page is never empty: a user the store has never seen
gets a cold-start page, and when the filters leave the page short, popular items that pass the
filters fill it (``widened``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from featurestore.reader import FeatureReader, UserFeatures
from modelfiles.registry import ModelVersion
from serving import candidates as generate
from serving.config import FunnelConfig
from serving.explain import RECENT_FOR_EXPLANATIONS, explained, nearest_engaged
from serving.exploration import fresh_rows
from serving.fill import popular_rows
from serving.filters import ItemFilter
from serving.model import ServingModel, hour_of
from serving.neighbours import NeighbourCache
from serving.page import PageRequest, compiled_page
from serving.ranker import FEATURES, RANKED_SOURCES, CandidateFeatures, candidate_features, for_request
from serving.request import Filters, Page, Pool, Query, RankedItem
from serving.snapshot import Snapshot

if TYPE_CHECKING:
    from serving.metrics import StageClock

# The funnel's public entry point: offline evaluation (``training.funnel_eval``) imports nothing else of serving.
__all__ = ["Filters", "Funnel", "FunnelConfig", "OfflineFunnels", "Page", "Query", "RankedItem", "ServingModel"]

# Offline evaluation times nothing: a thread CPU read is a system call.
_UNTIMED = nullcontext()


class Funnel:
    RANKER_FEATURES = FEATURES  # the columns of ``ranker_features``, which a learned ranker is fitted on

    def __init__(self, reader: FeatureReader | None, model: ServingModel | None, snapshot: Snapshot,
                 config: FunnelConfig, stages: StageClock | None = None, neighbours: NeighbourCache | None = None):
        self.reader, self.model, self.snapshot, self.config = reader, model, snapshot, config
        self._stages = stages
        self._neighbours = neighbours
        self.catalog = snapshot.catalog_arrays()
        self._engaged_memo: tuple[UserFeatures, list[str]] | None = None

    def _similar_many(self, item_ids: list[str], n: int) -> list[list[tuple[str, float]]]:
        if self.reader is None:
            return [[] for _ in item_ids]
        if self._neighbours:
            return self._neighbours.similar_many(self.reader, item_ids, n)
        return self.reader.similar_many(item_ids, n)

    def _stage(self, name: str) -> AbstractContextManager:
        return self._stages.stage(name) if self._stages is not None else _UNTIMED

    # -- the three read RPCs -----------------------------------------------------------

    def recommend(self, query: Query, user: UserFeatures | None = None) -> Page:
        """A personal page; ``reader`` None (Redis unreachable) serves the snapshot alone, degraded.

        ``user``: the user's features, when the caller has read them already through ``reader``.
        """
        user, region, pool, drawn = self.candidates(query, user)
        known = user is not None and not user.is_new
        ranker = self.model.ranker if self.model is not None and known else None
        learned = for_request(ranker, user, self.snapshot, region) if ranker else None
        boosted = None if known or not query.onboarding_categories else query.onboarding_categories
        blocked = (user.seen, user.disliked) if user else ()
        request = self._request(pool, query, region, blocked, learned=learned, boosted=boosted,
                                fresh=fresh_rows(self.snapshot, self.catalog))
        items, widened = self._finish(request, region, query, user)
        return Page(items, "full" if self.reader else "degraded", widened, drawn)

    def similar(self, item_id: str, k: int, user_id: str = "") -> list[RankedItem]:
        blocked = {item_id}
        if user_id and self.reader:
            user = self.reader.user_features(user_id)
            blocked |= user.seen | user.disliked
        neighbours = self._similar_many([item_id], k + len(blocked))[0]
        ids = [item for item, _ in neighbours]
        pool = Pool.of("co_occurrence", ids, self.catalog.rows(ids), [item_id] * len(ids))
        query = Query(user_id, k)
        return self._finish(self._request(pool, query, "", (blocked,)), "", query, None)[0]

    def trending(self, region: str, k: int) -> list[RankedItem]:
        pool = generate.listed("trending", self.snapshot.trending_in(region), k, self.catalog)
        query = Query("", k, region=region)
        return self._finish(self._request(pool, query, region, (), diverse=False), region, query, None)[0]

    def ranker_features(self, query: Query) -> tuple[UserFeatures | None, CandidateFeatures | None]:
        """The user's features and the ``RANKER_FEATURES`` rows of the candidates a learned ranker
        orders for ``query``; None for a user the store does not know, whom the blend ranks."""
        user, region, pool, _ = self.candidates(query)
        if user is None or user.is_new:
            return user, None
        return user, candidate_features(pool.candidates(), user, self.snapshot, region)

    # -- stages --------------------------------------------------------------------------

    def candidates(self, query: Query, user: UserFeatures | None = None
                   ) -> tuple[UserFeatures | None, str, Pool, Counter]:
        """The user's features (read unless given; None without a reader), the request's region,
        the candidates the ranking stage orders and how many each source drew."""
        if self.reader is None:
            user = None
        elif user is None:
            with self._stage("features"):
                user = self.reader.user_features(query.user_id)
        region = query.region or (user.profile["region"] if user else "")
        return user, region, *self._candidates(query, user, region)

    def _candidates(self, query: Query, user: UserFeatures | None, region: str) -> tuple[Pool, Counter]:
        """The pool and how many candidates each source drew (the shared lists' counts come with them).

        Every part runs in a stage of its own, so the stages' CPU adds up to the request's."""
        wanted = self._sources()
        with self._stage("candidates"):
            listed, listed_counts = generate.shared_lists(self.snapshot, self.config, wanted, region, self.catalog)
        if user is None or user.is_new:
            return listed, Counter(listed_counts)
        personal: dict[str, Pool] = {}
        if "co_occurrence" in wanted:
            with self._stage("co_occurrence"):
                recent = self._engaged(user, self.config.recent_items)
                if query.current_item_id:
                    recent = [query.current_item_id, *recent]
                personal["co_occurrence"] = generate.co_occurrence(
                    self._similar_many(recent, self.config.neighbours_per_item), recent, self.catalog)
        if "continue_watching" in wanted:
            with self._stage("candidates"):
                personal["continue_watching"] = generate.continue_watching(user, self.catalog)
        if self.model is not None and "two_tower" in wanted:
            with self._stage("user_tower"):
                device = query.device or user.profile["device"]
                history = self._engaged_timed(user, self.model.history_length)
                # Training ages each example's history at that example's log time: the log clock here.
                clock_ms = self.snapshot.log_clock_ms if query.request_time_ms is None else query.request_time_ms
                hour = self._log_hour() if query.request_time_ms is None else hour_of(query.request_time_ms)
                embedding = self.model.embed_user(query.user_id, history, region, device, hour, log_clock_ms=clock_ms)
            with self._stage("two_tower"):
                skip = (user.seen, user.disliked, frozenset(query.filters.exclude_item_ids))
                personal["two_tower"] = generate.two_tower(
                    *self.model.nearest(embedding, self.config.two_tower_candidates, self.catalog, skip))
        with self._stage("candidates"):
            # As the shared lists' counts: a source that drew nothing is not counted.
            found = {source: pool for source, pool in personal.items() if len(pool)}
            drawn = Counter(listed_counts) + Counter({source: len(pool) for source, pool in found.items()})
            return Pool.joined([listed, *found.values()]), drawn

    def _sources(self) -> frozenset[str]:
        """What to generate: a learned ranker weighs every source; the blend only those it weights."""
        ranker = self.model.ranker if self.model is not None else None
        return self.config.sources | RANKED_SOURCES if ranker else self.config.sources

    def _request(self, pool: Pool, query: Query, region: str, blocked: tuple[Collection[str], ...],
                 **options) -> PageRequest:
        allowed = ItemFilter(self.catalog, query.filters, region, blocked)
        return PageRequest(pool, allowed, query.k, popular_rows(self.snapshot, self.catalog, region), **options)

    def _finish(self, request: PageRequest, region: str, query: Query, user: UserFeatures | None
                ) -> tuple[list[RankedItem], bool]:
        """The page's explained items, and whether the filters left it short (then filled)."""
        with self._stage("page"):
            page, widened = compiled_page(self.catalog, self.config, request)
        with self._stage("explain"):
            nearest = None
            if self.model is not None and user is not None:
                nearest = nearest_engaged(self.model.closest, self._engaged(user, RECENT_FOR_EXPLANATIONS))
            items = explained(page, self.catalog.ids, self.snapshot.catalog, region, set(query.onboarding_categories),
                              nearest)
        return items, widened

    def _engaged(self, user: UserFeatures, n: int) -> list[str]:
        """``user.tower_history(n)``'s items: the co-occurrence seeds and the explanations."""
        return [item for item, _ in self._engaged_timed(user, n)]

    def _engaged_timed(self, user: UserFeatures, n: int) -> list[tuple[str, int]]:
        """``user.timed_tower_history(n)``: one pass over the history serves the co-occurrence seeds,
        the user tower and the explanations (each a prefix of the longest)."""
        memo = self._engaged_memo
        if memo is None or memo[0] is not user:
            longest = max(self.config.recent_items, RECENT_FOR_EXPLANATIONS,
                          self.model.history_length if self.model is not None else 0)
            memo = self._engaged_memo = (user, user.timed_tower_history(longest))
        return memo[1][:n]

    def _log_hour(self) -> int:
        """The hour of day of the log's clock: the snapshot's, so once per snapshot (a numpy call each)."""
        return self.snapshot.derived("log_hour", lambda: hour_of(self.snapshot.log_clock_ms))


class OfflineFunnels:
    """Funnels over one feature store and one registered model, built as ``kapparec serve`` builds
    them: for offline evaluation, which tries many configurations and rankers over the same store."""

    def __init__(self, reader: FeatureReader, version: ModelVersion):
        self.reader = reader
        self.model = ServingModel.load(version)
        # Shared by every configuration tried: neighbour lists depend on the features alone.
        self._neighbours = NeighbourCache(ttl_s=float("inf"))

    def funnel(self, config: FunnelConfig, model: ServingModel | None = None) -> Funnel:
        """The funnel under ``config``, with ``model`` (default: the registered one, with its ranker if any)."""
        return Funnel(self.reader, model or self.model, Snapshot.take(self.reader, config), config,
                      neighbours=self._neighbours)
