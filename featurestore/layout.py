"""The Redis key layout, in one place.

```
kr:current                          STRING  the version readers use, e.g. "v7"
kr:previous                         STRING  the version before it, kept for rollback
kr:version_seq                      STRING  counter for new version ids
kr:versions                         HASH    version -> JSON {state, created_at, source}
kr:lock:stream                      STRING  the writer lease of the one continuous job: "<fencing token>@<holder>"
kr:lock:stream:fence                STRING  the fencing token counter
kr:batch_seq                        STRING  counter for batch ids (stop and progress keys)
kr:dlq:written_to                   ZSET    "topic/partition" -> the offset past its last dead letter
                                            written (streams/dlq.py)
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

``merge.lua`` writes most of these keys, so it takes what it needs of them from here
(``merge_contract``, handed to it as a generated header) rather than restating them.
"""

from __future__ import annotations

from featurestore.definitions import Feature, Op
from streams import topics

ROOT = "kr"
CURRENT = f"{ROOT}:current"
PREVIOUS = f"{ROOT}:previous"
VERSION_SEQ = f"{ROOT}:version_seq"
VERSIONS = f"{ROOT}:versions"
STREAM_LOCK = f"{ROOT}:lock:stream"
FENCE_COUNTER = f"{STREAM_LOCK}:fence"
BATCH_SEQ = f"{ROOT}:batch_seq"
# One score per partition, not a member per letter: a partition is read in order (see streams/dlq.py).
DLQ_WRITTEN = f"{ROOT}:dlq:written_to"

EMPTY_ENTITY = "_"
KEY_SEPARATOR = ":"
LATEST_SEPARATOR = "\t"
# A distinct's field is "member|actor".
DISTINCT_SEPARATOR = "|"
# Separates the parts of a mutation's value in a commit (merge.lua); ids never contain this control byte.
STAGE_SEPARATOR = "\x1f"

REDIS_TYPE = {Op.COUNT: "hash", Op.MAX: "hash", Op.LATEST: "hash", Op.ADD: "set", Op.TOP: "zset",
              Op.DISTINCT: "hash", Op.TALLY: "zset"}

# Keys of a version that are bookkeeping, not features.
OFFSETS = "offsets"
EXPIRY_INDEX = "expiry"
CLOSING_INDEX = "closing"
# A distinct's ranking is the feature of this name beside it (``trending`` -> ``trending_rank``).
RANKING_SUFFIX = "_rank"


def version_prefix(version: str) -> str:
    return f"{ROOT}{KEY_SEPARATOR}{version}{KEY_SEPARATOR}"


def feature_key(version: str, feature: str, entity: str) -> str:
    return f"{version_prefix(version)}{feature}{KEY_SEPARATOR}{entity or EMPTY_ENTITY}"


def offsets_key(version: str) -> str:
    return f"{version_prefix(version)}{OFFSETS}"


def offset_field(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def merge_contract() -> dict[str, object]:
    """What ``merge.lua`` needs of this layout: the op names and their Redis types, the separators,
    the indexes' names and the log clock's key (below a version's prefix)."""
    ops = {name: value for name, value in vars(Op).items() if name.isupper()}
    return {
        "OP": ops,
        "TYPE": {op: REDIS_TYPE[op] for op in ops.values()},
        "KEY_SEPARATOR": KEY_SEPARATOR,
        "LATEST_SEPARATOR": LATEST_SEPARATOR,
        "STAGE_SEPARATOR": STAGE_SEPARATOR,
        "DISTINCT_SEPARATOR": DISTINCT_SEPARATOR,
        "EXPIRY_INDEX": EXPIRY_INDEX,
        "CLOSING_INDEX": CLOSING_INDEX + KEY_SEPARATOR,
        "RANKING_SUFFIX": RANKING_SUFFIX,
        # The events topic's high water (``Feature.HIGH_WATER``) is the log clock that compaction follows.
        "CLOCK": Feature.HIGH_WATER + KEY_SEPARATOR + topics.EVENTS,
    }
