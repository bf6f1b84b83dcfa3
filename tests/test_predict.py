"""``bioasset predict`` against a real MLflow SQLite store with two registered classifiers."""

from __future__ import annotations

import json

import pytest

from bioasset.cli import build_parser, main
from bioasset.mlflow_registry import MlflowRegistry, alias_uri, registered_model_name

from classifier_fixtures import SPECIES, log_classifier, make_bundle, new_registry, write_images
from classifier_fixtures import torch_on_one_thread  # noqa: F401 (autouse: the module runs torch on one thread)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> MlflowRegistry:
    """``bioasset-moths`` (no threshold: always answers) and ``bioasset-wasps`` (threshold 0.99: never
    sure with 3 near-uniform classes), each with a champion."""
    folder = tmp_path_factory.mktemp("mlflow")
    registry = new_registry(folder)
    for dataset, threshold in (("moths", None), ("wasps", 0.99)):
        bundle = make_bundle(folder / f"bundle-{dataset}", threshold=threshold)
        logged = log_classifier(registry, bundle, dataset=dataset)
        registry.promote_if_better(logged.registered_model_name, logged.version, lambda b: pytest.fail("first version"))
    return registry


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [str(path) for path in write_images(tmp_path_factory.mktemp("photos"), count=2)]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_output_defaults_to_the_first_models_champion(store, images, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)  # no --tracking-uri: the environment decides
    code, out, err = run_cli(capsys, *images, "--top-k", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"model: {alias_uri(registered_model_name('moths'))} (version 1)"
    assert lines[1] == images[0] and lines[4] == images[1]
    ranked = lines[2:4]
    assert [line.split(".")[0].strip() for line in ranked] == ["1", "2"]
    assert all(any(f" {species}  " in line for species in SPECIES) and "%" in line for line in ranked)
    assert any("Animalia > Arthropoda > Insecta" in line or line.count("Plantae > ") for line in ranked)
    assert "not sure" not in out


def test_json_output_has_the_same_predictions(store, images, capsys):
    code, out, err = run_cli(capsys, images[0], "--json", "--tracking-uri", store.tracking_uri)
    assert code == 0, err
    result = json.loads(out)
    assert result["model_name"] == "bioasset-moths" and result["model_version"] == "1"
    [prediction] = result["predictions"]
    assert prediction["image"] == images[0] and prediction["abstained"] is False and prediction["threshold"] is None
    taxa = prediction["taxa"]
    assert len(taxa) == 3  # the model's default top_k (5) capped at its 3 classes
    assert {t["label_name"] for t in taxa} == set(SPECIES)
    assert [t["probability"] for t in taxa] == sorted((t["probability"] for t in taxa), reverse=True)
    assert abs(sum(t["probability"] for t in taxa) - 1) < 1e-5
    pieris_japonica = next(t for t in taxa if t["label_name"] == "Pieris japonica")
    assert pieris_japonica["label_id"] == 50736 and pieris_japonica["path"].startswith("Plantae > ")


def test_not_sure_below_the_threshold(store, images, capsys):
    model = alias_uri(registered_model_name("wasps"))
    code, out, err = run_cli(capsys, images[0], "--model", model, "--tracking-uri", store.tracking_uri)
    assert code == 0, err
    assert out.splitlines()[2].startswith("  not sure: best guess ")
    assert "below the threshold 99.0%" in out

    code, out, err = run_cli(capsys, images[0], "--model", model, "--json", "--tracking-uri", store.tracking_uri)
    prediction = json.loads(out)["predictions"][0]
    assert prediction["abstained"] is True and prediction["threshold"] == 0.99
    assert prediction["taxa"][0]["probability"] < 0.99


def test_errors_name_the_problem_and_the_fix(store, images, tmp_path, capsys):
    code, _, err = run_cli(capsys, str(tmp_path / "missing.jpg"), "--tracking-uri", store.tracking_uri)
    assert code == 2 and "missing.jpg" in err and "Fix" in err
    code, _, err = run_cli(capsys, images[0], "--model", "models:/bioasset-moths@staging", "--tracking-uri", store.tracking_uri)
    assert code == 2 and "no version with alias 'staging'" in err
    code, _, err = run_cli(capsys, images[0], "--model", "models:/bioasset-moths/7", "--tracking-uri", store.tracking_uri)
    assert code == 2 and "no such model version" in err and "bioasset-moths, bioasset-wasps" in err
    code, _, err = run_cli(capsys, images[0], "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "There is no MLflow store" in err
    assert not (tmp_path / "none.db").exists()


def test_help_names_the_default_model():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = subparsers.choices["predict"].format_help()
    assert "champion of the only registered" in help_text and "--top-k" in help_text and "--json" in help_text
