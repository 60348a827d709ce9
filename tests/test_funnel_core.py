"""The Rust funnel core serves exactly the numpy reference's pages (``serving.page``) on random
catalogs, pools, filters and configs: the same rows in the same order, the same float scores,
sources, naming candidates and widening. Small value sets make ties in scores and credits common,
so the tie rules are exercised, not only the clear cases."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.catalog_arrays import AGE_SCALE, CatalogArrays
from serving.config import FunnelConfig
from serving.filters import ItemFilter
from serving.page import PageRequest, compiled_page, reference_page
from serving.request import SOURCES, Filters, Pool

CATEGORIES = ("comedy", "drama", "horror", "kids")
REGIONS = ("eu", "us", "asia")
IDS = [f"i{n:02d}" for n in range(40)]


@st.composite
def catalogs(draw) -> dict[str, dict]:
    ids = draw(st.lists(st.sampled_from(IDS), min_size=12, max_size=36, unique=True))  # catalog order is not id order
    entry = st.fixed_dictionaries({
        "categories": st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3, unique=True) | st.just([]),
        "regions": st.just([]) | st.lists(st.sampled_from(REGIONS), max_size=2, unique=True),
        "age_rating": st.sampled_from((*AGE_SCALE, None, "X")),
        "active": st.sampled_from((True, True, True, False)),
    })
    return {item: draw(entry) for item in ids}


@st.composite
def pools(draw, catalog: CatalogArrays) -> Pool:
    size = draw(st.integers(0, 80) | st.integers(30, 80))  # mostly longer than a page
    ids = draw(st.lists(st.sampled_from([*IDS, "gone"]), min_size=size, max_size=size))  # "gone": off the catalog
    sources = draw(st.lists(st.integers(0, len(SOURCES) - 1), min_size=size, max_size=size))
    ranks = draw(st.lists(st.integers(0, 4), min_size=size, max_size=size))
    because = draw(st.lists(st.sampled_from(["", "h1", "h2"]), min_size=size, max_size=size))
    return Pool(ids, catalog.rows(ids), np.array(sources, dtype=np.int64), np.array(ranks, dtype=np.int64), because,
                np.zeros(size))


def configs() -> st.SearchStrategy[FunnelConfig]:
    weight = st.sampled_from([0.0, 0.15, 0.5, 1.0])
    return st.builds(
        FunnelConfig,
        weights=st.fixed_dictionaries({source: weight for source in SOURCES}),
        rank_offset=st.sampled_from([1.0, 2.5, 10.0]),
        max_per_category=st.integers(0, 3),
        exploration_share=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
        onboarding_boost=st.sampled_from([1.0, 2.0]),
    )


def filters() -> st.SearchStrategy[Filters]:
    def some(values) -> st.SearchStrategy[tuple]:
        return st.just(()) | st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True).map(tuple)

    return st.builds(Filters, include_categories=some(CATEGORIES), exclude_categories=some((*CATEGORIES, "unlisted")),
                     max_age_rating=st.just("") | st.sampled_from(AGE_SCALE),
                     exclude_item_ids=some(IDS))


def learned_rankers(draw, pool: Pool):
    """A learned ranker's output for ``pool``: its distinct ids (off-catalog ones too), tied scores,
    and each one's first position."""
    firsts = {}
    for position, item in enumerate(pool.ids):
        firsts.setdefault(item, position)
    scores = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=len(firsts), max_size=len(firsts)))
    output = (list(firsts), np.array(scores), np.array(list(firsts.values()), dtype=np.int64))
    return lambda _pool: output


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_compiled_core_serves_the_reference_pages(data):
    catalog = CatalogArrays.of(data.draw(catalogs()))
    pool = data.draw(pools(catalog))
    config = data.draw(configs())
    region = data.draw(st.just("") | st.sampled_from(REGIONS + ("nowhere",)))
    blocked = tuple(set(data.draw(st.lists(st.sampled_from(IDS), max_size=6))) for _ in range(data.draw(st.integers(0, 2))))
    fresh = np.zeros(len(catalog), dtype=bool)  # few new items, so a page often lacks its share of them
    fresh[catalog.rows(data.draw(st.lists(st.sampled_from(catalog.ids), min_size=1, max_size=4)))] = True
    popular = catalog.rows(data.draw(st.lists(st.sampled_from([*IDS, "gone"]), max_size=10, unique=True)))
    # Half the requests unfiltered: a page longer than k is what the cap and exploration work on.
    request_filters = data.draw(filters()) if data.draw(st.booleans()) else Filters()
    request = PageRequest(
        pool, ItemFilter(catalog, request_filters, region, blocked), data.draw(st.integers(1, 8) | st.integers(1, 15)), popular,
        learned=learned_rankers(data.draw, pool) if data.draw(st.booleans()) else None,
        boosted=data.draw(st.one_of(st.none(), st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2).map(tuple))),
        diverse=data.draw(st.booleans()),
        fresh=fresh if data.draw(st.booleans()) else None,
    )
    assert_same_pages(catalog, config, request)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_compiled_core_explores_and_caps_as_the_reference(data):
    """Unfiltered pools longer than the page, with a few new items: the cases that reach exploration's
    replacement and the cap's top-up, which random filters mostly empty before."""
    catalog = CatalogArrays.of(data.draw(catalogs()))
    ids = data.draw(st.permutations(catalog.ids))
    ids = ids + data.draw(st.lists(st.sampled_from(ids), max_size=20))  # some items from two sources
    pool = Pool(ids, catalog.rows(ids), np.array(data.draw(st.lists(st.integers(0, len(SOURCES) - 1), min_size=len(ids),
                                                                      max_size=len(ids))), dtype=np.int64),
                np.arange(len(ids), dtype=np.int64) % 7, [""] * len(ids), np.zeros(len(ids)))
    config = data.draw(configs()).model_copy(update={"exploration_share": data.draw(st.sampled_from([0.25, 0.5])),
                                                     "max_per_category": data.draw(st.integers(1, 3))})
    fresh = np.zeros(len(catalog), dtype=bool)
    fresh[catalog.rows(data.draw(st.lists(st.sampled_from(catalog.ids), min_size=1, max_size=5)))] = True
    request = PageRequest(pool, ItemFilter(catalog, Filters(), "", ()), data.draw(st.integers(1, 10)), catalog.rows([]),
                          fresh=fresh)
    assert_same_pages(catalog, config, request)


def assert_same_pages(catalog: CatalogArrays, config: FunnelConfig, request: PageRequest) -> None:
    want, want_widened = reference_page(catalog, config, request)
    got, got_widened = compiled_page(catalog, config, request)
    assert got_widened == want_widened
    assert got.rows.tolist() == want.rows.tolist()
    assert got.scores.tolist() == want.scores.tolist()  # the same floats, not approximately
    assert got.sources.tolist() == want.sources.tolist()
    assert got.because.tolist() == want.because.tolist()
