"""The funnel's pure stages, one by one: blend, filters, diversity, explanations, config validation,
each column stage beside a plain one-item-at-a-time reference."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prometheus_client

from kapparec.errors import UsageError
from serving import metrics
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.diversity import capped
from serving.explain import explanation
from serving.filters import ItemFilter
from serving.funnel import Funnel
from serving.impressions import Impression, impression
from serving.ranking import ranking
from serving.request import SOURCES, Candidate, Filters, Pool, Query
from serving.snapshot import Snapshot
from streams.schema import ImpressionEvent, ShownItem, encode

CATALOG = {
    "a": {"categories": ["comedy"], "regions": [], "age_rating": "G", "active": True},
    "b": {"categories": ["comedy"], "regions": ["eu"], "age_rating": "R", "active": True},
    "c": {"categories": ["drama", "comedy"], "regions": ["us"], "age_rating": "PG", "active": True},
    "d": {"categories": ["drama"], "regions": [], "age_rating": "PG-13", "active": False},
    "e": {"categories": ["horror"], "regions": [], "age_rating": None, "active": True},
}


def ranked_ids(ranked, catalog: CatalogArrays) -> list[str]:
    return [catalog.ids[row] for row in ranked.rows.tolist()]


def test_blend_adds_rank_credits_across_sources_and_names_the_strongest():
    config = FunnelConfig(weights={"two_tower": 1.0, "trending": 0.4}, rank_offset=1.0)
    catalog = CatalogArrays.of({"x": {"categories": ["a"]}, "y": {"categories": ["b"]}})
    candidates = [Candidate("x", "two_tower", 0), Candidate("y", "two_tower", 1, because="h"),
                  Candidate("y", "trending", 0), Candidate("gone", "trending", 1)]
    pool = Pool.of_candidates(candidates, catalog.rows([c.item_id for c in candidates]))
    ranked = ranking(pool, catalog, config)
    assert ranked_ids(ranked, catalog) == ["x", "y"]  # an item off the catalog is not ranked
    assert ranked.scores[0] == pytest.approx(1.0) and ranked.scores[1] == pytest.approx(1.0 / 2 + 0.4)
    # 0.5 from two_tower beats trending's 0.4
    assert (SOURCES[ranked.sources[1]], ranked.reason(1)) == ("two_tower", "h")
    assert ranked_ids(ranking(pool, catalog, config, boosted=("b",)), catalog) == ["y", "x"]


def test_filters_cover_activity_region_age_categories_exclusions_and_blocked_items():
    catalog = CatalogArrays.of(CATALOG)

    def allowed(filters=Filters(), region="", blocked=()):
        rows = catalog.rows([*CATALOG, "unknown"])
        mask = ItemFilter(catalog, filters, region, (set(blocked),)).mask(rows)
        return sorted(item for item, passes in zip([*CATALOG, "unknown"], mask.tolist()) if passes)

    assert allowed() == ["a", "b", "c", "e"]  # d is inactive, "unknown" has no catalog entry
    assert allowed(region="eu") == ["a", "b", "e"]
    assert allowed(region="mars") == ["a", "e"]  # a region no item lists: only items listing none
    assert allowed(Filters(max_age_rating="PG")) == ["a", "c"]  # an unrated item passes no age limit
    assert allowed(Filters(include_categories=("comedy",), exclude_categories=("drama",))) == ["a", "b"]
    assert allowed(Filters(exclude_item_ids=("a",)), blocked={"b"}) == ["c", "e"]


def test_the_model_proposes_as_many_nearest_items_when_most_of_them_are_blocked():
    """A user who has seen most of their nearest items still gets a full two-tower pool, of the
    next nearest: the index is asked for as many more as the blocked items could remove."""
    from tests.funnel_pages import load_model

    model = load_model()
    ids = model._index.ids.tolist()
    catalog = CatalogArrays.of({item: {"categories": [], "regions": [], "active": True} for item in ids})
    embedding = model.embed_user("u1", [(ids[0], 0), (ids[1], 0)], "eu", "tv", 3, log_clock_ms=0)
    everything, _, _ = model.nearest(embedding, len(ids), catalog)
    seen, disliked = frozenset(everything[0:30:2]), frozenset(everything[1:7:2])
    excluded = frozenset(everything[40:45])
    nearest, rows, scores = model.nearest(embedding, 20, catalog, (seen, disliked, excluded))
    assert nearest == [item for item in everything if item not in seen | disliked | excluded][:20]
    assert [catalog.ids[row] for row in rows.tolist()] == nearest and list(scores) == sorted(scores, reverse=True)
    assert model.nearest(embedding, 20, catalog)[0] == everything[:20]


def test_diversity_caps_a_category_then_tops_the_page_up_in_rank_order():
    categories = np.array([1, 1, 2, 3])  # a, b: comedy; c: drama; e: horror
    assert capped(categories, max_per_category=1, k=3).tolist() == [0, 2, 3]
    assert capped(categories, max_per_category=1, k=4).tolist() == [0, 2, 3, 1]
    assert capped(categories, max_per_category=0, k=2).tolist() == [0, 1]


def _reference_capped(categories: list[int], max_per_category: int, k: int) -> list[int]:
    """The cap as documented, one item at a time."""
    page, held_back, per_category = [], [], Counter()
    for n, category in enumerate(categories):
        if per_category[category] < max_per_category:
            per_category[category] += 1
            page.append(n)
            if len(page) == k:
                return page
        else:
            held_back.append(n)
    return page + held_back[: k - len(page)]


@settings(max_examples=200, deadline=None)
@given(categories=st.lists(st.integers(0, 5), max_size=80), cap=st.integers(1, 4), k=st.integers(1, 40))
def test_the_cap_by_running_counts_is_the_one_at_a_time_cap(categories, cap, k):
    assert capped(np.array(categories, dtype=np.int64), cap, k).tolist() == _reference_capped(categories, cap, k)


def test_every_source_has_an_explanation():
    entry = {"categories": ["comedy"]}
    assert explanation("co_occurrence", "Heat", entry, "", set()) == "Because you watched Heat"
    assert explanation("two_tower", "", entry, "", set()) == "Picked for your taste"
    assert explanation("trending", "", entry, "eu", set()) == "Trending in your region"
    assert explanation("trending", "", entry, "", set()) == "Trending now"
    assert explanation("popular", "", {"categories": ["drama", "comedy"]}, "", {"comedy"}) == "Popular in comedy"
    assert explanation("new_item", "", entry, "", set()) == "New this week"
    assert explanation("continue_watching", "", entry, "", set()) == "Continue watching"


def test_a_bad_override_is_one_clear_usage_error():
    assert FunnelConfig.from_overrides({"max_per_category": 5}).max_per_category == 5
    assert FunnelConfig.from_overrides({"weights": {"trending": 1.5}}).weights["two_tower"] == 1.0
    for bad in ({"max_per_category": -1}, {"weights": {"psychic": 1.0}}, {"colour": "red"}):
        with pytest.raises(UsageError):
            FunnelConfig.from_overrides(bad)


def test_exploration_gives_new_items_room_within_the_category_cap():
    catalog = {f"d{n}": {"categories": ["drama"], "active": True} for n in range(6)}
    catalog |= {f"m{n}": {"categories": ["music"], "active": True} for n in range(6)}
    catalog |= {"h0": {"categories": ["horror"], "active": True}}
    popular = [(item, 1.0) for item in ("d0", "d1", "d2", "d3", "d4", "d5", "m5")]
    snapshot = Snapshot("v1", 0, catalog, {"global": popular}, {"global": popular},
                        new_items=[("m0", 9.0), ("m1", 8.0), ("m2", 7.0), ("h0", 6.0)])
    config = FunnelConfig(max_per_category=2, exploration_share=0.5, weights={"popular": 1.0, "trending": 1.0})
    page = Funnel(None, None, snapshot, config).recommend(Query("new-user", k=6)).items
    by_category = Counter(catalog[item.item_id]["categories"][0] for item in page)
    new = {item.item_id for item in page if item.source == "new_item"}
    assert len(page) == 6 and {"m0", "h0"} <= new
    # More new music would break the cap, so exploration stops at two; drama's third item is the
    # top-up of a page the cap left short, which diversity allows.
    assert by_category == {"drama": 3, "music": 2, "horror": 1}


def _reference_ranking(pool, config, boost):
    """The blend as documented, by a plain route: each item's summed credits, the first candidate of its
    largest credit, best score first and ties by item id."""
    totals, best = {}, {}
    for candidate in pool:
        credit = config.weights.get(candidate.source, 0.0) / (config.rank_offset + candidate.rank)
        totals[candidate.item_id] = totals.get(candidate.item_id, 0.0) + credit
        if candidate.item_id not in best or credit > best[candidate.item_id][0]:
            best[candidate.item_id] = (credit, candidate)
    scored = [(item, total * boost.get(item, 1.0), best[item][1].source, best[item][1].because)
              for item, total in totals.items()]
    return sorted(scored, key=lambda s: (-s[1], s[0]))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), boosted=st.booleans())
def test_the_blend_in_columns_and_its_tie_order_are_the_plain_python_blend(seed, boosted):
    # Most items come from one candidate, and trending and new items weigh the same, so ties are common;
    # the sums must be the same floats as a left-to-right sum, or ties would order differently.
    rng = random.Random(seed)
    config = FunnelConfig(weights={"two_tower": 1.0, "co_occurrence": 0.6, "trending": 0.3, "popular": 0.15,
                                   "new_item": 0.3}, rank_offset=10.0)
    ids = [f"i{n}" for n in range(300)]
    catalog = CatalogArrays.of({item: {"categories": [f"c{n % 7}"]} for n, item in enumerate(rng.sample(ids, 300))})
    candidates = [Candidate(f"i{rng.randrange(300)}", source, rank, because=f"h{rng.randrange(3)}")
                  for source in ("trending", "popular", "new_item", "two_tower", "co_occurrence") for rank in range(40)]
    rng.shuffle(candidates)
    chosen = ("c0", "c3") if boosted else None
    boost = {item: 2.0 for item in ids if catalog.in_any(catalog.rows([item]), chosen)[0]} if boosted else {}
    expected = _reference_ranking(candidates, config, boost)
    ranked = ranking(Pool.of_candidates(candidates, catalog.rows([c.item_id for c in candidates])), catalog,
                     FunnelConfig.from_overrides({"onboarding_boost": 2.0}, config), chosen)
    got = [(catalog.ids[row], score, SOURCES[source], ranked.reason(n))
           for n, (row, score, source) in enumerate(zip(ranked.rows.tolist(), ranked.scores.tolist(),
                                                        ranked.sources.tolist()))]
    assert got == expected
    assert len({s[1] for s in expected}) < len(expected)  # ties were there to order


@settings(max_examples=100, deadline=None)
@given(amounts=st.lists(st.floats(0, 2.0) | st.sampled_from(metrics.LATENCY_BUCKETS), max_size=60))
def test_queued_metric_updates_export_what_direct_updates_export(amounts):
    # Requests queue their updates (serving/metrics.py); a flush must leave what observe and inc leave.
    def twins(registry):
        histogram = prometheus_client.Histogram("latency", "l", ["rpc"], buckets=metrics.LATENCY_BUCKETS, registry=registry)
        return histogram.labels("r"), prometheus_client.Counter("calls", "c", ["rpc"], registry=registry).labels("r")

    direct, queued = prometheus_client.CollectorRegistry(), prometheus_client.CollectorRegistry()
    histogram, counter = twins(direct)
    for amount in amounts:
        histogram.observe(amount)
        counter.inc()
    histogram, counter = (metrics.Deferred(metric) for metric in twins(queued))
    for amount in amounts:
        histogram.observe(amount)
        counter.inc()
    metrics.flush()

    def samples(registry):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect()
                for s in family.samples if not s.name.endswith("_created")}

    assert samples(queued).keys() == samples(direct).keys()
    for name, value in samples(direct).items():
        assert samples(queued)[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name

ID_TEXT = st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",), min_codepoint=0x21),
                  min_size=1, max_size=40).filter(lambda text: "\x7f" not in text)


@settings(max_examples=300, deadline=None)
@given(request_id=st.text(min_size=1, max_size=40), user_id=ID_TEXT, event_time=st.integers(0, 2**53),
       bucket=st.text(max_size=30), model_version=st.text(max_size=30), served_from=st.sampled_from(["full", "cached", "degraded"]),
       items=st.lists(st.tuples(ID_TEXT, st.sampled_from(["two_tower", "popular", "new_item"])), max_size=25))
def test_an_impression_record_is_byte_for_byte_the_schemas_encoding(request_id, user_id, event_time, bucket, model_version,
                                                                    served_from, items):
    shown = [(item, position, source) for position, (item, source) in enumerate(items, start=1)]
    record = impression(request_id, user_id, event_time, bucket, model_version, served_from, shown)
    event = ImpressionEvent(request_id=request_id, user_id=user_id, event_time=event_time, bucket=bucket,
                            model_version=model_version, served_from=served_from,
                            items=tuple(ShownItem(item_id=i, position=p, source=s) for i, p, s in shown))
    assert record == Impression(user_id, encode(event))
