"""MLflow 3 on a real SQLite store: the logged run, the registered pyfunc, aliases and the promotion gate."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bioasset.classifier_bundle import load_bundle_meta
from bioasset.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    TAG_THRESHOLD_SPLIT,
    TAG_THRESHOLD_SPLIT_NOTE,
    DatasetVersionRef,
    MlflowRegistry,
    RegisteredClassifier,
    Scores,
    alias_uri,
    decide_promotion,
    experiment_name,
    parse_model_uri,
    promote_latest,
    registered_model_name,
    scores_on_split,
    tracking_uri,
    train_and_register,
)
from bioasset.pyfunc_model import BundlePredictor, taxon_path_text
from bioasset.training import TrainingConfig
from bioasset.training.synthetic import write_shapes_dataset

from classifier_fixtures import SPECIES, class_labels, image_bytes, log_classifier, make_bundle, new_registry
from classifier_fixtures import torch_on_one_thread  # noqa: F401 (autouse: the module runs torch on one thread)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> MlflowRegistry:
    """One store per module (creating the SQLite schema takes seconds); each test uses its own dataset name."""
    return new_registry(tmp_path_factory.mktemp("mlflow"), dagster_run_id="run-123", dagster_partition="bees|resnet18")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "resnet18", threshold=0.2)


def test_decide_promotion_rules():
    assert decide_promotion(Scores(0.1, 0.0), None) == (True, "no champion yet")
    assert decide_promotion(Scores(0.8, 0.1), Scores(0.7, 0.9))[0] is True
    assert decide_promotion(Scores(0.6, 0.9), Scores(0.7, 0.1))[0] is False
    promote, reason = decide_promotion(Scores(0.7, 0.5), Scores(0.7, 0.4))
    assert promote and "tied" in reason and "kappa" in reason
    assert decide_promotion(Scores(0.7, 0.3), Scores(0.7, 0.4))[0] is False
    assert decide_promotion(Scores(0.7, 0.4), Scores(0.7, 0.4))[0] is False  # a full tie keeps the champion
    assert decide_promotion(Scores(0.7, None), Scores(0.7, 0.4)) == (
        False,
        "top1_accuracy tied at 0.7000 and cohen_kappa is undefined for one of them; the champion stays",
    )


def test_unscorable_rows_count_as_misses_for_an_older_champion():
    same = scores_on_split({"top1_accuracy": 0.8, "cohen_kappa": 0.5, "images": 40, "rows_unknown_label": 0})
    assert same == Scores(0.8, 0.5)
    older = scores_on_split({"top1_accuracy": 0.8, "cohen_kappa": 0.5, "images": 40, "rows_unknown_label": 10})
    assert older == Scores(0.8 * 40 / 50, 0.5)


def test_tracking_uri_block_restores_the_users_environment(monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///users.db")
    with tracking_uri("sqlite:///other.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///other.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///users.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///changed.db")
    assert mlflow.get_tracking_uri() == "sqlite:///changed.db"  # still read from the environment, not pinned


def test_parse_model_uri():
    assert parse_model_uri("models:/bioasset-bees@champion") == ("bioasset-bees", "champion", None)
    assert parse_model_uri("models:/bioasset-bees/3") == ("bioasset-bees", None, "3")
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        parse_model_uri("runs:/abc/model")


@pytest.fixture(scope="module")
def logged(registry, bundle, tmp_path_factory) -> RegisteredClassifier:
    """One logged run with evaluation artifacts (dataset "logged"); it may be promoted to champion."""
    folder = tmp_path_factory.mktemp("evaluation")
    plot = folder / "confusion_matrix.png"
    plot.write_bytes(image_bytes((1, 2, 3)))
    table = folder / "per_class.csv"
    table.write_text("label_id,precision\n55626,0.5\n")
    return log_classifier(registry, bundle, dataset="logged", top1=0.75, kappa=0.5, artifacts=(plot, table))


def test_training_run_is_logged_registered_and_made_challenger(registry, logged):
    client = registry.client
    experiment = client.get_experiment(logged.experiment_id)
    assert experiment.name == experiment_name("logged") == "bioasset/logged"
    assert experiment.artifact_location.endswith("artifacts/bioasset/logged")

    run = client.get_run(logged.run_id)
    assert run.data.params["learning_rate"] == "0.01"
    assert run.data.metrics["test_top1_accuracy"] == 0.75 and "test_split" not in run.data.metrics
    assert [m.step for m in client.get_metric_history(logged.run_id, "train_loss")] == [0, 1]
    assert run.data.tags["dagster_run_id"] == "run-123" and run.data.tags["dagster_partition"] == "bees|resnet18"
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "logged@a1b2c3d4e5f6"
    assert dataset_input.dataset.digest == "a1b2c3d4e5f6"
    assert "datasets/logged/a1b2c3d4e5f6/manifest.parquet" in dataset_input.dataset.source
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "training"
    assert sorted(a.path for a in client.list_artifacts(logged.run_id, "evaluation")) == [
        "evaluation/confusion_matrix.png",
        "evaluation/per_class.csv",
    ]

    version = client.get_model_version(registered_model_name("logged"), logged.version)
    assert version.tags["dataset_version"] == "a1b2c3d4e5f6"
    assert version.tags["snapshot"] == "2024-06-01"
    assert version.tags["architecture"] == "resnet18"
    assert version.tags["dagster_run_id"] == "run-123" and version.tags["dagster_partition"] == "bees|resnet18"
    assert str(registry.alias_version(logged.registered_model_name, CHALLENGER).version) == logged.version


def test_promotion_gate_moves_champion_only_for_a_better_version(registry, bundle):
    name = registered_model_name("gate")
    never_called = lambda bundle_dir: pytest.fail("same dataset version: recorded numbers must be used")  # noqa: E731

    first = log_classifier(registry, bundle, dataset="gate", top1=0.6, kappa=0.3)
    assert registry.alias_version(name, CHAMPION) is None  # registering alone never makes a champion
    decision = registry.promote_if_better(name, first.version, never_called)
    assert decision.promote and decision.reason == "no champion yet"
    assert str(registry.alias_version(name, CHAMPION).version) == first.version

    worse = log_classifier(registry, bundle, dataset="gate", top1=0.5, kappa=0.9)
    decision = registry.promote_if_better(name, worse.version, never_called)
    assert not decision.promote and decision.champion == Scores(0.6, 0.3)
    assert str(registry.alias_version(name, CHAMPION).version) == first.version
    assert str(registry.alias_version(name, CHALLENGER).version) == worse.version
    tags = registry.client.get_model_version(name, worse.version).tags
    assert tags["promotion.decision"] == "kept_champion"
    assert tags["promotion.challenger_top1_accuracy"] == "0.5" and tags["promotion.champion_top1_accuracy"] == "0.6"
    assert registry.client.get_run(worse.run_id).data.tags["promotion.decision"] == "kept_champion"

    tie_better_kappa = log_classifier(registry, bundle, dataset="gate", top1=0.6, kappa=0.4)
    decision = registry.promote_if_better(name, tie_better_kappa.version, never_called)
    assert decision.promote and "kappa" in decision.reason
    assert str(registry.alias_version(name, CHAMPION).version) == tie_better_kappa.version
    assert registry.client.get_model_version(name, first.version).tags["promotion.replaced_by"] == tie_better_kappa.version
    assert registry.client.get_run(tie_better_kappa.run_id).data.tags["promotion.decision"] == "promoted"


def test_champion_from_another_dataset_version_is_rescored_on_the_challengers_test_split(registry, bundle, tmp_path):
    name = registered_model_name("moving")
    old = log_classifier(registry, bundle, dataset="moving", version="0000aaaa1111", top1=0.99, kappa=0.99)
    registry.promote_if_better(name, old.version, lambda b: pytest.fail("no champion to rescore"))
    seen: list[str] = []

    def rescore(bundle_dir: Path) -> Scores:
        seen.append(load_bundle_meta(bundle_dir).architecture)  # a real, loadable bundle was downloaded
        return Scores(0.4, 0.2)

    new = log_classifier(registry, bundle, dataset="moving", version="bbbb2222cccc", top1=0.5, kappa=0.1)
    decision = registry.promote_if_better(name, new.version, rescore, workdir=tmp_path)
    assert seen == ["resnet18"]
    assert decision.champion_reevaluated and decision.compared_on == "moving@bbbb2222cccc"
    assert decision.promote, "0.5 on the new test split beats the old champion's 0.4 there, not its stale 0.99"
    assert str(registry.alias_version(name, CHAMPION).version) == new.version
    assert list(tmp_path.iterdir()) == []  # the downloaded champion is cleaned up


def test_promotion_needs_a_registered_version_of_the_architecture(registry, logged, tmp_path):
    with pytest.raises(LookupError, match=r"no vit_b_16 version .* materialize the classifier partition logged\|vit_b_16"):
        promote_latest(registry, "logged", "vit_b_16", lambda version: pytest.fail("nothing to read"), str(tmp_path), tmp_path)


def test_download_bundle_resolves_an_alias(registry, logged, tmp_path):
    path = registry.download_bundle(alias_uri(logged.registered_model_name, CHALLENGER), tmp_path)
    assert [label.label_name for label in load_bundle_meta(path).labels] == list(SPECIES)
    with pytest.raises(LookupError, match="no version with alias 'staging'"):
        registry.download_bundle(alias_uri(logged.registered_model_name, "staging"), tmp_path)


def test_pyfunc_loads_from_champion_in_a_fresh_process(registry, logged, tmp_path):
    decision = registry.promote_if_better(logged.registered_model_name, logged.version, lambda b: pytest.fail("first version"))
    assert decision.promote and str(registry.alias_version(logged.registered_model_name, CHAMPION).version) == logged.version
    (tmp_path / "bee.png").write_bytes(image_bytes((200, 180, 20)))
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({alias_uri(logged.registered_model_name)!r})\n"
        f"images = [open({str(tmp_path / 'bee.png')!r}, 'rb').read(), {str(tmp_path / 'bee.png')!r}]\n"
        "out = model.predict(pd.DataFrame({'image': images}), params={'top_k': 2})\n"
        "print(json.dumps(out.to_dict('records')))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 and rows[0] == rows[1]  # bytes and a path to the same file agree
    assert len(rows[0]["label_ids"]) == 2 and set(rows[0]["label_names"]) <= set(SPECIES)
    assert rows[0]["probabilities"] == sorted(rows[0]["probabilities"], reverse=True)
    assert rows[0]["threshold"] == 0.2
    assert not (tmp_path / "mlflow.db").exists()  # it used the store from the environment


def test_paths_are_in_rank_order_and_tell_the_two_pieris_apart():
    paths = [taxon_path_text(label) for label in class_labels()]
    assert paths[0] == "Animalia > Arthropoda > Insecta > Lepidoptera > Pieridae > Pieris > Pieris rapae"
    assert paths[2].startswith("Plantae > ") and " > Pieris > " in paths[2]


def test_predictor_caps_top_k_abstains_below_threshold_and_names_bad_rows(tmp_path):
    predictor = BundlePredictor(str(make_bundle(tmp_path / "unsure", threshold=0.99)))
    out = predictor.predict([image_bytes((10, 10, 10))], top_k=10)
    assert len(out.loc[0, "label_ids"]) == 3  # capped at the number of classes
    assert abs(sum(out.loc[0, "probabilities"]) - 1.0) < 1e-5
    assert bool(out.loc[0, "abstained"]) is True
    with pytest.raises(ValueError, match="row 1: .* not an image"):
        predictor.predict([image_bytes((1, 1, 1)), b"not an image"])
    with pytest.raises(ValueError, match="no 'image'"):
        from bioasset.pyfunc_model import image_column

        image_column(pd.DataFrame({"photo": [b""]}))


# -- train_and_register: the abstention threshold is chosen on val and reported on test ----------

#: One epoch of tiny_cnn at 32 px: these tests are about where the threshold comes from, not accuracy.
ONE_EPOCH = TrainingConfig(architecture="tiny_cnn", epochs=1, batch_size=8, image_size=32, optimizer="adamw",
                           learning_rate=3e-3, num_workers=0, device="cpu")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """3 classes x 10 images, split 6/2/2 per class."""
    root = tmp_path_factory.mktemp("shapes")
    return root, write_shapes_dataset(root, n_classes=3, per_class=10, image_size=32)


def train_shapes(registry: MlflowRegistry, dataset: str, manifest: pd.DataFrame, root: Path, work: Path):
    ref = DatasetVersionRef(dataset, "0123456789ab", "2026-10-27", f"/warehouse/datasets/{dataset}/0123456789ab/manifest.parquet")
    return train_and_register(registry, ref, manifest, str(root), ONE_EPOCH, work)


def test_the_threshold_is_chosen_on_val_and_reported_on_test(registry, shapes, tmp_path):
    root, manifest = shapes
    run = train_shapes(registry, "shapes-val", manifest, root, tmp_path / "work")
    chosen, test = run.threshold_evaluation, run.evaluation
    assert chosen.metrics["split"] == "val" and chosen.metrics["images"] == 6 and test.metrics["images"] == 6
    assert chosen.threshold.split == "val" and test.threshold == chosen.threshold  # applied on test, not chosen again
    assert test.metrics["threshold_split"] == "val" and test.metrics["threshold"] == chosen.threshold.value

    logged = registry.client.get_run(run.registered.run_id).data
    assert logged.tags[TAG_THRESHOLD_SPLIT] == "val" and TAG_THRESHOLD_SPLIT_NOTE not in logged.tags
    assert logged.metrics.get("test_threshold") == chosen.threshold.value  # not logged when None
    for name in ("coverage_at_threshold", "accuracy_at_threshold"):
        assert logged.metrics.get(f"test_{name}") == test.metrics[name] and logged.metrics.get(f"val_{name}") == chosen.metrics[name]
    version = registry.model_version(run.registered.registered_model_name, run.registered.version)
    assert version.tags[TAG_THRESHOLD_SPLIT] == "val"
    assert sorted(a.path for a in registry.client.list_artifacts(run.registered.run_id, "evaluation/val")) == [
        "evaluation/val/threshold_sweep.csv", "evaluation/val/threshold_sweep.png",
    ]
    assert load_bundle_meta(registry.download_bundle(run.registered.model_uri, tmp_path / "model")).threshold == chosen.threshold.value


def test_a_val_split_missing_a_class_falls_back_to_test_and_says_why(registry, shapes, tmp_path, caplog):
    root, manifest = shapes
    short = manifest.assign(split=manifest["split"].mask((manifest["label_id"] == 1002) & (manifest["split"] == "val"), "train"))
    with caplog.at_level(logging.WARNING, logger="bioasset.metrics"):
        run = train_shapes(registry, "shapes-short-val", short, root, tmp_path / "work")
    assert run.threshold_evaluation is None and run.evaluation.threshold.split == "test"
    logged = registry.client.get_run(run.registered.run_id).data
    assert logged.tags[TAG_THRESHOLD_SPLIT] == "test"
    note = logged.tags[TAG_THRESHOLD_SPLIT_NOTE]
    assert "1 of the 3 classes (Genus1 species2)" in note and "in-sample" in note and note in caplog.text
    assert not any(name.startswith("val_") and name.endswith("_at_threshold") for name in logged.metrics)
    assert registry.model_version(run.registered.registered_model_name, run.registered.version).tags[TAG_THRESHOLD_SPLIT_NOTE] == note
