"""The evaluation split: each eligible user's last interactions, in event time, are held out.

Protocol (leave-last-N-out, the one the reference numbers use): a user with at least
``min_interactions`` positives has the last ``holdout`` of them held out as the test set;
everything else — including every interaction of users with fewer positives — trains.
The split is per user, so training still contains other users' events later than a given
user's test events; ``cutoff_ms`` records the earliest held-out event time for the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kapparec.errors import KapparecError
from training.data import Catalog, Interactions


@dataclass(frozen=True)
class Split:
    train: Interactions  # everything not held out (all users, incl. those with < min_interactions)
    test: dict[str, list[str]]  # user -> last ``holdout`` items, chronological, for eligible users
    known_items: list[str]  # the ranking universe: items in training plus the catalog, sorted
    cutoff_ms: int  # event time of the earliest held-out interaction (max event time + 1 if none)
    # Every replayed interaction (impressions, dislikes and repeats too) of the training part: a
    # test user's records from their first held-out event time on are not in it. Features that the
    # store defines over the raw log (the user tower's history, the profile) are built from it.
    events: Interactions | None = None
    catalog: Catalog | None = None
    min_interactions: int = 20
    holdout: int = 10


def chronological_split(
    positives: Interactions,
    min_interactions: int = 20,
    holdout: int = 10,
    catalog: Catalog | None = None,
    events: Interactions | None = None,
) -> Split:
    """Hold out each eligible user's last ``holdout`` positives (``positives`` must be time-sorted).

    ``events`` is the whole replayed log the positives came from (default: the positives).
    """
    if len(positives) == 0:
        raise KapparecError("no interactions to split: the replayed log holds no positive events")
    if not 0 < holdout < min_interactions:
        raise KapparecError(f"holdout ({holdout}) must be positive and below min_interactions ({min_interactions})")
    held_out = _held_out_mask(positives.user_ids, min_interactions, holdout)
    test_rows = positives.take(held_out)
    test: dict[str, list[str]] = {}
    for user, item in zip(test_rows.user_ids, test_rows.item_ids):
        test.setdefault(user, []).append(item)
    train = positives.take(~held_out)
    known = set(train.item_ids.tolist()) | set(catalog.item_ids if catalog else ())
    cutoff = int(test_rows.event_times.min()) if len(test_rows) else int(positives.event_times.max()) + 1
    return Split(
        train=train,
        test=test,
        known_items=sorted(known),
        cutoff_ms=cutoff,
        events=training_part(positives if events is None else events, test_rows),
        catalog=catalog,
        min_interactions=min_interactions,
        holdout=holdout,
    )


def training_part(events: Interactions, held_out: Interactions) -> Interactions:
    """``events`` without each held-out user's records from their first held-out event time on:
    the log as it stood when the evaluated recommendation would have been made."""
    first_held_out: dict[str, int] = {}
    for user, time in zip(held_out.user_ids.tolist(), held_out.event_times.tolist()):
        first_held_out.setdefault(user, time)  # held-out rows are time-sorted
    if not first_held_out:
        return events
    never = np.iinfo(np.int64).max
    limits = np.array([first_held_out.get(user, never) for user in events.user_ids.tolist()], dtype=np.int64)
    return events.take(events.event_times < limits)


def _held_out_mask(user_ids: np.ndarray, min_interactions: int, holdout: int) -> np.ndarray:
    """True for the last ``holdout`` rows of every user with at least ``min_interactions`` rows."""
    by_user = np.argsort(user_ids, kind="stable")  # stable: time order kept within a user
    users = user_ids[by_user]
    boundaries = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    counts = np.diff(boundaries)
    group_end = np.repeat(boundaries[1:], counts)
    rank_from_end = group_end - np.arange(len(users))  # 1 for a user's last row
    eligible = np.repeat(counts >= min_interactions, counts)
    mask = np.empty(len(users), dtype=bool)
    mask[by_user] = eligible & (rank_from_end <= holdout)
    return mask
