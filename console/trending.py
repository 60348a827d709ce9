"""The trending panel: serving's own trending lists, global and per region, each item with a
sparkline of its distinct users per hour from the store's hourly rankings."""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import TTLCache

from console.charts import Sparkline, sparkline
from console.clients import Clients
from featurestore.definitions import REGION_SCOPE_PREFIX

ITEMS_PER_LIST = 8
SPARKLINE_HOURS = 24
# Which regions have trending counts is a scan of the store's keys: too costly for every
# one-second refresh of every open page, and regions come and go over hours, not seconds.
_REGIONS: TTLCache = TTLCache(maxsize=1, ttl=30)


@dataclass(frozen=True)
class TrendingItem:
    rank: int
    item_id: str
    title: str
    users_this_hour: int
    sparkline: Sparkline


@dataclass(frozen=True)
class TrendingList:
    name: str  # "global" or a region
    items: list[TrendingItem]


def trending_lists(clients: Clients) -> list[TrendingList]:
    reader = clients.reader()
    regions = _REGIONS.get("regions")
    if regions is None:
        regions = _REGIONS["regions"] = reader.trending_regions()
    scopes = [("global", "", "global")] + [(region, region, f"{REGION_SCOPE_PREFIX}{region}") for region in regions]
    lists = []
    for name, region, scope in scopes:
        response = clients.trending(region, ITEMS_PER_LIST)
        hourly = reader.hourly_trending(scope, [item.item_id for item in response.items], SPARKLINE_HOURS)
        lists.append(TrendingList(name, [
            TrendingItem(item.rank, item.item_id, item.title or item.item_id, hourly[item.item_id][-1],
                         sparkline(hourly[item.item_id]))
            for item in response.items
        ]))
    return lists
