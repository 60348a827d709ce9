"""``kapparec eval`` on a MovieLens-format folder and ``kapparec train`` on the real broker (stack fixture)."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import training  # noqa: F401 - legacy Keras before TensorFlow loads
from kapparec.cli import main
from modelfiles.ranker import RANKER_FILE
from modelfiles.registry import ModelRegistry
from serving.model import ServingModel
from streams.producer import LogProducer
from streams.synthetic import SyntheticLog
from streams.topics import ensure_topics
from training.cli import MODEL_NAMES, parse_offsets, parse_time
from training.funnel_eval import START

GENRES = ("Action", "Comedy", "Drama")
TINY_TRAINING = ["--epochs", "3", "--seed", "1", "--search-space", "small"]


def gain_beyond_se(better: float, base: float, paired_se: float) -> bool | None:
    """Whether ``better`` beats ``base`` by more than ``paired_se``, as the eval decided it on exact
    figures; None where the report's six-decimal rounding leaves the decision too close to tell."""
    margin = better - base - paired_se
    return None if abs(margin) <= 2e-6 else margin > 0


def write_movielens(folder: Path, users: int = 40, movies: int = 60, ratings_per_user: int = 25) -> Path:
    """A ml-latest-small style folder with planted taste: each user rates mostly films of one genre."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    genre_of = [GENRES[m % len(GENRES)] for m in range(movies)]
    with open(folder / "movies.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows([m + 1, f"Film {m + 1} (2000)", genre_of[m]] for m in range(movies))
    with open(folder / "ratings.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for user in range(users):
            liked = [m for m in range(movies) if genre_of[m] == GENRES[user % len(GENRES)]]
            others = [m for m in range(movies) if m not in liked]
            picks = rng.permutation(liked)[:20].tolist() + rng.permutation(others)[: ratings_per_user - 20].tolist()
            for step, movie in enumerate(rng.permutation(picks).tolist()):
                writer.writerow([user + 1, movie + 1, 4.0, 1_000_000_000 + user * 10_000 + step * 60])
    return folder


def test_offsets_and_times_parse():
    assert parse_offsets("0:120,3:7") == {0: 120, 3: 7}
    assert parse_time("2025-01-01T00:00:00Z") == 1_735_689_600_000
    assert parse_time("2025-01-01T01:00:00+01:00") == 1_735_689_600_000
    for bad in ("0-120", "a:1", "0:-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_offsets(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("yesterday")


def test_eval_json_prints_every_model_on_one_split(tmp_path, capsys):
    folder = write_movielens(tmp_path / "ml")
    assert main(["eval", "--json", "--movielens", str(folder), *TINY_TRAINING]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == set(MODEL_NAMES)
    assert report["protocol"]["test_users"] == 40
    for name, metrics in report["models"].items():
        for key in ("recall@10", "ndcg@10", "recall@50", "coverage"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key, metrics)
    # The two-tower reports the configuration it was measured with and where that came from.
    assert report["models"]["two_tower"]["params"]["epochs"] == 3
    assert report["models"]["two_tower"]["selection"]["skipped"].startswith("no user has 20 training positives")
    # The planted genres are easy: every model but popularity finds them.
    assert report["models"]["ease"]["recall@10"] > report["models"]["popularity"]["recall@10"]


def test_eval_table_for_chosen_models(tmp_path, capsys):
    folder = write_movielens(tmp_path / "ml")
    assert main(["eval", "--movielens", str(folder), "--models", "popularity,item_knn"]) == 0
    out = capsys.readouterr().out
    assert "| popularity |" in out and "| item_knn |" in out and "two_tower" not in out


def test_eval_unknown_model_is_a_usage_error(tmp_path, capsys):
    folder = write_movielens(tmp_path / "ml")
    assert main(["eval", "--movielens", str(folder), "--models", "popularity,magic"]) == 2
    assert "magic" in capsys.readouterr().err


def test_eval_unknown_path_is_one_line_and_nonzero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kapparec.cli", "eval", "--json", "--movielens", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_bad_cutoff_is_a_usage_error(capsys):
    assert main(["train", "--until-offsets", "zero:1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_train_on_an_empty_log_is_one_line(stack, tmp_path, capsys):
    ensure_topics(stack.bootstrap)
    assert main(["train", "--bootstrap", stack.bootstrap, "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty" in err
    assert ModelRegistry(tmp_path).versions() == []


def produce_synthetic(bootstrap: str) -> None:
    log = SyntheticLog(users=60, items=120, events=15_000, seed=5)
    ensure_topics(bootstrap)
    with LogProducer(bootstrap) as producer:
        for item in log.catalog():
            producer.send_catalog(item)
        for event in log.interactions():
            producer.send_interaction(event)


def test_train_selects_on_validation_refits_on_all_data_and_gates_on_equal_terms(stack, tmp_path, capsys):
    produce_synthetic(stack.bootstrap)
    registry = ModelRegistry(tmp_path)
    base = ["train", "--bootstrap", stack.bootstrap, "--models-dir", str(tmp_path), "--search-space", "small"]

    assert main([*base, "--seed", "1"]) == 0
    first = registry.production()
    assert first is not None and "promoted" in capsys.readouterr().out
    for artifact in ("user_tower", "item_embeddings.npy", "item_ids.npy", "index", "evaluation.json",
                     "evaluation.md", "training_curve.png"):
        assert (first.path / artifact).exists(), artifact
    meta = first.metadata
    assert meta["metrics"]["recall@10"] > 0 and meta["data"]["offsets"]
    assert 0.0 <= meta["index"]["scann_recall@10_vs_exact"] <= 1.0 and meta["code_version"]
    # Every hyperparameter was chosen on validation, and the registered model is the refit on all data.
    chosen = meta["selection"]["chosen"]
    assert meta["selection"]["trials_run"] == 2 and 1 <= chosen["epochs"] <= 3
    assert meta["params"]["epochs"] == chosen["epochs"] and meta["params"]["temperature"] == chosen["temperature"]
    # The member count and the epochs are the best cell of one fit of the most members, each
    # ensemble of its first members measured after every epoch.
    curves = meta["selection"]["members"]["validation_recall@10_by_epoch"]
    assert set(curves) == {"1", "2"} and meta["params"]["members"] == chosen["members"]
    assert curves[str(chosen["members"])][chosen["epochs"] - 1] == max(max(curve) for curve in curves.values())
    assert meta["refit"]["on"].startswith("all data") and meta["refit"]["offsets"] == meta["data"]["offsets"]
    assert meta["refit"]["positives"] > meta["protocol"]["train_interactions"]
    assert "How two_tower was chosen" in (first.path / "evaluation.md").read_text()

    # An untrained model (zero epochs) must not replace the trained one, rescored on the same split.
    assert main([*base, "--epochs", "0", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and "both on today's split" in out
    assert registry.production().id == first.id
    assert len(registry.versions()) == 2
    assert registry.get(registry.version_ids()[-1]).metadata["gate"]["production_rescored"]["recall@10"] > 0


def test_train_with_a_ranker_ships_it_in_the_version_only_when_it_beats_the_blend(stack, tmp_path, capsys):
    produce_synthetic(stack.bootstrap)
    registry = ModelRegistry(tmp_path)
    args = ["train", "--bootstrap", stack.bootstrap, "--models-dir", str(tmp_path), "--search-space", "small",
            "--seed", "1", "--epochs", "1", "--ranker"]
    assert main(args) == 0
    version = registry.production()
    record = version.metadata["ranker"]
    assert record["validation_users"] == version.metadata["protocol"]["test_users"] and record["positives"] > 0
    figures = record["validation_recall@10"]
    assert record["adopted"] == (figures["learned_out_of_fold"] - figures["blend"] > figures["paired_se"])
    assert (RANKER_FILE in version.metadata["artifacts"]) == record["adopted"]
    loaded = ServingModel.load(version)
    assert (loaded.ranker is not None) == record["adopted"]
    if loaded.ranker is not None:
        assert loaded.ranker.record == record


def test_eval_measures_the_serving_funnel_over_features_replayed_from_the_training_part(stack, capsys):
    produce_synthetic(stack.bootstrap)
    args = ["eval", "--json", "--bootstrap", stack.bootstrap, "--models", "popularity,funnel", *TINY_TRAINING]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    # The funnel ranks with the evaluated two-tower, so that row comes along.
    assert set(report["models"]) == {"popularity", "two_tower", "funnel"}
    funnel = report["models"]["funnel"]
    for key in ("recall@10", "ndcg@10", "recall@50", "coverage"):
        assert 0.0 <= funnel[key] <= 1.0, (key, funnel)
    # The blend was searched on half of a validation split, from the two-tower's candidates alone; what the
    # search found measured at least as well there as that start, it was chosen only if it also beat the
    # start on the other half, and the chosen knobs ranked the test split.
    selection = funnel["selection"]
    assert selection["search_users"] + selection["confirmation_users"] == selection["validation_users"] > 0
    assert abs(selection["search_users"] - selection["confirmation_users"]) <= 1 and selection["trials_run"] > 10
    start = selection["trials"][0]
    assert start["overrides"] == START
    searched = next(trial for trial in selection["trials"] if trial["overrides"] == selection["searched"])
    assert searched["search_recall@10"] == selection["search_recall@10"] >= start["search_recall@10"]
    confirmation = selection["confirmation"]
    assert gain_beyond_se(confirmation["searched_recall@10"], confirmation["start_recall@10"],
                          confirmation["paired_se"]) in (confirmation["adopted"], None)
    assert selection["chosen"] == (selection["searched"] if confirmation["adopted"] else START)
    for knob, value in selection["chosen"].items():
        if knob.startswith("weights."):
            assert funnel["params"]["weights"][knob.split(".", 1)[1]] == value
        else:
            assert funnel["params"][knob] == value
    # A learned ranker was fitted on the same validation users and adopted only if it beat the blend there.
    ranker = selection["ranker"]
    assert ranker["validation_users"] == selection["validation_users"]
    if "skipped" not in ranker:
        figures = ranker["validation_recall@10"]
        assert ranker["positives"] > 0 and figures["blend"] == selection["validation_recall@10"]
        assert gain_beyond_se(figures["learned_out_of_fold"], figures["blend"], figures["paired_se"]) in (ranker["adopted"], None)
    assert funnel["ranker"] == ("learned" if ranker["adopted"] else "blend")
    # The planted tastes are easy: the funnel finds them far better than popularity does.
    assert funnel["recall@10"] > 1.2 * report["models"]["popularity"]["recall@10"]
