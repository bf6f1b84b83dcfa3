"""Classifier training (bioasset.training): real torch training on tiny Pillow-drawn images, on the CPU."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import models as tv_models

from bioasset.classifier_bundle import BundleMeta, ClassLabel, load_bundle, save_bundle
from bioasset.training import (
    DEFAULT_ARCHITECTURES,
    InitWeightsError,
    ManifestError,
    PretrainedWeightsUnavailable,
    ProgressEvent,
    ResumeError,
    TrainingConfig,
    TrainingConfigError,
    train_classifier,
)
from bioasset.training.data import balanced_class_weights, build_labels, prepare_manifest, train_sampler
from bioasset.training.loop import BEST_MODEL_FILE, CHECKPOINT_FILE
from bioasset.training.losses import FocalLoss
from bioasset.training.models import build_model, head_name, replace_head
from bioasset.training.synthetic import write_shapes_dataset

#: resnet18 at 32 px learns the shapes in a few epochs on one CPU core.
FAST = TrainingConfig(
    architecture="resnet18", image_size=32, batch_size=8, epochs=2, optimizer="adamw", learning_rate=1e-3,
    min_crop_scale=0.6, num_workers=0, seed=0,
)
#: For tests of the mechanics rather than of learning: a fifth of resnet18's parameters, so
#: checkpoints are small, and it has dropout, which draws on the RNG that resuming must restore.
QUICK = replace(FAST, architecture="mobilenet_v3_small")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine's cores are shared: one intra-op thread avoids OpenMP spin-waiting on busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("shapes")
    return root, write_shapes_dataset(root, n_classes=4, per_class=20, image_size=40, seed=1)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    root, manifest = shapes
    events: list[ProgressEvent] = []
    out = tmp_path_factory.mktemp("trained")
    config = replace(FAST, epochs=4, log_every_n_steps=2, lr_schedule="cosine", warmup_epochs=1.0)
    result = train_classifier(manifest, str(root), config, out, progress=events.append, dataset_info={"name": "shapes"})
    return result, events, manifest, root


def tiny(root: Path, per_class=6, n_classes=2, seed=0) -> pd.DataFrame:
    return write_shapes_dataset(root, n_classes=n_classes, per_class=per_class, image_size=32, split_shares=(0.5, 0.5, 0.0), seed=seed)


def test_tiny_training_learns_and_writes_a_loadable_bundle(trained):
    result, events, manifest, root = trained
    assert result.epochs_run == 4 and not result.stopped_early
    assert result.history[result.best_epoch - 1]["val_accuracy"] >= 0.75, result.history  # chance is 0.25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.device == "cpu" and result.precision == "fp32"
    assert result.images_per_s > 0 and len(result.epoch_times) == 4
    assert result.rows == {"train": 48, "val": 16, "test": 16} and result.rejected_rows.empty
    assert result.label_rank == "species"

    model, meta = load_bundle(result.bundle_dir)
    assert meta.architecture == "resnet18" and meta.image_size == 32 and meta.num_classes == 4
    assert meta.dataset == {"name": "shapes"}
    assert meta.labels[0].path["genus"] == {"id": 200, "name": "Genus0"}
    assert meta.extra["training"]["best_epoch"] == result.best_epoch
    # The bundle holds the best epoch's weights, which are also in best_model.pt.
    best = torch.load(result.bundle_dir.parent / BEST_MODEL_FILE, weights_only=True)["model"]
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_progress_reports_every_epoch_and_every_n_steps(trained):
    result, events, _, _ = trained
    epochs = [e for e in events if e.kind == "epoch"]
    steps = [e for e in events if e.kind == "step"]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert [e.metrics for e in epochs] == result.history
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "images_per_s", "epoch_seconds"} <= set(epochs[0].metrics)
    assert steps and all(e.step % 2 == 0 for e in steps)  # 6 steps per epoch, reported every 2
    lrs = [e.metrics["lr"] for e in steps]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # cosine: warm-up, then decay


def test_interrupted_run_resumes_to_the_same_state_as_a_straight_run(tmp_path):
    manifest = tiny(tmp_path, per_class=8)
    config = replace(QUICK, epochs=3, batch_size=4, deterministic=True, optimizer="sgd", learning_rate=0.01,
                     label_smoothing=0.1, augmentation="trivial_augment", imbalance="weighted_sampler")
    train_classifier(manifest, str(tmp_path), config, tmp_path / "straight")

    class Killed(Exception):
        pass

    def kill_after_epoch_2(event: ProgressEvent) -> None:
        if event.kind == "epoch" and event.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_classifier(manifest, str(tmp_path), config, tmp_path / "resumed", progress=kill_after_epoch_2)
    resumed = train_classifier(manifest, str(tmp_path), config, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 3

    straight = torch.load(tmp_path / "straight" / CHECKPOINT_FILE, weights_only=True)
    again = torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=True)
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, again["model"][key]), key
    for index, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], again["optimizer"]["state"][index]["momentum_buffer"])
    assert torch.equal(straight["rng"]["torch"], again["rng"]["torch"])
    timing = {"epoch_seconds", "train_seconds", "images_per_s"}
    strip = lambda history: [{k: v for k, v in r.items() if k not in timing} for r in history]  # noqa: E731
    assert strip(straight["history"]) == strip(again["history"])

    # Resuming a finished run only rewrites the bundle; other settings refuse to resume.
    assert train_classifier(manifest, str(tmp_path), config, tmp_path / "resumed").epochs_run == 3
    with pytest.raises(ResumeError, match=r"\['learning_rate'\] differ"):
        train_classifier(manifest, str(tmp_path), replace(config, learning_rate=0.1), tmp_path / "resumed")


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    manifest = tiny(tmp_path)
    # No epoch can lower the val loss by 100, so epochs 2 and 3 count as no improvement.
    config = replace(FAST, architecture="tiny_cnn", epochs=10, early_stopping_patience=2, early_stopping_min_delta=100.0)
    result = train_classifier(manifest, str(tmp_path), config, tmp_path / "out")
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert [r["is_best"] for r in result.history] == [True, False, False]
    # tiny_cnn is in torchvision's registry, so the bundle rebuilds by name like any other.
    model, meta = load_bundle(result.bundle_dir)
    assert meta.architecture == "tiny_cnn" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("imbalance", ["none", "weighted_sampler", "loss_weights", "focal_loss"])
def test_each_imbalance_option_trains(tmp_path, imbalance):
    manifest = write_shapes_dataset(tmp_path, n_classes=3, per_class=[12, 4, 4], image_size=32, split_shares=(0.5, 0.5, 0.0))
    result = train_classifier(manifest, str(tmp_path), replace(QUICK, epochs=1, imbalance=imbalance), tmp_path / "out")
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.history[0]["val_loss"])


def test_weighted_sampler_draws_classes_evenly_and_loss_weights_are_balanced():
    targets = np.array([0] * 80 + [1] * 15 + [2] * 5)
    weights = balanced_class_weights(targets, 4)
    assert torch.allclose(weights, torch.tensor([100 / (4 * 80), 100 / (4 * 15), 100 / (4 * 5), 0.0]))
    sampler = train_sampler(targets, 3, weighted=True, generator=torch.Generator().manual_seed(0))
    draws = np.array([index for _ in range(30) for index in sampler])  # 30 epochs
    shares = np.bincount(targets[draws], minlength=3) / len(draws)
    assert np.allclose(shares, 1 / 3, atol=0.04)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.2, 0.1], [0.0, 2.0, 1.0]])
    target = torch.tensor([0, 2, 1])
    ce = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    assert torch.allclose(FocalLoss(0.0, label_smoothing=0.1)(logits, target), ce)
    weight = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(FocalLoss(0.0, weight=weight)(logits, target), torch.nn.functional.cross_entropy(logits, target, weight=weight))
    # The confident right answer (row 0) loses more of its loss than the hard one (row 1).
    easy, hard = (FocalLoss(2.0)(logits[[i]], target[[i]]) / torch.nn.functional.cross_entropy(logits[[i]], target[[i]]) for i in (0, 1))
    assert easy < hard < 1


def test_head_replacement_matches_the_builder_for_every_default_architecture():
    for name in DEFAULT_ARCHITECTURES:
        with torch.device("meta"):
            imagenet_shaped = tv_models.get_model(name, weights=None)
            replace_head(imagenet_shaped, 7)
            expected = tv_models.get_model(name, weights=None, num_classes=7)
        got = {k: v.shape for k, v in imagenet_shaped.state_dict().items()}
        assert got == {k: v.shape for k, v in expected.state_dict().items()}, name
    assert head_name(tv_models.get_model("resnet18", weights=None)) == "fc"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_imagenet_weights_offline_and_not_cached_fail_with_a_fix(tmp_path, monkeypatch):
    # An empty cache, and every download goes through a proxy on a closed loopback port.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        build_model("resnet18", 3, imagenet=True)
    message = str(error.value)
    assert "not cached at " + str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "TORCH_HOME" in message and "weights=none" in message
    with pytest.raises(PretrainedWeightsUnavailable, match="tiny_cnn has no ImageNet weights"):
        build_model("tiny_cnn", 3, imagenet=True)


def test_fine_tuning_from_a_model_uri_keeps_the_head_rows_of_shared_classes(tmp_path):
    manifest = tiny(tmp_path, n_classes=3)
    labels = build_labels(prepare_manifest(manifest).rows, "species")
    # The champion knew classes 1001 and 1002 (this dataset's second and third) and 999, which is gone.
    torch.manual_seed(5)
    champion = tv_models.get_model("resnet18", weights=None, num_classes=3)
    champion_labels = [ClassLabel(0, 1002, "b", {}), ClassLabel(1, 999, "gone", {}), ClassLabel(2, 1001, "a", {})]
    save_bundle(champion.state_dict(), BundleMeta("resnet18", champion_labels, 32, "species"), tmp_path / "champion")
    asked = []

    def loader(uri: str) -> Path:
        asked.append(uri)
        return tmp_path / "champion"

    # Learning rate 0: the weights stay as they were loaded.
    config = replace(FAST, epochs=1, weights="models:/shapes@champion", optimizer="sgd", learning_rate=0.0)
    result = train_classifier(manifest, str(tmp_path), config, tmp_path / "out", init_loader=loader)
    assert asked == ["models:/shapes@champion"]
    assert result.init == {"source": "models:/shapes@champion (%s)" % (tmp_path / "champion"), "kept_classes": 2, "new_classes": 1, "dropped_classes": 1}
    model, meta = load_bundle(result.bundle_dir)
    index = {label.label_id: label.index for label in meta.labels}
    source = champion.state_dict()
    assert torch.equal(model.fc.weight[index[1001]], source["fc.weight"][2])
    assert torch.equal(model.fc.weight[index[1002]], source["fc.weight"][0])
    assert not torch.equal(model.fc.weight[index[1000]], source["fc.weight"][1])
    assert torch.equal(model.conv1.weight, source["conv1.weight"])

    with pytest.raises(InitWeightsError, match="no init_loader"):
        train_classifier(manifest, str(tmp_path), config, tmp_path / "other")
    with pytest.raises(InitWeightsError, match="are for resnet18, but the config asks for resnet34"):
        train_classifier(manifest, str(tmp_path), replace(config, architecture="resnet34", weights=str(tmp_path / "champion")), tmp_path / "third")


def test_bad_manifest_rows_are_counted_and_missing_splits_explained(tmp_path):
    manifest = tiny(tmp_path)
    manifest.loc[0, "image_path"] = None
    manifest.loc[1, "split"] = "holdout"
    manifest.loc[2, "label_id"] = None
    prepared = prepare_manifest(manifest)
    assert prepared.rejected_counts() == {"image_path is missing": 1, "split is not one of ['train', 'val', 'test']": 1, "label_id is missing": 1}
    assert len(prepared.rows) == len(manifest) - 3
    with pytest.raises(ManifestError, match="no usable val rows.*Fix: give the dataset spec a val ratio"):
        train_classifier(manifest[manifest["split"] != "val"], str(tmp_path), QUICK, tmp_path / "out")


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(TrainingConfigError, match=r"optimizer='adam': is not one of the options. Fix: pass one of \['sgd', 'adamw'\]"):
        TrainingConfig(optimizer="adam")
    with pytest.raises(TrainingConfigError, match="image_size=64: vit_b_16 only takes 224x224"):
        TrainingConfig(architecture="vit_b_16", image_size=64)
    with pytest.raises(TrainingConfigError, match=r"unknown field\(s\) \['epoch'\]"):
        TrainingConfig.from_dict({"epoch": 3})
    assert TrainingConfig.from_dict(FAST.to_dict()) == FAST
