"""The Redis key layout, in one place.

```
kr:current                          STRING  the version readers use, e.g. "v7"
kr:previous                         STRING  the version before it, kept for rollback
kr:version_seq                      STRING  counter for new version ids
kr:versions                         HASH    version -> JSON {state, created_at, source}
kr:lock:stream                      STRING  the writer lease of the one continuous job: "<fencing token>@<holder>"
kr:lock:stream:fence                STRING  the fencing token counter
kr:dlq:written                      SET     source positions already dead-lettered (streams/dlq.py)
kr:<v>:<feature>:<entity>           HASH | SET | ZSET, by the feature's merge op:
                                      count, max, latest -> HASH (field -> value)
                                      add               -> SET  (members)
                                      top               -> ZSET (member -> score)
                                      distinct          -> HASH, and a ZSET ranking beside it
                                      tally             -> ZSET (member -> summed score)
kr:<v>:expiry                       ZSET    windowed key -> its expiry in log time (compacted past it)
kr:<v>:closing:<partition>          ZSET    session window key -> the high water of that events
                                            partition at which it closes (deleted then)
kr:<v>:offsets                      HASH    "topic/partition" -> next offset to read
```

``latest`` values are stored as ``<order>\\t<payload>`` so the merge can compare orders.
An empty entity is written ``_``. Keys hold no other structure, so a dump is a scan.
"""

from __future__ import annotations

from featurestore.definitions import Op

ROOT = "kr"
CURRENT = f"{ROOT}:current"
PREVIOUS = f"{ROOT}:previous"
VERSION_SEQ = f"{ROOT}:version_seq"
VERSIONS = f"{ROOT}:versions"
STREAM_LOCK = f"{ROOT}:lock:stream"

EMPTY_ENTITY = "_"
LATEST_SEPARATOR = "\t"
# Separates the parts of a mutation's value in a commit (merge.lua); ids never contain this control byte.
STAGE_SEPARATOR = "\x1f"

REDIS_TYPE = {Op.COUNT: "hash", Op.MAX: "hash", Op.LATEST: "hash", Op.ADD: "set", Op.TOP: "zset",
              Op.DISTINCT: "hash", Op.TALLY: "zset"}

# Keys of a version that are bookkeeping, not features.
OFFSETS = "offsets"


def version_prefix(version: str) -> str:
    return f"{ROOT}:{version}:"


def feature_key(version: str, feature: str, entity: str) -> str:
    return f"{version_prefix(version)}{feature}:{entity or EMPTY_ENTITY}"


def offsets_key(version: str) -> str:
    return f"{version_prefix(version)}{OFFSETS}"


def offset_field(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"
