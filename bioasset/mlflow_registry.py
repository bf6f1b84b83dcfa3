"""MLflow 3 for bioasset classifiers: one experiment and one registered model per dataset.

- Experiment ``bioasset/{dataset}``, its artifacts under the artifact root.
- A training run logs its params, per-epoch metrics (``step`` = epoch), the test metrics
  (``test_*``), the dataset version as a run input, the evaluation plots and tables, and the
  model as a pyfunc (:mod:`bioasset.pyfunc_model`) that carries the classifier bundle.
- The abstention threshold stored in the model is chosen on the val split and reported on the
  test split (``test_threshold``, ``test_coverage_at_threshold``, ``test_accuracy_at_threshold``);
  the ``threshold_split`` tag says which split chose it (``test`` only when val is too small,
  with the reason in ``threshold_split_note``), and ``val_*_at_threshold`` are its numbers there.
- Each run registers a new version of ``bioasset-{dataset}``, tagged with the dataset version,
  the snapshot, the architecture and the caller's tags (the Dagster run id and partition), and
  moves the ``challenger`` alias to it.
- ``champion`` moves only through :meth:`MlflowRegistry.promote_if_better`: the challenger must
  beat the champion on the challenger's own test split (top-1, then Cohen's kappa). The decision
  and its numbers become tags on the challenger's model version and run.

Plain Python: no Dagster here. Stages are not used (deprecated in MLflow); aliases are.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from bioasset.classifier_bundle import load_bundle_meta
from bioasset.pyfunc_model import BUNDLE_ARTIFACT, ClassifierPyfunc, pyfunc_signature_and_example

EXPERIMENT_PREFIX = "bioasset/"
REGISTERED_MODEL_PREFIX = "bioasset-"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Name of the logged model inside a run (``runs:/{run_id}/model``).
MODEL_NAME = "model"
#: Evaluation on the test split is logged as ``test_{metric}``.
TEST_METRIC_PREFIX = "test_"
#: Promotion compares these metrics of bioasset.metrics.evaluate_classifier on a test split.
PRIMARY_METRIC = "top1_accuracy"
TIE_BREAK_METRIC = "cohen_kappa"
#: Folder of the run's artifacts that holds the evaluation plots and tables.
EVALUATION_ARTIFACT_DIR = "evaluation"

# Tag keys, the same on a run and on its model version.
TAG_DATASET = "dataset"
TAG_DATASET_VERSION = "dataset_version"
TAG_SNAPSHOT = "snapshot"
TAG_ARCHITECTURE = "architecture"
TAG_DAGSTER_RUN_ID = "dagster_run_id"
TAG_DAGSTER_PARTITION = "dagster_partition"
TAG_THRESHOLD_SPLIT = "threshold_split"
TAG_THRESHOLD_SPLIT_NOTE = "threshold_split_note"
PROMOTION_TAG_PREFIX = "promotion."
#: The abstention threshold's numbers on the split that chose it, logged as ``{split}_{metric}``.
THRESHOLD_METRICS = ("coverage_at_threshold", "accuracy_at_threshold", "kappa_at_threshold")

#: MLflow stores a dataset digest in 36 characters; longer version ids are cut (the full id is in the name).
MLFLOW_DIGEST_MAX = 36


def experiment_name(dataset: str) -> str:
    return f"{EXPERIMENT_PREFIX}{dataset}"


def registered_model_name(dataset: str) -> str:
    return f"{REGISTERED_MODEL_PREFIX}{dataset}"


def alias_uri(model_name: str, alias: str = CHAMPION) -> str:
    return f"models:/{model_name}@{alias}"


def version_uri(model_name: str, version: str | int) -> str:
    return f"models:/{model_name}/{version}"


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; exactly one of alias, version is set."""
    body = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
    if body:
        if "@" in body and "/" not in body:
            name, alias = body.split("@", 1)
            if name and alias:
                return name, alias, None
        parts = body.split("/")
        if len(parts) == 2 and parts[0] and parts[1].isdigit():
            return parts[0], None, parts[1]
    raise ValueError(
        f"Model URI {model_uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION. "
        f"Fix: use e.g. {alias_uri(registered_model_name('DATASET'))} or models:/{registered_model_name('DATASET')}/3."
    )


