"""FeatureConfig: documented defaults, event weights, overrides from a dict."""

from __future__ import annotations

import pickle

import pytest

from kapparec.errors import UsageError
from kapparec.timeunits import DAY_MS, HOUR_MS
from streams.schema import EVENT_TYPES
from tests.transforms_helpers import interaction
from transforms.config import FeatureConfig


def test_defaults():
    config = FeatureConfig()
    assert (config.history_length, config.affinity_bucket_ms, config.trending_bucket_ms) == (50, DAY_MS, HOUR_MS)
    assert config.max_items_per_session_window == 20
    assert config.allowed_lateness_ms == 6 * HOUR_MS


@pytest.mark.parametrize(
    "event_type, value, weight",
    [("impression", None, 0), ("click", None, 1), ("play", None, 2), ("complete", None, 3), ("like", None, 4),
     ("dislike", None, 0), ("purchase", 9.5, 5), ("rate", 5.0, 3), ("rate", 4.0, 3), ("rate", 3.5, 1), ("rate", 2.9, 0)],
)
def test_weight(event_type, value, weight):
    assert FeatureConfig().weight(interaction(event_type=event_type, value=value)) == weight


def test_every_event_type_has_a_weight():
    config = FeatureConfig()
    for event_type in EVENT_TYPES:
        assert config.weight(interaction(event_type=event_type, value=1.0)) >= 0


def test_positive_means_some_weight_and_not_a_dislike():
    config = FeatureConfig.from_dict({"event_weights": {"dislike": 2}})
    assert config.is_positive(interaction(event_type="click"))
    assert not config.is_positive(interaction(event_type="impression"))
    assert not config.is_positive(interaction(event_type="dislike"))


def test_from_dict_overrides_only_what_it_names():
    config = FeatureConfig.from_dict({"history_length": 7, "event_weights": {"click": 9}, "rating_weights": [[5, 2]]})
    assert config.history_length == 7
    assert config.weight(interaction(event_type="click")) == 9
    assert config.weight(interaction(event_type="view")) == 1
    assert config.weight(interaction(event_type="rate", value=4.5)) == 0
    assert config.popularity_bucket_ms == DAY_MS


@pytest.mark.parametrize(
    "values, message",
    [({"history_len": 3}, "unknown feature setting 'history_len'"), ({"trending_bucket_ms": 0}, "must be positive"),
     ({"allowed_lateness_ms": -1}, "non-negative integer"), ({"event_weights": {"scroll": 1}}, "unknown ['scroll']"),
     ({"event_weights": {"click": -1}}, "non-negative integers")],
)
def test_bad_settings_are_usage_errors(values, message):
    with pytest.raises(UsageError) as caught:
        FeatureConfig.from_dict(values)
    assert message in str(caught.value)


def test_survives_pickling_to_workers():
    config = FeatureConfig.from_dict({"event_weights": {"click": 3}})
    assert pickle.loads(pickle.dumps(config)) == config
