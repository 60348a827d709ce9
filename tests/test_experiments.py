"""The experiments file and bucket assignment (no server: ``test_serving`` covers them live)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kapparec.errors import UsageError
from serving import experiments
from serving.config import FunnelConfig

KAPPAREC = str(Path(sys.executable).with_name("kapparec"))

TWO_VARIANTS = """
[[experiment]]
name = "ranker"
salt = "{salt}"
traffic = {traffic}
[[experiment.variant]]
name = "control"
share = 0.3
popularity_only = true
[[experiment.variant]]
name = "treatment"
share = 0.7
funnel = {{ max_per_category = 2, weights = {{ two_tower = 1.5 }} }}
"""


def parsed(salt: str = "s", traffic: float = 1.0) -> experiments.ExperimentsFile:
    return experiments.parse(TWO_VARIANTS.format(salt=salt, traffic=traffic))


def test_users_split_by_the_configured_shares_and_stay_put():
    config = parsed()
    buckets = [experiments.assign(config, f"user-{n}").label for n in range(20_000)]
    assert abs(buckets.count("ranker/control") / len(buckets) - 0.3) < 0.015
    assert buckets == [experiments.assign(parsed(), f"user-{n}").label for n in range(20_000)]


def test_a_new_salt_reshuffles_and_traffic_leaves_users_outside():
    first = [experiments.assign(parsed("a"), f"u{n}").variant.name for n in range(2_000)]
    second = [experiments.assign(parsed("b"), f"u{n}").variant.name for n in range(2_000)]
    assert 0.3 < sum(a != b for a, b in zip(first, second)) / len(first) < 0.55  # 2·0.3·0.7 = 0.42 expected
    outside = sum(experiments.assign(parsed(traffic=0.25), f"u{n}") is None for n in range(4_000))
    assert abs(outside / 4_000 - 0.75) < 0.03


def test_variants_carry_their_funnel_settings():
    control, treatment = parsed().experiment[0].variant
    assert control.funnel_config(FunnelConfig()).sources == {"popular"}
    assert control.funnel_config(FunnelConfig()).exploration_share == 0
    tuned = treatment.funnel_config(FunnelConfig())
    assert (tuned.max_per_category, tuned.weights["two_tower"], tuned.weights["trending"]) == (2, 1.5, 0.3)
    assert parsed().experiment[0].control_variant == "control"


@pytest.mark.parametrize("text, fragment", [
    ("[[experiment]]\nname = 'x'\nsalt = 's'\n[[experiment.variant]]\nname = 'a'\nshare = 0.6\n", "sum to 0.6, not 1"),
    ("[[experiment]]\nname = 'x'\nsalt = 's'\ncontrol = 'z'\n[[experiment.variant]]\nname = 'a'\nshare = 1\n",
     "control 'z' is not one of its variants"),
    ("[[experiment]]\nname = 'x'\nsalt = 's'\n[[experiment.variant]]\nname = 'a'\nshare = 1\nfunnel = { bogus = 1 }\n",
     "variant a: bad funnel setting"),
    ("[[experiment]]\nname = 'x'\n", "experiment.0.salt: Field required"),
    ("[[experiment]\n", "not TOML"),
])
def test_a_bad_file_is_one_clear_line(text, fragment):
    with pytest.raises(UsageError) as refused:
        experiments.parse(text)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_file_is_no_experiments(tmp_path):
    assert experiments.load(tmp_path / "none.toml").experiment == ()


@given(user=st.text(max_size=64), shares=st.lists(st.integers(1, 20), min_size=1, max_size=6))
def test_every_user_lands_in_exactly_one_listed_variant(user, shares):
    variants = "".join(f"[[experiment.variant]]\nname = 'v{n}'\nshare = {share / sum(shares)!r}\n"
                       for n, share in enumerate(shares))
    config = experiments.parse(f"[[experiment]]\nname = 'x'\nsalt = 's'\n{variants}")
    bucket = experiments.assign(config, user)
    assert bucket.variant.name in {f"v{n}" for n in range(len(shares))}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KAPPAREC, *args], capture_output=True, text=True, timeout=60)


def test_experiments_list_shows_each_variants_share_of_all_users(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(TWO_VARIANTS.format(salt="s", traffic=0.5))
    listed = run_cli("experiments", "list", "--experiments", str(path))
    assert listed.returncode == 0, listed.stderr
    assert "ranker  salt=s  traffic=50%  control=control" in listed.stdout
    assert "control           15.0% of users  popular items only" in listed.stdout
    assert 'treatment         35.0% of users  model production, funnel {"max_per_category": 2' in listed.stdout


def test_a_bad_experiments_file_is_one_line_and_a_non_zero_exit(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text("[[experiment]]\nname = 'x'\nsalt = 's'\n[[experiment.variant]]\nname = 'a'\nshare = 0.5\n")
    for verb in (["experiments", "list"], ["serve", "--port", "1"]):
        refused = run_cli(*verb, "--experiments", str(path))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "variant shares sum to 0.5, not 1" in refused.stderr and "Traceback" not in refused.stderr