@dataclass(frozen=True)
class DatasetVersionRef:
    """A frozen dataset version of the registry, as a run's input."""

    name: str
    version: str  # the registry's version id
    snapshot: str
    source: str  # where its manifest lives, e.g. {warehouse}/datasets/{name}/{version}/manifest.parquet

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class TrainingRun:
    """Everything a finished training + evaluation hands to MLflow."""

    dataset: DatasetVersionRef
    manifest: pd.DataFrame
    architecture: str
    bundle_dir: Path
    params: Mapping[str, Any]
    epoch_metrics: Sequence[Mapping[str, Any]]  # one mapping per epoch; an "epoch" key, when present, is the step
    test_metrics: Mapping[str, Any]  # evaluation on the test split; must hold PRIMARY_METRIC (and TIE_BREAK_METRIC) for promotion
    artifacts: Sequence[Path] = ()  # confusion matrix, threshold curve, per-class table …
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)  # other final numbers, logged under their own names
    split_artifacts: Mapping[str, Sequence[Path]] = field(default_factory=dict)  # other splits' evaluation files, under evaluation/{split}/


@dataclass(frozen=True)
class RegisteredClassifier:
    """Where a training run landed in MLflow."""

    experiment_id: str
    run_id: str
    registered_model_name: str
    version: str
    logged_model_uri: str  # models:/m-… (MLflow 3 logged model)

    @property
    def model_uri(self) -> str:
        return version_uri(self.registered_model_name, self.version)


@dataclass(frozen=True)
class Scores:
    """The numbers promotion compares, measured on one test split."""

    top1: float
    kappa: float | None  # None where undefined (e.g. one class in the split)

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], *, prefix: str = "", where: str = "metrics") -> "Scores":
        top1 = metrics.get(f"{prefix}{PRIMARY_METRIC}")
        if top1 is None:
            raise KeyError(
                f"{where} lack {prefix}{PRIMARY_METRIC} (have: {', '.join(sorted(metrics)) or 'none'}). "
                f"Fix: evaluate on the test split (bioasset.metrics.evaluate_classifier) and log its metrics with prefix '{prefix}'."
            )
        kappa = metrics.get(f"{prefix}{TIE_BREAK_METRIC}")
        return cls(top1=float(top1), kappa=None if kappa is None or math.isnan(kappa) else float(kappa))


@dataclass(frozen=True)
class PromotionDecision:
    registered_model_name: str
    challenger_version: str
    challenger: Scores
    champion_version: str | None  # the champion before the decision
    champion: Scores | None  # on the same test split as the challenger
    compared_on: str  # dataset@version whose test split both were scored on
    champion_reevaluated: bool  # True when the champion was trained on another dataset version
    promote: bool
    reason: str

    @property
    def outcome(self) -> str:
        return "promoted" if self.promote else "kept_champion"

    def tags(self) -> dict[str, str]:
        """The decision as MLflow tags (``promotion.*``)."""
        values: dict[str, Any] = {
            "decision": self.outcome,
            "reason": self.reason,
            "compared_on": self.compared_on,
            f"challenger_{PRIMARY_METRIC}": self.challenger.top1,
            f"challenger_{TIE_BREAK_METRIC}": self.challenger.kappa,
            "champion_version": self.champion_version or "none",
            "champion_reevaluated": self.champion_reevaluated,
        }
        if self.champion is not None:
            values[f"champion_{PRIMARY_METRIC}"] = self.champion.top1
            values[f"champion_{TIE_BREAK_METRIC}"] = self.champion.kappa
        return {f"{PROMOTION_TAG_PREFIX}{key}": str(value) for key, value in values.items()}


