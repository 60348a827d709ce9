"""The funnel's pages for a fixed store, model and set of requests stay exactly as recorded.

The golden pages were first written by the funnel at commit 39cd351 (per-candidate Python,
before the vectorised core): same items, order, scores, sources and explanations. Regenerate
them (``KAPPAREC_WRITE_GOLDEN=1``) only for a deliberate change of what the funnel serves, in a
commit of its own that says why; the model fixture is rewritten too only when it is missing.
"""

from __future__ import annotations

import os

import pytest

import training  # noqa: F401 - legacy Keras before TensorFlow loads
from tests import funnel_pages
from tests.logs import empty_log

WRITE = os.environ.get("KAPPAREC_WRITE_GOLDEN") == "1"


def write_model_fixture() -> None:
    from tests.test_two_tower import PARAMS, synthetic_data
    from training.data import retrieval_positives
    from training.two_tower.export import export_two_tower
    from training.two_tower.train import TwoTowerRecommender

    interactions, catalog = synthetic_data(funnel_pages.golden_log())
    model = TwoTowerRecommender(PARAMS)
    model.fit(retrieval_positives(interactions), catalog, events=interactions)
    users = sorted(set(interactions.user_ids.tolist()))
    export_two_tower(model, funnel_pages.MODEL_DIR, catalog.item_ids, users[:50])


@pytest.fixture(scope="module")
def golden_store(session_stack):
    empty_log(session_stack.bootstrap)
    session_stack.redis().flushall()
    return funnel_pages.build_store(session_stack.bootstrap, session_stack.redis_url)


def test_the_funnel_serves_the_golden_pages(golden_store):
    if WRITE and not funnel_pages.MODEL_DIR.exists():
        write_model_fixture()
    records = funnel_pages.pages(golden_store, funnel_pages.load_model())
    if WRITE:
        funnel_pages.write_pages(records)
    expected = funnel_pages.read_pages()
    assert len(records) == len(expected)
    differing = [(got, want) for got, want in zip(records, expected) if got != want]
    assert not differing, f"{len(differing)} pages differ; the first: {first_difference(*differing[0])}"


def first_difference(got: dict, want: dict) -> str:
    for field in sorted(want):
        if got.get(field) != want[field]:
            if field == "items":
                at = next((n for n, (g, w) in enumerate(zip(got["items"], want["items"])) if g != w),
                          min(len(got["items"]), len(want["items"])))
                return (f"{want.get('rpc')} #{want.get('n')}: item {at} of {len(want['items'])}: "
                        f"{got['items'][at:at + 2]} instead of {want['items'][at:at + 2]}")
            return f"{want.get('rpc')} #{want.get('n')}: {field} {got.get(field)} instead of {want[field]}"
    return "none"
