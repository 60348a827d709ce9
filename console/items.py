"""An item's page: its catalog entry, items similar to it with their co-occurrence support, and
its events per day as a chart."""

from __future__ import annotations

from dataclasses import dataclass

from console.charts import BarChart, bars
from console.clients import Clients
from kapparec.v1 import recommender_pb2 as pb
from serving.experiment_report import day_of

SIMILAR_SHOWN = 10
POPULARITY_DAYS = 30


@dataclass(frozen=True)
class ItemPage:
    item_id: str
    catalog: dict
    similar: list[tuple[pb.RecommendedItem, int]]  # each neighbour with its co-occurrence count
    days: list[tuple[str, int]]  # (day, events that day), oldest first
    chart: BarChart


def item_page(clients: Clients, item_id: str) -> ItemPage | None:
    """None when the catalog has no such item."""
    reader = clients.reader()
    entry = reader.catalog([item_id]).get(item_id)
    if entry is None:
        return None
    similar = list(clients.similar(item_id, SIMILAR_SHOWN).items)
    support = reader.cooccurrence_support(item_id, [item.item_id for item in similar])
    days = [(day_of(bucket), sum(per_type.values())) for bucket, per_type in reader.popularity_over_time(item_id, POPULARITY_DAYS)]
    return ItemPage(item_id, entry, [(item, support[item.item_id]) for item in similar], days, bars(days))