def decide_promotion(challenger: Scores, champion: Scores | None) -> tuple[bool, str]:
    """(promote?, why). Higher top-1 wins; on equal top-1, higher kappa; a full tie keeps the champion."""
    if champion is None:
        return True, "no champion yet"
    if not math.isclose(challenger.top1, champion.top1, abs_tol=1e-9):
        better = challenger.top1 > champion.top1
        return better, f"{PRIMARY_METRIC} {challenger.top1:.4f} {'>' if better else '<'} champion's {champion.top1:.4f}"
    tied = f"{PRIMARY_METRIC} tied at {challenger.top1:.4f}"
    if challenger.kappa is None or champion.kappa is None:
        return False, f"{tied} and {TIE_BREAK_METRIC} is undefined for one of them; the champion stays"
    if not math.isclose(challenger.kappa, champion.kappa, abs_tol=1e-9):
        better = challenger.kappa > champion.kappa
        return better, f"{tied}; {TIE_BREAK_METRIC} {challenger.kappa:.4f} {'>' if better else '<'} champion's {champion.kappa:.4f}"
    return False, f"tied with the champion on {PRIMARY_METRIC} and {TIE_BREAK_METRIC}; the champion stays"


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (start_run, log_model, register_model) at ``uri`` for a block.

    Afterwards both the process-wide URI and the ``MLFLOW_TRACKING_URI`` variable are as before:
    MLflow's setter also rewrites the variable, and restoring with it alone would turn a URI that
    came from the environment into a process-wide one (or drop it).
    """
    from mlflow.tracking._tracking_service import utils as tracking_state  # the only place the set URI is kept

    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    set_before = tracking_state._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(set_before)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def pip_requirements() -> list[str]:
    """The logged model's requirements, pinned to this environment (skips MLflow's slow inference).

    The model also needs the ``bioasset`` package importable (its pyfunc class lives there).
    """
    from importlib.metadata import version

    # Without the local label (torch 2.14.1+cu130 -> 2.14.1): pip resolves the build for the machine.
    return [f"{package}=={version(package).split('+')[0]}" for package in ("mlflow", "torch", "torchvision", "pillow", "pandas", "fsspec")]


def numeric_metrics(values: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """The entries MLflow can log as metrics: finite-or-NaN numbers (no bools, strings or None)."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _epoch_steps(epoch_metrics: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, dict[str, float]]]:
    for index, metrics in enumerate(epoch_metrics):
        step = int(metrics.get("epoch", index))
        yield step, {k: v for k, v in numeric_metrics(metrics).items() if k != "epoch"}


