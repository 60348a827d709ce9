"""A user's features read only when they changed: one round trip whether they did or not.

The request path caches a page per user and request, valid while the user's stamp (the sizes and
ends of HISTORY and SEEN, the size of DISLIKED, the PROFILE) is unchanged. Reading the stamp first
and the features after a miss costs two round trips; reading the features first reads SEEN (up
to thousands of items) and HISTORY for every hit. ``user_read.lua`` compares in Redis and sends
the features only on a miss.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from redis.commands.core import Script

from featurestore import layout
from featurestore import reader as stored
from featurestore.definitions import PROFILE_FIELDS, Feature
from featurestore.reader import FeatureReader, UserFeatures

_SCRIPT_TEXT = Path(__file__).with_name("user_read.lua").read_text()
# Stamp fields before the profile's: history size, newest history member, seen size, oldest seen member, disliked size.
_COUNTS = 5
_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def user_features_unless(reader: FeatureReader, user_id: str, known: tuple | None) -> tuple[tuple, UserFeatures | None]:
    """The user's stamp, and their features unless that stamp equals ``known`` (then None)."""
    keys = [layout.feature_key(reader.version, feature, user_id) for feature in
            (Feature.HISTORY, Feature.PROFILE, Feature.SEEN, Feature.DISLIKED, Feature.PROGRESS)]
    compare = known is not None and known[0] == reader.version
    args = ["1" if compare else "0", *(known[1:] if compare else [""] * (_COUNTS + len(PROFILE_FIELDS))), *PROFILE_FIELDS]
    reply = _script(reader)(keys=keys, args=args)
    stamp = (reader.version, *reply[0])
    if len(reply) == 1:
        return stamp, None
    _, members, profile, seen, disliked, progress = reply
    return stamp, UserFeatures(
        history=[stored._history_entry(member) for member in members],
        profile=stored._profile(profile),
        seen=set(seen),
        disliked=stored._disliked(_pairs(disliked)),
        continue_watching=stored._started(_pairs(progress)),
        stamp=stamp,
    )


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


def _script(reader: FeatureReader) -> Script:
    """The script registered on ``reader``'s client, once per client (redis-py loads it into Redis
    again by itself after a restart)."""
    script = _scripts.get(reader.client)
    if script is None:
        script = _scripts[reader.client] = reader.client.register_script(_SCRIPT_TEXT)
    return script
