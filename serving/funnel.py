"""The recommendation funnel: candidates -> blend -> filters -> diversity -> exploration -> explanations.

One ``Funnel`` serves a feature version with a model (or none: then trending and popular
items). Every stage is a module of its own; this file only wires them in order and times them.
A page is never empty: a user the store has never seen gets a cold-start page, and when the
filters leave the page short, popular items that pass the filters fill it (``widened``).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from featurestore.reader import FeatureReader, UserFeatures
from serving import candidates as generate
from serving.config import FunnelConfig
from serving.diversity import diversify, first_category
from serving.explain import explanation
from serving.filters import Filters, ItemFilter, Passing
from serving.model import ServingModel, hour_of
from serving.neighbours import NeighbourCache
from serving.ranking import Blended, Scored, blend, blended, ordered, scores
from serving.snapshot import Snapshot


@dataclass(frozen=True)
class Query:
    user_id: str
    k: int = 20
    page: str = "home"
    region: str = ""
    device: str = ""
    current_item_id: str = ""
    filters: Filters = field(default_factory=Filters)
    onboarding_categories: tuple[str, ...] = ()
    # When the request is made, for the user tower's hour of day; None: now, on the log's clock.
    request_time_ms: int | None = None


class RankedItem(NamedTuple):
    item_id: str
    score: float
    source: str
    explanation: str
    title: str = ""


@dataclass(frozen=True)
class Page:
    items: list[RankedItem]
    served_from: str  # "full" | "degraded"
    widened: bool = False
    candidates: Counter = field(default_factory=Counter)  # how many candidates each source proposed


StageTimer = Callable[[str, float], None]
# A two-tower item is explained by the nearest of the user's this-many latest engagements.
RECENT_FOR_EXPLANATIONS = 10


class Funnel:
    def __init__(self, reader: FeatureReader | None, model: ServingModel | None, snapshot: Snapshot,
                 config: FunnelConfig, on_stage: StageTimer | None = None, neighbours: NeighbourCache | None = None):
        self.reader, self.model, self.snapshot, self.config = reader, model, snapshot, config
        self._on_stage = on_stage
        self._neighbours = neighbours

    def _similar(self, item_id: str, n: int) -> list[tuple[str, float]]:
        return self._similar_many([item_id], n)[0]

    def _similar_many(self, item_ids: list[str], n: int) -> list[list[tuple[str, float]]]:
        if self.reader is None:
            return [[] for _ in item_ids]
        if self._neighbours:
            return self._neighbours.similar_many(self.reader, item_ids, n)
        return self.reader.similar_many(item_ids, n)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self._on_stage:
            self._on_stage(name, time.perf_counter() - started)

    # -- the three read RPCs -----------------------------------------------------------

    def recommend(self, query: Query, user: UserFeatures | None = None) -> Page:
        """A personal page; ``reader`` None (Redis unreachable) serves the snapshot alone, degraded.

        ``user``: the user's features, when the caller has read them already through ``reader``.
        """
        user, region, pool, drawn = self.candidates(query, user)
        known = user is not None and not user.is_new
        boost = None if known else self._onboarding_boost(query, pool)
        ranker = self.model.ranker if self.model is not None and known else None
        with self._stage("rank"):
            learned = (functools.partial(ranker.rank, user=user, snapshot=self.snapshot, region=region)
                       if ranker else None)
            scored = scores(pool, self.config, boost, learned, shared=self._listed(region)[2])
            ranked = ordered(scored)
            # The new items in the order of ``ranked``, without reading the whole ranking down to
            # them (they rank low, and exploration looks for them on every page).
            ranked_fresh = ordered(scored, among=self._fresh())
        blocked = (user.seen | user.disliked) if user else set()
        page = self._finish(ranked, query, region, blocked, user, ranked_fresh=ranked_fresh)
        return Page(page.items, "full" if self.reader else "degraded", page.widened, drawn)

    def similar(self, item_id: str, k: int, user_id: str = "") -> list[RankedItem]:
        blocked = {item_id}
        if user_id and self.reader:
            user = self.reader.user_features(user_id)
            blocked |= user.seen | user.disliked
        neighbours = self._similar(item_id, k + len(blocked))
        pool = [generate.Candidate(item, "co_occurrence", rank, because=item_id) for rank, (item, _) in enumerate(neighbours)]
        return self._finish(blend(pool, self.config), Query(user_id, k), "", blocked, None).items

    def trending(self, region: str, k: int) -> list[RankedItem]:
        pool = generate.ranked("trending", self.snapshot.trending_in(region), k)
        return self._finish(blend(pool, self.config), Query("", k, region=region), region, set(), None,
                            diverse=False).items

    # -- stages --------------------------------------------------------------------------

    def candidates(self, query: Query, user: UserFeatures | None = None
                   ) -> tuple[UserFeatures | None, str, list[generate.Candidate], Counter]:
        """The user's features (read unless given; None without a reader), the request's region,
        the candidates the ranking stage orders and how many each source drew."""
        if self.reader is None:
            user = None
        elif user is None:
            with self._stage("features"):
                user = self.reader.user_features(query.user_id)
        region = query.region or (user.profile["region"] if user else "")
        return user, region, *self._candidates(query, user, region)

    def _candidates(self, query: Query, user: UserFeatures | None, region: str) -> tuple[list[generate.Candidate], Counter]:
        """The pool and how many candidates each source drew (the shared lists' counts come with them)."""
        wanted = self._sources()
        with self._stage("lists"):
            listed, listed_counts, _ = self._listed(region)
        pool, drawn = [*listed], Counter(listed_counts)
        if user is None or user.is_new:
            return pool, drawn
        personal: dict[str, list[generate.Candidate]] = {}
        if "co_occurrence" in wanted:
            recent = user.tower_history(self.config.recent_items)
            if query.current_item_id:
                recent = [query.current_item_id, *recent]
            with self._stage("co_occurrence"):
                personal["co_occurrence"] = generate.co_occurrence(
                    self._similar_many(recent, self.config.neighbours_per_item), recent)
        if "continue_watching" in wanted:
            personal["continue_watching"] = generate.continue_watching(user)
        if self.model is not None and "two_tower" in wanted:
            device = query.device or user.profile["device"]
            history = user.tower_history(self.model.history_length)
            with self._stage("two_tower"):
                personal["two_tower"] = generate.two_tower(
                    self.model, query.user_id, history, region, device,
                    self._log_hour() if query.request_time_ms is None else hour_of(query.request_time_ms),
                    self.config.two_tower_candidates)
        for source, found in personal.items():
            if found:  # as the shared lists' counts: a source that drew nothing is not counted
                pool += found
                drawn[source] += len(found)
        return pool, drawn

    def _sources(self) -> frozenset[str]:
        """What to generate: a learned ranker weighs every source; the blend only those it weights."""
        ranker = self.model.ranker if self.model is not None else None
        return self.config.sources | ranker.sources if ranker else self.config.sources

    def _listed(self, region: str) -> tuple[list[generate.Candidate], Counter, Blended]:
        """The shared lists' candidates for ``region``, their counts per source and their blend: the
        same for every user of the region (about half a pool), so computed once per snapshot."""
        config, wanted = self.config, self._sources()
        # Keyed by the config's identity, and the entry holds the config, so no other config can
        # take that identity while the entry lives: every knob of the blend is covered.
        _, *listed = self.snapshot.derived(
            ("lists", region, wanted, id(config)),
            lambda: (config, *self._list_candidates(region, config.list_candidates, wanted)))
        return tuple(listed)

    def _list_candidates(self, region: str, n: int, wanted: frozenset[str]
                         ) -> tuple[list[generate.Candidate], Counter, Blended]:
        lists = {"trending": self.snapshot.trending_in(region), "popular": self.snapshot.popular_in(region),
                 "new_item": self.snapshot.new_items}
        found = [candidate for source, ranking in lists.items() if source in wanted
                 for candidate in generate.ranked(source, ranking, n)]
        return found, Counter(candidate.source for candidate in found), blended(found, self.config)

    def _onboarding_boost(self, query: Query, pool: list[generate.Candidate]) -> dict[str, float]:
        """The candidates in the categories a new user chose score ``onboarding_boost`` times more."""
        chosen = set(query.onboarding_categories)
        if not chosen:
            return {}
        catalog = self.snapshot.catalog
        return {
            candidate.item_id: self.config.onboarding_boost
            for candidate in pool
            if chosen & set(catalog.get(candidate.item_id, {}).get("categories") or ())
        }

    def _finish(self, ranked: Iterable[Scored], query: Query, region: str, blocked: set[str], user: UserFeatures | None,
                *, ranked_fresh: Iterable[Scored] | None = None, diverse: bool = True) -> Page:
        """The page from ``ranked``; with ``ranked_fresh`` (the new items among ``ranked``, in its
        order) a share of it is kept for new items."""
        catalog = self.snapshot.catalog
        allowed = ItemFilter(catalog, query.filters, region, blocked)
        with self._stage("filter"):
            passing = Passing(ranked, allowed)
            first = passing.first(query.k)
            widened = len(first) < query.k
            # When widened, every passing item is in ``first``, and the fill follows them all.
            fill = self._popular_fill(first, allowed, region, query.k - len(first)) if widened else []
            passing.extend(fill)
        with self._stage("diversify"):
            page = diversify(passing, catalog, self.config.max_per_category if diverse else 0, query.k)
            if ranked_fresh is not None:
                fresh = self._fresh()
                passing_fresh = itertools.chain((item for item in ranked_fresh if allowed.allows(item.item_id)),
                                                (item for item in fill if item.item_id in fresh))
                page = self._explore(page, passing_fresh, query.k)
        with self._stage("explain"):
            items = self._explained(page, region, query, user)
        return Page(items, "full", widened)

    def _popular_fill(self, passing: list[Scored], allowed: ItemFilter, region: str, needed: int) -> list[Scored]:
        """Up to ``needed`` popular items that pass the filters, then catalog items that do: never an empty page."""
        taken = {item.item_id for item in passing}
        ordered = itertools.chain((item for item, _ in self.snapshot.popular_in(region)), self.snapshot.catalog)
        fill = []
        for item in ordered:
            if item not in taken and allowed.allows(item):
                taken.add(item)
                fill.append(Scored(item, 0.0, "popular", ""))
                if len(fill) == needed:
                    break
        return fill

    def _log_hour(self) -> int:
        """The hour of day of the log's clock: the snapshot's, so once per snapshot (a numpy call each)."""
        return self.snapshot.derived("log_hour", lambda: hour_of(self.snapshot.log_clock_ms))

    def _fresh(self) -> frozenset[str]:
        return self.snapshot.derived("fresh", lambda: frozenset(item for item, _ in self.snapshot.new_items))

    def _explore(self, page: list[Scored], passing_fresh: Iterable[Scored], k: int) -> list[Scored]:
        """Keep ``exploration_share`` of the page for new items: the best passing new items
        (``passing_fresh``, in rank order) that the per-category cap allows replace the lowest-ranked
        others, so new items get exposure even before anyone engaged with them."""
        fresh = self._fresh()
        wanted = round(k * self.config.exploration_share) - sum(1 for item in page if item.item_id in fresh)
        if not fresh or wanted <= 0:
            return page
        # Counted over the whole page before any item leaves it, so the cap still holds after.
        per_category = Counter(map(self._first_category, (item.item_id for item in page)))
        on_page, extra = {item.item_id for item in page}, []
        for item in passing_fresh:
            if item.item_id in on_page:
                continue
            category = self._first_category(item.item_id)
            if not self.config.max_per_category or per_category[category] < self.config.max_per_category:
                per_category[category] += 1
                extra.append(Scored(item.item_id, item.score, "new_item", ""))
                if len(extra) == wanted:
                    break
        replaceable = [item.item_id for item in page if item.item_id not in fresh]
        extra = extra[: len(replaceable)]
        leaving = set(replaceable[len(replaceable) - len(extra):]) if extra else set()
        return [item for item in page if item.item_id not in leaving] + extra

    def _first_category(self, item_id: str) -> str:
        return first_category(self.snapshot.catalog, item_id)

    def _explained(self, page: list[Scored], region: str, query: Query, user: UserFeatures | None) -> list[RankedItem]:
        """Each item with its line; a two-tower item names the nearest of the user's latest engagements
        (one matrix product for the whole page)."""
        catalog, onboarding = self.snapshot.catalog, set(query.onboarding_categories)
        because = [item.because for item in page]
        tower = [n for n, item in enumerate(page) if item.source == "two_tower"]
        if tower and self.model is not None and user is not None:
            nearest = self.model.closest([page[n].item_id for n in tower], user.tower_history(RECENT_FOR_EXPLANATIONS))
            for n, item_id in zip(tower, nearest):
                because[n] = item_id
        items = []
        for item, reason in zip(page, because):
            entry = catalog.get(item.item_id, {})
            because_title = catalog.get(reason, {}).get("title", "") if reason else ""
            text = explanation(item.source, because_title, entry, region, onboarding)
            items.append(RankedItem(item.item_id, round(item.score, 6), item.source, text, entry.get("title", "")))
        return items