class MlflowRegistry:
    """Tracking and registry operations on one MLflow store.

    ``tags`` go on every run this object starts and on every model version it registers (the
    Dagster resource passes the Dagster run id and partition).
    """

    def __init__(self, tracking_uri: str, artifact_root: str, tags: Mapping[str, str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.tags = dict(tags or {})
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- experiments and runs --------------------------------------------------------------

    def experiment_id(self, dataset: str) -> str:
        """The dataset's experiment, created with its artifact location under the artifact root."""
        name = experiment_name(dataset)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}"
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={TAG_DATASET: dataset})
        except MlflowException:  # created meanwhile by a parallel partition
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_training_run(self, run: TrainingRun) -> RegisteredClassifier:
        """Log one training run and register its model as a new ``challenger`` version."""
        dataset = run.dataset
        experiment_id = self.experiment_id(dataset.name)
        identity = {
            TAG_DATASET: dataset.name,
            TAG_DATASET_VERSION: dataset.version,
            TAG_SNAPSHOT: dataset.snapshot,
            TAG_ARCHITECTURE: run.architecture,
        }
        tags = {**self.tags, **run.tags, **identity}
        signature, example = pyfunc_signature_and_example(load_bundle_meta(run.bundle_dir))
        name = registered_model_name(dataset.name)
        with tracking_uri(self.tracking_uri):
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{run.architecture} {dataset.label}", tags=tags) as active:
                mlflow.log_params({key: str(value) for key, value in run.params.items()})
                for step, numbers in _epoch_steps(run.epoch_metrics):
                    mlflow.log_metrics(numbers, step=step)
                mlflow.log_metrics(numeric_metrics(run.test_metrics, prefix=TEST_METRIC_PREFIX) | numeric_metrics(run.metrics))
                source = mlflow.data.from_pandas(
                    run.manifest, source=dataset.source, name=dataset.label, digest=dataset.version[:MLFLOW_DIGEST_MAX]
                )
                mlflow.log_input(source, context="training", tags={TAG_DATASET_VERSION: dataset.version, TAG_SNAPSHOT: dataset.snapshot})
                for path in run.artifacts:
                    mlflow.log_artifact(str(path), artifact_path=EVALUATION_ARTIFACT_DIR)
                for split, paths in run.split_artifacts.items():
                    for path in paths:
                        mlflow.log_artifact(str(path), artifact_path=f"{EVALUATION_ARTIFACT_DIR}/{split}")
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME,
                    python_model=ClassifierPyfunc(),
                    artifacts={BUNDLE_ARTIFACT: str(run.bundle_dir)},
                    signature=signature,
                    input_example=example,
                    pip_requirements=pip_requirements(),
                    tags=identity,
                )
                version = mlflow.register_model(info.model_uri, name, tags=tags)
        self.client.set_registered_model_alias(name, CHALLENGER, version.version)
        return RegisteredClassifier(
            experiment_id=experiment_id,
            run_id=active.info.run_id,
            registered_model_name=name,
            version=str(version.version),
            logged_model_uri=info.model_uri,
        )

    # -- registry ---------------------------------------------------------------------------

    def model_version(self, model_name: str, version: str | int) -> ModelVersion:
        return self.client.get_model_version(model_name, str(version))

    def alias_version(self, model_name: str, alias: str) -> ModelVersion | None:
        """The version an alias points at, or None when the alias (or the model) does not exist."""
        try:
            return self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def registered_models(self) -> list[str]:
        """Names of the bioasset registered models, sorted."""
        models = self.client.search_registered_models(filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'")
        return sorted(model.name for model in models)

    def latest_version(self, model_name: str, architecture: str) -> ModelVersion | None:
        """The newest version of ``model_name`` trained with ``architecture``, or None."""
        found = self.client.search_model_versions(
            f"name='{model_name}' AND tags.{TAG_ARCHITECTURE}='{architecture}'", order_by=["version_number DESC"], max_results=1
        )
        return found[0] if found else None


    def test_scores(self, version: ModelVersion) -> Scores:
        """A version's scores on the test split of the dataset version it was trained on (its run's test_* metrics)."""
        metrics = self.client.get_run(version.run_id).data.metrics
        return Scores.from_metrics(
            metrics, prefix=TEST_METRIC_PREFIX, where=f"Run {version.run_id} of {version.name} version {version.version}"
        )

    def resolve(self, model_uri: str) -> ModelVersion:
        """The model version of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; errors say what exists."""
        name, alias, version = parse_model_uri(model_uri)
        if alias is not None:
            found = self.alias_version(name, alias)
            if found is None:
                raise LookupError(
                    f"{model_uri}: model '{name}' has no version with alias '{alias}' in {self.tracking_uri}. "
                    f"Fix: materialize classifier_promotion for it, or pick a version: models:/{name}/N."
                )
            return found
        try:
            return self.model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = ", ".join(self.registered_models()) or "none"
            raise LookupError(
                f"{model_uri}: no such model version in {self.tracking_uri} (bioasset models: {known}). "
                f"Fix: pick an existing version, or use {alias_uri(name)}."
            ) from exc

    def download_bundle(self, model_uri: str, dst_dir: str | os.PathLike) -> Path:
        """Download a registered classifier (``models:/NAME@ALIAS`` or ``/VERSION``) and return its bundle folder."""
        from mlflow.models import Model

        found = self.resolve(model_uri)
        # The download URI is the artifact location itself, so this needs no global registry URI.
        source = self.client.get_model_version_download_uri(found.name, found.version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst_dir), tracking_uri=self.tracking_uri))
        flavor = Model.load(str(local)).flavors.get("python_function", {})
        bundle = (flavor.get("artifacts") or {}).get(BUNDLE_ARTIFACT, {}).get("path")
        if not bundle:
            raise ValueError(
                f"{model_uri} has no '{BUNDLE_ARTIFACT}' artifact, so it is not a bioasset classifier pyfunc. "
                "Fix: point at a model registered by the classifier asset (models:/bioasset-DATASET@champion)."
            )
        return local / bundle

    # -- promotion ---------------------------------------------------------------------------

    def promote_if_better(
        self,
        model_name: str,
        version: str | int,
        evaluate_champion: Callable[[Path], Scores],
        *,
        workdir: str | os.PathLike | None = None,
    ) -> PromotionDecision:
        """Compare ``version`` with the champion on ``version``'s test split; move ``champion`` if it wins.

        When the champion was trained on another dataset version its recorded numbers are not
        comparable, so its bundle is downloaded and ``evaluate_champion(bundle_dir)`` scores it on the
        challenger's test split. The decision is recorded as ``promotion.*`` tags on the
        challenger's model version and run, and returned.
        """
        challenger = self.model_version(model_name, version)
        challenger_scores = self.test_scores(challenger)
        champion = self.alias_version(model_name, CHAMPION)
        compared_on = f"{challenger.tags.get(TAG_DATASET, '?')}@{challenger.tags.get(TAG_DATASET_VERSION, '?')}"
        champion_scores, reevaluated = None, False
        if champion is None:
            promote, reason = decide_promotion(challenger_scores, None)
        elif str(champion.version) == str(challenger.version):
            promote, reason = False, "this version is already the champion"
            champion_scores = challenger_scores
        else:
            if champion.tags.get(TAG_DATASET_VERSION) == challenger.tags.get(TAG_DATASET_VERSION):
                champion_scores = self.test_scores(champion)
            else:
                with tempfile.TemporaryDirectory(dir=workdir, prefix="champion-") as scratch:
                    champion_scores = evaluate_champion(self.download_bundle(version_uri(model_name, champion.version), scratch))
                reevaluated = True
            promote, reason = decide_promotion(challenger_scores, champion_scores)
        decision = PromotionDecision(
            registered_model_name=model_name,
            challenger_version=str(challenger.version),
            challenger=challenger_scores,
            champion_version=None if champion is None else str(champion.version),
            champion=champion_scores,
            compared_on=compared_on,
            champion_reevaluated=reevaluated,
            promote=promote,
            reason=reason,
        )
        self.record_promotion(decision, run_id=challenger.run_id)
        return decision

    def record_promotion(self, decision: PromotionDecision, *, run_id: str | None) -> None:
        """Tag the challenger's version (and run) with the decision; move ``champion`` when it won."""
        name, version = decision.registered_model_name, decision.challenger_version
        for key, value in decision.tags().items():
            self.client.set_model_version_tag(name, version, key, value)
            if run_id:
                self.client.set_tag(run_id, key, value)
        if decision.promote:
            self.client.set_registered_model_alias(name, CHAMPION, version)
            if decision.champion_version:
                self.client.set_model_version_tag(name, decision.champion_version, f"{PROMOTION_TAG_PREFIX}replaced_by", version)


