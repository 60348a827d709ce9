"""Golden funnel pages: a fixed synthetic store, a committed model, and a thousand varied requests.

The store is a backfill of a seeded synthetic log (the backfill is deterministic: see
``test_golden``). The model cannot be retrained to the same weights, so one small exported
two-tower is committed under ``tests/fixtures/funnel_model`` and loaded as serving loads a
registry version. The requests vary every input the funnel reads: region, age limit, category
filters, exclusions, the current item, onboarding categories for users the store has never seen,
page size, the request's hour, a second blend configuration and a learned ranker, plus
``SimilarItems`` and ``Trending`` pages.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featurestore.reader import FeatureReader
from kapparec.timeunits import HOUR_MS
from modelfiles.ranker import LearnedRanker
from modelfiles.registry import ModelVersion
from serving.config import FunnelConfig
from serving.filters import AGE_SCALE, Filters
from serving.funnel import Funnel, Query, RankedItem
from serving.model import ServingModel
from serving.neighbours import NeighbourCache
from serving.ranker import FEATURES
from serving.snapshot import Snapshot
from streams.synthetic import CATEGORIES, DEFAULT_REGIONS, SyntheticLog
from tests.logs import produce_synthetic
from transforms.jobs import backfill

FIXTURES = Path(__file__).with_name("fixtures")
MODEL_DIR = FIXTURES / "funnel_model"
PAGES_FILE = Path(__file__).with_name("golden") / "funnel_pages.jsonl.gz"
USERS = 1000
PAGE_SIZES = (5, 10, 20, 50)
DEFAULT_CONFIG = FunnelConfig()
# A blend unlike the default: a tighter cap, more exploration, co-occurrence ahead of the two-tower.
OTHER_CONFIG = FunnelConfig.from_overrides({"max_per_category": 2, "exploration_share": 0.25,
                                             "weights": {"co_occurrence": 1.5, "trending": 0.5}})


def golden_log() -> SyntheticLog:
    return SyntheticLog(users=USERS, items=300, events=30_000, seed=22)


def build_store(bootstrap: str, redis_url: str) -> FeatureReader:
    produce_synthetic(bootstrap, golden_log())
    backfill(bootstrap, redis_url, progress=False)
    return FeatureReader(redis_url)


def load_model() -> ServingModel:
    return ServingModel.load(ModelVersion("golden", MODEL_DIR, {}))


def seeded_ranker() -> LearnedRanker:
    """A ranker with fixed random weights: it exercises the learned ranking path, not a fitted one."""
    rng = np.random.default_rng(5)
    return LearnedRanker(FEATURES, rng.normal(size=len(FEATURES)) * 0.1, rng.uniform(0.5, 2.0, len(FEATURES)),
                         rng.normal(size=len(FEATURES)))


def queries(clock_ms: int) -> Iterator[tuple[str, Query]]:
    """One request per user (``kind`` names the funnel it goes to), varied by the user's index."""
    log = golden_log()
    for n in range(USERS):
        cold = n % 23 == 0
        user = f"cold-{n}" if cold else log.user_id(n)
        filters = Filters(
            include_categories=(CATEGORIES[n % len(CATEGORIES)],) if n % 11 == 0 else (),
            exclude_categories=(CATEGORIES[(n + 3) % len(CATEGORIES)],) if n % 13 == 0 else (),
            max_age_rating=AGE_SCALE[n % 3] if n % 7 == 0 else "",
            exclude_item_ids=tuple(log.item_id((n * 7 + j) % log.items) for j in range(5)) if n % 19 == 0 else (),
        )
        query = Query(
            user, k=PAGE_SIZES[n % len(PAGE_SIZES)],
            region=DEFAULT_REGIONS[n % len(DEFAULT_REGIONS)] if n % 3 == 0 else "",
            device="tv" if n % 29 == 0 else "",
            current_item_id=log.item_id(n % log.items) if n % 17 == 0 else "",
            filters=filters,
            onboarding_categories=(CATEGORIES[n % len(CATEGORIES)], CATEGORIES[(n + 1) % len(CATEGORIES)]) if cold else (),
            request_time_ms=clock_ms - (n % 24) * HOUR_MS,
        )
        kind = "ranker" if n % 5 == 0 else "other" if n % 5 == 1 else "default"
        yield kind, query


def funnels(reader: FeatureReader, model: ServingModel) -> dict[str, Funnel]:
    snapshots = {id(config): Snapshot.take(reader, config) for config in (DEFAULT_CONFIG, OTHER_CONFIG)}
    neighbours = NeighbourCache(ttl_s=float("inf"))

    def funnel(config: FunnelConfig, served: ServingModel) -> Funnel:
        return Funnel(reader, served, snapshots[id(config)], config, neighbours=neighbours)

    return {"default": funnel(DEFAULT_CONFIG, model), "other": funnel(OTHER_CONFIG, model),
            "ranker": funnel(DEFAULT_CONFIG, model.with_ranker(seeded_ranker()))}


def pages(reader: FeatureReader, model: ServingModel) -> list[dict]:
    """Every golden page, as JSON-ready records."""
    served = funnels(reader, model)
    clock_ms = served["default"].snapshot.log_clock_ms
    records = []
    for n, (kind, query) in enumerate(queries(clock_ms)):
        page = served[kind].recommend(query)
        records.append({"rpc": "recommend", "n": n, "kind": kind, "served_from": page.served_from,
                        "widened": page.widened, "candidates": dict(sorted(page.candidates.items())),
                        "items": _items(page.items)})
    log = golden_log()
    for n in range(0, USERS, 25):
        user = log.user_id(n + 1) if n % 50 == 0 else ""
        items = served["default"].similar(log.item_id(n % log.items), PAGE_SIZES[n % len(PAGE_SIZES)], user)
        records.append({"rpc": "similar", "n": n, "items": _items(items)})
    for region in ("", *DEFAULT_REGIONS, "nowhere"):
        records.append({"rpc": "trending", "region": region, "items": _items(served["other"].trending(region, 20))})
    return records


def _items(items: list[RankedItem]) -> list[list]:
    return [[item.item_id, item.score, item.source, item.explanation, item.title] for item in items]


def write_pages(records: list[dict]) -> None:
    # mtime 0: the same pages give the same bytes, so a rewrite that changes nothing shows no diff.
    with gzip.GzipFile(PAGES_FILE, "wb", mtime=0) as out:
        out.write("".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode())


def read_pages() -> list[dict]:
    with gzip.open(PAGES_FILE, "rt") as lines:
        return [json.loads(line) for line in lines]
