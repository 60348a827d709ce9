"""The serving snapshot's refresh reads only what moved: the catalog only after the ``items`` topic did."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from featurestore import layout
from featurestore.definitions import Feature
from featurestore.reader import FeatureReader
from serving.catalog_arrays import CatalogArrays
from serving.config import FunnelConfig
from serving.snapshot import BY_CREATION, SETTLED_HOURS, Snapshot, by_creation, created_within
from streams import topics
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog
from tests.logs import produce_synthetic
from transforms.jobs import backfill


def test_a_refresh_rereads_the_catalog_only_when_the_items_position_moved(stack):
    produce_synthetic(stack.bootstrap, SyntheticLog(users=20, items=40, events=600, seed=3))
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    reader, config = FeatureReader(stack.redis_url), FunnelConfig()
    first = Snapshot.take(reader, config)
    assert Snapshot.take(reader, config, previous=first) is first  # nothing committed: the same snapshot
    offsets, catalog_key = layout.offsets_key(reader.version), layout.feature_key(reader.version, Feature.CATALOG, "")
    events_field, items_field = (layout.offset_field(topic, 0) for topic in (topics.EVENTS, topics.ITEMS))
    assert {events_field, items_field} <= set(reader.client.hkeys(offsets))

    reader.client.hincrby(offsets, events_field, 1)  # a commit of events alone
    after_events = Snapshot.take(reader, config, previous=first)
    assert after_events is not first and after_events.catalog is first.catalog
    assert after_events._derived[BY_CREATION] is first._derived[BY_CREATION]  # sorted once per catalog
    # Within the log clock's hour the settled trending hours are summed once (``serving.settled``).
    assert after_events._derived[SETTLED_HOURS] == first._derived[SETTLED_HOURS]
    assert all(after_events._derived[SETTLED_HOURS][scope] is settled for scope, settled in first._derived[SETTLED_HOURS].items())

    item = next(iter(first.catalog))
    reader.client.hset(catalog_key, item, reader.client.hget(catalog_key, item).replace('"title"', '"title_"', 1))
    reader.client.hincrby(offsets, items_field, 1)  # then one of the catalog
    after_items = Snapshot.take(reader, config, previous=after_events)
    assert after_items.catalog is not first.catalog and after_items.catalog[item] != first.catalog[item]


def test_items_with_and_without_a_release_year_are_served_alike(stack):
    log = SyntheticLog(users=20, items=40, events=600, seed=3)
    produce_synthetic(stack.bootstrap, log)
    undated, dated = log.catalog()[:2]
    with LogProducer(stack.bootstrap) as producer:  # a later, schema 2 version of one item
        producer.send_catalog(dated.model_copy(update={"release_year": 1995}))
        producer.flush()
    backfill(stack.bootstrap, stack.redis_url, progress=False)
    snapshot = Snapshot.take(FeatureReader(stack.redis_url), FunnelConfig())
    assert snapshot.catalog[dated.item_id]["release_year"] == 1995
    assert "release_year" not in snapshot.catalog[undated.item_id]
    arrays = CatalogArrays.of(snapshot.catalog)
    rows = arrays.rows([undated.item_id, dated.item_id])
    assert arrays.active[rows].all() and arrays.in_category[rows].any(axis=1).all()


_entries = st.fixed_dictionaries({"created_at": st.integers(0, 50)}, optional={"active": st.booleans()})


@given(catalog=st.dictionaries(st.text("abc", min_size=1, max_size=3), _entries, max_size=30),
       since=st.integers(-5, 55), span=st.integers(0, 30))
def test_the_new_items_of_a_window_are_the_catalog_scan_they_replace(catalog, since, span):
    until = since + span
    scanned = sorted(((item, float(entry["created_at"])) for item, entry in catalog.items()
                      if since <= entry["created_at"] <= until and entry.get("active", True)),
                     key=lambda pair: (-pair[1], pair[0]))
    assert created_within(by_creation(catalog), since, until) == scanned