# -- one classifier partition, end to end ----------------------------------------------------------
# Plain functions over training, metrics and this registry, so that the Dagster assets stay thin.


@dataclass
class ClassifierRun:
    """What :func:`train_and_register` did."""

    registered: RegisteredClassifier
    training: Any  # bioasset.training.TrainingResult
    evaluation: Any  # bioasset.metrics.Evaluation on the test split; .threshold is the one stored in the model
    threshold_evaluation: Any  # bioasset.metrics.Evaluation on the split that chose the threshold; None when that was test
    init: str  # where the starting weights came from
    artifact_uri: str  # the run's artifact root; evaluation files are under EVALUATION_ARTIFACT_DIR
    plots: dict[str, bytes]  # evaluation PNGs by file name (their files are gone with the work folder)
    elapsed_s: float


def champion_init(registry: MlflowRegistry, dataset: str, architecture: str) -> tuple[str | None, str]:
    """(weights URI, note): the dataset's champion pinned to its version when it has ``architecture``.

    Fine-tuning needs the same architecture, so other champions give (None, why) and training
    starts from its configured weights.
    """
    name = registered_model_name(dataset)
    champion = registry.alias_version(name, CHAMPION)
    if champion is None:
        return None, f"{alias_uri(name)} does not exist yet"
    if champion.tags.get(TAG_ARCHITECTURE) != architecture:
        return None, f"the champion (version {champion.version}) is a {champion.tags.get(TAG_ARCHITECTURE)}, not a {architecture}"
    uri = version_uri(name, champion.version)
    return uri, f"fine-tuned from the champion {uri}"


