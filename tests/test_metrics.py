"""Evaluation (bioasset.metrics): every metric on hand-made predictions with known answers, the
artifacts, and a real bundle evaluated on Pillow-drawn images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import models as tv_models

from bioasset.classifier_bundle import BundleMeta, ClassLabel, load_bundle, load_bundle_meta, save_bundle
from bioasset.metrics import (
    ABSTAIN,
    AbstentionThreshold,
    apply_threshold,
    choose_threshold,
    cohen_kappa,
    display_names,
    evaluate_classifier,
    evaluate_predictions,
    expected_calibration_error,
    hierarchical_accuracy,
    mean_per_class_accuracy,
    per_class_table,
    threshold_split,
    threshold_sweep,
    top_k_accuracy,
    write_threshold,
)
from bioasset.training.data import build_labels, eval_transform, prepare_manifest
from bioasset.training.synthetic import write_shapes_dataset


def taxon_path(order, family, genus, species):
    return {"kingdom": {"id": 1, "name": "Animalia"}, "order": {"id": order, "name": None},
            "family": {"id": family, "name": None}, "genus": {"id": genus, "name": None}, "species": {"id": species, "name": None}}


#: Species 0 and 1 share genus 10; species 2 is in genus 20 of the same family, and its order is missing.
LABELS = [
    ClassLabel(0, 500, "Aus bus", taxon_path(7, 100, 10, 500)),
    ClassLabel(1, 501, "Aus cus", taxon_path(7, 100, 10, 501)),
    ClassLabel(2, 502, "Dus eus", taxon_path(None, 100, 20, 502)),
]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBABILITIES = np.array([
    [0.90, 0.05, 0.05],  # right, 0.90
    [0.30, 0.65, 0.05],  # wrong (same genus), 0.65; true class second
    [0.10, 0.85, 0.05],  # right, 0.85
    [0.15, 0.10, 0.75],  # wrong (other genus), 0.75; true class third
    [0.03, 0.02, 0.95],  # right, 0.95
    [0.20, 0.50, 0.30],  # wrong (other genus), 0.50; true class second
])
Y_PRED = PROBABILITIES.argmax(axis=1)  # 0, 1, 1, 2, 2, 1


def test_accuracies_and_kappa():
    assert top_k_accuracy(Y_TRUE, PROBABILITIES, 1) == 0.5
    assert top_k_accuracy(Y_TRUE, PROBABILITIES, 2) == pytest.approx(5 / 6)
    assert top_k_accuracy(Y_TRUE, PROBABILITIES, 5) == 1.0  # k capped at 3 classes
    assert mean_per_class_accuracy(Y_TRUE, Y_PRED, 3) == 0.5
    assert mean_per_class_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 3) == 0.5  # absent class 2 not averaged
    # p_o = 1/2; p_e = 1/3 x (1/6 + 3/6 + 2/6) = 1/3; kappa = (1/2 - 1/3) / (2/3)
    assert cohen_kappa(Y_TRUE, Y_PRED, 3) == pytest.approx(0.25)
    assert cohen_kappa(np.array([1, 1]), np.array([1, 1]), 3) is None  # chance agreement is total


def test_per_class_sensitivity_specificity_fall_out_and_precision():
    table = per_class_table(Y_TRUE, Y_PRED, LABELS).set_index("label_id")
    # class 1: TP 1 (row 3), FN 1 (row 4), FP 2 (rows 2 and 6), TN 2
    assert table.loc[501, ["true_positives", "false_negatives", "false_positives", "true_negatives"]].tolist() == [1, 1, 2, 2]
    assert table["sensitivity"].tolist() == [0.5, 0.5, 0.5]
    assert table["specificity"].tolist() == [1.0, 0.5, 0.75]
    assert table["fall_out"].tolist() == [0.0, 0.5, 0.25]
    assert table["precision"].tolist() == pytest.approx([1.0, 1 / 3, 0.5])
    never_predicted = per_class_table(np.array([0, 1]), np.array([0, 0]), LABELS[:2]).set_index("label_id")
    assert np.isnan(never_predicted.loc[501, "precision"])


def test_hierarchical_accuracy_counts_right_ancestors_of_wrong_species():
    result = hierarchical_accuracy(Y_TRUE, Y_PRED, LABELS, "species")
    assert list(result) == ["kingdom", "phylum", "class", "order", "family", "genus"]
    assert result["genus"] == pytest.approx(4 / 6)  # rows 4 and 6 cross genera
    assert result["family"] == 1.0
    # Rows of species 2 (no order) are not counted; row 4 predicts it, so its order is wrong.
    assert result["order"] == 0.75
    assert result["kingdom"] == 1.0
    assert result["phylum"] is None  # no class has a phylum in its path


def test_expected_calibration_error_and_bins():
    ece, bins = expected_calibration_error(Y_TRUE, PROBABILITIES, n_bins=5)
    # (0.4, 0.6]: 1 row, acc 0, conf 0.5; (0.6, 0.8]: 2 rows, acc 0, conf 0.7; (0.8, 1]: 3 rows, acc 1, conf 0.9
    assert ece == pytest.approx(1 / 6 * 0.5 + 2 / 6 * 0.7 + 3 / 6 * 0.1)
    assert bins["count"].tolist() == [0, 0, 1, 2, 3]
    assert bins["accuracy"].tolist()[2:] == [0.0, 0.0, 1.0]
    perfect, _ = expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect == 0.0


def test_threshold_is_the_lowest_confidence_reaching_the_target_precision():
    # Sorted by confidence: 0.95 ok, 0.90 ok, 0.85 ok, 0.75 wrong (3/4), 0.65 wrong, 0.50 wrong.
    assert choose_threshold(Y_TRUE, PROBABILITIES, 0.95) == 0.85
    assert choose_threshold(Y_TRUE, PROBABILITIES, 0.75) == 0.75
    assert choose_threshold(Y_TRUE, PROBABILITIES, 0.5) == 0.5
    # Rows tied at 0.8 are accepted together (1 of 2 right), so 0.8 cannot reach 0.9.
    tied = np.array([[0.9, 0.1], [0.8, 0.2], [0.8, 0.2]])
    assert choose_threshold(np.array([0, 0, 1]), tied, 0.9) == 0.9
    assert choose_threshold(np.array([1, 1, 0]), tied, 0.9) is None  # every prediction is wrong

    assert apply_threshold(PROBABILITIES, 0.85).tolist() == [0, ABSTAIN, 1, ABSTAIN, 2, ABSTAIN]
    assert apply_threshold(PROBABILITIES, None).tolist() == Y_PRED.tolist()

    sweep = threshold_sweep(Y_TRUE, PROBABILITIES).set_index("threshold")
    assert sweep.loc[0.0, ["coverage", "accuracy"]].tolist() == [1.0, 0.5]
    assert sweep.loc[0.8, ["coverage", "accuracy", "kappa"]].tolist() == [0.5, 1.0, 1.0]
    assert np.isnan(sweep.loc[1.0, "accuracy"]) and sweep.loc[1.0, "coverage"] == 0.0


def test_evaluate_predictions_writes_decodable_plots_and_tables(tmp_path):
    evaluation = evaluate_predictions(Y_TRUE, PROBABILITIES, LABELS, label_rank="species", target_precision=0.95, out_dir=tmp_path)
    assert evaluation.threshold == AbstentionThreshold(0.85, "test", 0.95)  # no threshold given: chosen on these rows
    metrics = evaluation.metrics
    assert metrics["split"] == "test" and metrics["threshold_split"] == "test"
    assert metrics["top1_accuracy"] == 0.5 and metrics["cohen_kappa"] == pytest.approx(0.25)
    assert metrics["coverage_at_threshold"] == 0.5 and metrics["accuracy_at_threshold"] == 1.0
    assert metrics["genus_accuracy"] == pytest.approx(4 / 6) and metrics["phylum_accuracy"] is None
    assert set(evaluation.artifacts) == {
        "confusion_matrix.csv", "confusion_matrix.png", "threshold_sweep.csv", "threshold_sweep.png",
        "calibration.csv", "reliability_diagram.png", "per_class.csv", "metrics.json",
    }
    for name, path in evaluation.artifacts.items():
        assert path.parent == tmp_path and path.stat().st_size > 0, name
        if name.endswith(".png"):
            with Image.open(path) as image:
                image.verify()
                assert image.format == "PNG" and min(image.size) > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(evaluation.artifacts)  # no temporary files left
    matrix = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert matrix.loc["Aus cus", "Dus eus"] == 1 and matrix.to_numpy().sum() == 6
    assert json.loads((tmp_path / "metrics.json").read_text())["threshold"] == 0.85


#: Test-split predictions for a threshold of 0.85 chosen on other rows: 0.88 is a confident mistake.
TEST_TRUE = np.array([0, 1, 2, 2])
TEST_PROBABILITIES = np.array([
    [0.90, 0.05, 0.05],  # right, 0.90
    [0.88, 0.10, 0.02],  # wrong, 0.88
    [0.10, 0.10, 0.80],  # right, 0.80: below 0.85
    [0.00, 0.05, 0.95],  # right, 0.95
])


def test_a_threshold_chosen_on_val_is_applied_on_test_not_chosen_again(tmp_path):
    chosen = AbstentionThreshold.choose(Y_TRUE, PROBABILITIES, 0.95, split="val")
    assert chosen == AbstentionThreshold(0.85, "val", 0.95)
    evaluation = evaluate_predictions(TEST_TRUE, TEST_PROBABILITIES, LABELS, label_rank="species", threshold=chosen, out_dir=tmp_path)
    assert evaluation.threshold == chosen
    metrics = evaluation.metrics
    assert (metrics["split"], metrics["threshold_split"], metrics["threshold"], metrics["target_precision"]) == ("test", "val", 0.85, 0.95)
    # Out of sample: 0.90, 0.88 and 0.95 are accepted and one of them is wrong. Chosen on these rows,
    # the threshold would have been 0.90, with a flattering 100% at half the coverage.
    assert metrics["coverage_at_threshold"] == 0.75 and metrics["accuracy_at_threshold"] == pytest.approx(2 / 3)
    assert choose_threshold(TEST_TRUE, TEST_PROBABILITIES, 0.95) == 0.90


def test_without_a_threshold_nothing_abstains_and_the_numbers_say_so(tmp_path):
    # No confidence reached the target where it was chosen: the bundle then answers every image.
    unreachable = AbstentionThreshold(None, "val", 0.99)
    metrics = evaluate_predictions(TEST_TRUE, TEST_PROBABILITIES, LABELS, label_rank="species", threshold=unreachable, out_dir=tmp_path).metrics
    assert (apply_threshold(TEST_PROBABILITIES, None) != ABSTAIN).all()
    assert metrics["threshold"] is None and metrics["coverage_at_threshold"] == 1.0
    assert metrics["accuracy_at_threshold"] == metrics["top1_accuracy"] == 0.75


def test_threshold_split_is_val_unless_a_class_has_no_usable_val_row():
    rows = [(1, 500, "val"), (2, 501, "val"), (3, 502, "train"), (4, 502, "test"), (5, 777, "val")]  # 777: a class the bundle lacks
    manifest = pd.DataFrame(
        [{"photo_id": p, "label_id": label, "label_name": f"taxon {label}", "split": split, "image_path": f"{p}.jpg"} for p, label, split in rows]
    )
    split, note = threshold_split(manifest, LABELS)
    assert split == "test"
    assert "1 of the 3 classes (Dus eus)" in note and "in-sample" in note and "Fix: " in note
    unusable = pd.concat([manifest, manifest.head(1).assign(photo_id=6, label_id=502, image_path=None)])  # rejected: no image
    assert threshold_split(unusable, LABELS)[0] == "test"
    complete = pd.concat([manifest, manifest.head(1).assign(photo_id=7, label_id=502)])
    assert threshold_split(complete, LABELS) == ("val", "")


def test_display_names_disambiguate_repeated_names():
    labels = [ClassLabel(0, 4337, "Morus", {}), ClassLabel(1, 54640, "Morus", {}), ClassLabel(2, 55401, "Pieris", {})]
    assert display_names(labels) == ["Morus (4337)", "Morus (54640)", "Pieris"]


def test_evaluate_classifier_runs_a_bundle_over_the_test_split(tmp_path):
    manifest = write_shapes_dataset(tmp_path, n_classes=3, per_class=10, image_size=40)
    labels = build_labels(prepare_manifest(manifest).rows, "species")
    torch.manual_seed(0)
    model = tv_models.get_model("resnet18", weights=None, num_classes=3)
    meta = BundleMeta("resnet18", labels, 32, "species", extra={"training": {"images_per_s": 12.5, "mean_epoch_seconds": 3.0}})
    save_bundle(model.state_dict(), meta, tmp_path / "bundle")
    # One test row of a class the bundle never saw, and one unusable row.
    extra = manifest[manifest["split"] == "test"].head(2).copy()
    extra["photo_id"] = [901, 902]
    extra.loc[extra.index[0], "label_id"] = 77
    extra.loc[extra.index[1], "image_path"] = None
    evaluation = evaluate_classifier(tmp_path / "bundle", pd.concat([manifest, extra]), str(tmp_path), out_dir=tmp_path / "eval", batch_size=4)

    test_rows = manifest[manifest["split"] == "test"]
    assert evaluation.metrics["images"] == len(test_rows) == 6
    assert evaluation.metrics["rows_unknown_label"] == 1 and evaluation.metrics["rows_rejected"] == 1
    assert evaluation.metrics["train_images_per_s"] == 12.5 and evaluation.metrics["eval_images_per_s"] > 0
    assert evaluation.per_class["support"].tolist() == [2, 2, 2]
    # The same predictions as the bundle's model applied by hand to the same preprocessing.
    loaded, loaded_meta = load_bundle(tmp_path / "bundle")
    transform = eval_transform(loaded_meta.image_size)
    images = torch.stack([transform(Image.open(tmp_path / p).convert("RGB")) for p in test_rows["image_path"]])
    with torch.no_grad():
        expected = loaded(images).argmax(1).numpy()
    confusion = pd.read_csv(evaluation.artifacts["confusion_matrix.csv"], index_col=0).to_numpy()
    assert np.bincount(expected, minlength=3).tolist() == confusion.sum(axis=0).tolist(), expected

    stored = write_threshold(tmp_path / "bundle", 0.7)
    assert stored.threshold == load_bundle_meta(tmp_path / "bundle").threshold == 0.7
    reloaded, _ = load_bundle(tmp_path / "bundle")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in reloaded.state_dict().items())