def train_and_register(
    registry: MlflowRegistry,
    dataset: DatasetVersionRef,
    manifest: pd.DataFrame,
    image_store_url: str,
    config: Any,  # bioasset.training.TrainingConfig
    work_dir: str | os.PathLike,
    *,
    init_from_champion: bool = False,
    target_precision: float = 0.95,
    progress: Callable[[Any], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ClassifierRun:
    """Train on ``dataset``, choose the abstention threshold on its val split, evaluate on its test
    split at that threshold, store the threshold in the bundle, log the run and register the
    model as the new ``challenger``. When val is too small to choose on (see
    :func:`bioasset.metrics.threshold_split`) the test split chooses, and the run's
    ``threshold_split`` / ``threshold_split_note`` tags say so.

    ``work_dir`` holds the checkpoints: a failed run started again with the same ``work_dir``
    resumes. It is removed once the model is registered (MLflow keeps the bundle).
    """
    import dataclasses
    import functools
    import shutil
    import time

    from bioasset.metrics import evaluate_classifier, threshold_split, write_threshold
    from bioasset.training import train_classifier

    started = time.perf_counter()
    work = Path(work_dir)
    init = config.weights
    if init_from_champion:
        champion_uri, note = champion_init(registry, dataset.name, config.architecture)
        if champion_uri is not None:
            config = dataclasses.replace(config, weights=champion_uri)
            init = note
        else:
            init = f"{config.weights} ({note})"
    options = dict(storage_options or {})
    training = train_classifier(
        manifest,
        image_store_url,
        config,
        work,
        progress=progress,
        init_loader=lambda uri: registry.download_bundle(uri, tempfile.mkdtemp(prefix="init-", dir=work)),
        dataset_info={"name": dataset.name, "version": dataset.version, "snapshot": dataset.snapshot, "source": dataset.source},
        storage_options=options,
    )
    evaluate = functools.partial(
        evaluate_classifier, training.bundle_dir, manifest, image_store_url,
        target_precision=target_precision, device=config.device, storage_options=options,
    )  # fmt: skip
    # The threshold is chosen on val and only applied on test, so the test numbers at it are out of sample.
    chosen_on, note = threshold_split(manifest, load_bundle_meta(training.bundle_dir).labels)
    threshold_evaluation = evaluate(split=chosen_on, out_dir=work / f"evaluation-{chosen_on}") if chosen_on != "test" else None
    evaluation = evaluate(
        split="test", threshold=threshold_evaluation.threshold if threshold_evaluation else None, out_dir=work / "evaluation"
    )
    write_threshold(training.bundle_dir, evaluation.threshold.value)
    threshold_tags = {TAG_THRESHOLD_SPLIT: chosen_on, **({TAG_THRESHOLD_SPLIT_NOTE: note} if note else {})}
    threshold_numbers: dict[str, Any] = {}
    split_artifacts: dict[str, list[Path]] = {}
    if threshold_evaluation is not None:
        threshold_numbers = {f"{chosen_on}_{name}": threshold_evaluation.metrics[name] for name in THRESHOLD_METRICS}
        split_artifacts = {chosen_on: [threshold_evaluation.artifacts[name] for name in ("threshold_sweep.csv", "threshold_sweep.png")]}
    registered = registry.log_training_run(
        TrainingRun(
            dataset=dataset,
            manifest=manifest,
            architecture=config.architecture,
            bundle_dir=training.bundle_dir,
            params={**config.to_dict(), "init": init, "target_precision": target_precision, **training.summary()},
            epoch_metrics=training.history,
            test_metrics=evaluation.metrics,
            artifacts=list(evaluation.artifacts.values()),
            tags=threshold_tags,
            metrics=threshold_numbers,
            split_artifacts=split_artifacts,
        )
    )
    artifact_uri = registry.client.get_run(registered.run_id).info.artifact_uri
    plots = {name: path.read_bytes() for name, path in evaluation.artifacts.items() if name.endswith(".png")}
    shutil.rmtree(work, ignore_errors=True)
    return ClassifierRun(registered, training, evaluation, threshold_evaluation, init, artifact_uri, plots, time.perf_counter() - started)


def scores_on_split(metrics: Mapping[str, Any]) -> Scores:
    """Scores of an evaluation, counting rows the model cannot score (classes it never saw) as misses.

    ``evaluate_classifier`` leaves such rows out; an older champion would otherwise be scored on
    the easier part of a newer test split. Kappa stays as computed on the scored rows.
    """
    scores = Scores.from_metrics(metrics)
    scored, unknown = metrics.get("images") or 0, metrics.get("rows_unknown_label") or 0
    if unknown and scored:
        return Scores(top1=scores.top1 * scored / (scored + unknown), kappa=scores.kappa)
    return scores


def promote_latest(
    registry: MlflowRegistry,
    dataset: str,
    architecture: str,
    manifest_of: Callable[[str], pd.DataFrame],
    image_store_url: str,
    work_dir: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> PromotionDecision:
    """The promotion gate for the newest ``architecture`` version of ``dataset``'s model.

    ``manifest_of(dataset_version)`` returns the frozen manifest of a dataset version; it is read
    only when the champion was trained on another version and must be scored on the challenger's
    test split.
    """
    from bioasset.metrics import evaluate_classifier

    name = registered_model_name(dataset)
    challenger = registry.latest_version(name, architecture)
    if challenger is None:
        raise LookupError(
            f"{name} has no {architecture} version in {registry.tracking_uri}. "
            f"Fix: materialize the classifier partition {dataset}|{architecture} first."
        )

    def evaluate_champion(bundle_dir: Path) -> Scores:
        manifest = manifest_of(challenger.tags[TAG_DATASET_VERSION])
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="champion-evaluation-") as out:
            evaluation = evaluate_classifier(
                bundle_dir, manifest, image_store_url, split="test", out_dir=out, device=device, storage_options=dict(storage_options or {})
            )
        return scores_on_split(evaluation.metrics)

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return registry.promote_if_better(name, challenger.version, evaluate_champion, workdir=work_dir)
