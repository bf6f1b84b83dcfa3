"""Classifier assets: ``classifier[dataset|arch]`` → ``classifier_promotion[dataset|arch]``.

Thin wrappers over :mod:`bioasset.mlflow_registry` (which drives :mod:`bioasset.training` and
:mod:`bioasset.metrics`):

- ``classifier`` trains ``arch`` on the newest frozen version of ``dataset``, evaluates it on the
  test split, logs the MLflow run and registers a new version of ``bioasset-{dataset}`` with the
  ``challenger`` alias. The model goes to MLflow, never through the IO manager.
- ``classifier_promotion`` is the gate: it compares that version with the dataset's ``champion``
  on the challenger's test split and moves ``champion`` only if it wins. It is an asset, not an
  asset check, because it changes state (the alias) and its history of decisions is worth keeping
  as materializations; a check may be re-run at will and should only observe.

Partitions: ``dataset`` (the dataset assets' static partitions) × ``arch`` (``DEFAULT_ARCHITECTURES``
of the training module, or ``BIOASSET_CLASSIFIER_ARCHITECTURES``, comma-separated; ``resnet18`` at
32-64 px is the quick demo one). Both assets use the ``gpu`` pool: one training or evaluation at
a time on the machine (``dagster.yaml``).

Automation: both carry ``AutomationCondition.eager()``, evaluated only by
``classifier_automation_sensor`` (stopped until a user starts it). When started, a new dataset
version retrains that dataset's classifiers (every configured architecture), then runs the gate.
With ``init: champion`` (or ``BIOASSET_CLASSIFIER_INIT=champion`` for runs the sensor launches)
a retrain fine-tunes the dataset's champion when it has the same architecture.
"""

import base64
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field, create_model

from bioasset import config as settings
from bioasset.assets.datasets import DATASET_ASSETS
from bioasset.assets.metadata import markdown_table
from bioasset.registry import manifest_path, read_manifest, resolve_version
from bioasset.resources import WarehouseResource
from bioasset.resources.image_store import ImageStoreResource
from bioasset.resources.mlflow import MlflowResource
from bioasset.training.config import DEFAULT_ARCHITECTURES, TINY_CNN, TrainingConfig

if typing.TYPE_CHECKING:
    from bioasset.mlflow_registry import ClassifierRun, PromotionDecision

CLASSIFIERS_GROUP = "classifiers"
GPU_POOL = "gpu"
ARCHITECTURES_ENV = "BIOASSET_CLASSIFIER_ARCHITECTURES"
INIT_ENV = "BIOASSET_CLASSIFIER_INIT"
INIT_OPTIONS = ("weights", "champion")
DATASET_DIMENSION = "dataset"
ARCH_DIMENSION = "arch"
#: Per-class rows shown in the materialization (the full table is the run's per_class.csv).
PER_CLASS_ROWS = 30
#: Plots larger than this are linked, not inlined, in the metadata.
INLINE_PLOT_MAX_BYTES = 400_000


def configured_architectures() -> list[str]:
    """``BIOASSET_CLASSIFIER_ARCHITECTURES`` (comma-separated), else the training module's defaults
    plus ``tiny_cnn``, the CPU-sized model the demo trains."""
    listed = [name.strip() for name in os.environ.get(ARCHITECTURES_ENV, "").split(",") if name.strip()]
    return listed or [*DEFAULT_ARCHITECTURES, TINY_CNN]


def training_dir() -> Path:
    """Checkpoints of runs in progress; a failed run resumes from here, a finished one is removed."""
    return settings.bioasset_home() / "training"


def _training_fields() -> dict[str, Any]:
    """TrainingConfig's fields (all but the architecture, which is the partition) as pydantic fields."""
    hints = typing.get_type_hints(TrainingConfig)
    return {
        f.name: (hints[f.name], Field(default=f.default, description=f"TrainingConfig.{f.name}"))
        for f in dataclasses.fields(TrainingConfig)
        if f.name != "architecture"
    }


#: The run config of ``classifier``: bioasset.training.TrainingConfig field for field (generated,
#: so the two cannot drift apart), without ``architecture`` (the ``arch`` partition), plus
#: ``init`` and ``target_precision``.
ClassifierConfig = create_model(
    "ClassifierConfig",
    __base__=Config,
    __doc__="Training settings of one classifier run (see bioasset.training.TrainingConfig).",
    init=(
        str,
        Field(
            default=os.environ.get(INIT_ENV, "weights"),
            description="weights: start from `weights` | champion: fine-tune the dataset's champion when it has this "
            "architecture, else start from `weights`",
        ),
    ),
    target_precision=(
        float,
        Field(default=0.95, description="The abstention threshold is the lowest confidence whose predictions reach this precision"),
    ),
    **_training_fields(),
)


def training_config(config: Any, architecture: str) -> TrainingConfig:
    """The plain TrainingConfig of a run (its own validation names any bad field)."""
    values = config.model_dump()
    init = values.pop("init")
    if init not in INIT_OPTIONS:
        raise ValueError(f"classifier config init={init!r}: not one of {list(INIT_OPTIONS)}. Fix: pass 'weights' or 'champion'.")
    values.pop("target_precision")
    return TrainingConfig.from_dict({**values, "architecture": architecture})


def _storage_options(image_store: ImageStoreResource) -> dict[str, Any]:
    options = {
        "endpoint_url": image_store.endpoint_url,
        "region": image_store.region,
        "key": image_store.access_key_id,
        "secret": image_store.secret_access_key,
    }
    return {key: value for key, value in options.items() if value}


def _partition(context: AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension
    return keys[DATASET_DIMENSION], keys[ARCH_DIMENSION]


def _plot(name: str, png: bytes | None, path: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {name: MetadataValue.path(path)}
    if png and len(png) <= INLINE_PLOT_MAX_BYTES:
        metadata[f"{name}_plot"] = MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
    return metadata


def classifier_metadata(run: "ClassifierRun") -> dict[str, Any]:
    metrics, training = run.evaluation.metrics, run.training
    registered = run.registered
    evaluation_dir = f"{run.artifact_uri}/evaluation"
    per_class = run.evaluation.per_class.head(PER_CLASS_ROWS)
    history = [(r["epoch"], *(round(r[k], 4) for k in ("train_loss", "val_loss", "val_accuracy"))) for r in training.history]
    return {
        "mlflow_run_id": registered.run_id,
        "model_uri": registered.model_uri,
        "model_version": registered.version,
        "registered_model": registered.registered_model_name,
        "logged_model_uri": registered.logged_model_uri,
        "init": run.init,
        **{name: metrics.get(name) for name in (
            "top1_accuracy", "top5_accuracy", "cohen_kappa", "mean_per_class_accuracy",
            "threshold", "coverage_at_threshold", "accuracy_at_threshold", "threshold_split", "expected_calibration_error",
        )},
        "test_images": metrics.get("images"),
        "test_rows_unknown_label": metrics.get("rows_unknown_label"),
        **training.summary(),
        "history": markdown_table(["epoch", "train_loss", "val_loss", "val_accuracy"], history),
        "per_class": markdown_table(per_class.columns, per_class.itertuples(index=False)),
        **_plot("confusion_matrix", run.plots.get("confusion_matrix.png"), f"{evaluation_dir}/confusion_matrix.png"),
        **_plot("threshold_sweep", run.plots.get("threshold_sweep.png"), f"{evaluation_dir}/threshold_sweep.png"),
        "elapsed_s": round(run.elapsed_s, 3),
    }


def promotion_metadata(decision: "PromotionDecision") -> dict[str, Any]:
    champion = decision.champion
    return {
        "decision": decision.outcome,
        "reason": decision.reason,
        "challenger_version": decision.challenger_version,
        "champion_version_before": decision.champion_version or "(none)",
        "champion_version": decision.challenger_version if decision.promote else (decision.champion_version or "(none)"),
        "compared_on": decision.compared_on,
        "champion_reevaluated": decision.champion_reevaluated,
        "challenger_top1_accuracy": decision.challenger.top1,
        "challenger_cohen_kappa": decision.challenger.kappa,
        "champion_top1_accuracy": None if champion is None else champion.top1,
        "champion_cohen_kappa": None if champion is None else champion.kappa,
    }


@dataclass(frozen=True)
class ClassifierAssets:
    partitions_def: MultiPartitionsDefinition
    classifier: AssetsDefinition
    classifier_promotion: AssetsDefinition
    automation_sensor: AutomationConditionSensorDefinition

    @property
    def assets(self) -> list[AssetsDefinition]:
        return [self.classifier, self.classifier_promotion]


def build_classifier_assets(
    datasets_partitions: PartitionsDefinition, architectures: Sequence[str] | None = None
) -> ClassifierAssets:
    """The classifier assets over the dataset assets' ``datasets_partitions`` × ``architectures``."""
    partitions_def = MultiPartitionsDefinition(
        {
            DATASET_DIMENSION: datasets_partitions,
            ARCH_DIMENSION: StaticPartitionsDefinition(list(architectures or configured_architectures())),
        }
    )

    @asset(
        partitions_def=partitions_def,
        group_name=CLASSIFIERS_GROUP,
        # Dagster maps classifier[dataset|arch] to dataset_version[dataset] by itself: the `dataset`
        # dimension is dataset_version's partitions definition.
        deps=["dataset_version"],
        pool=GPU_POOL,
        automation_condition=AutomationCondition.eager(),
        kinds={"pytorch", "mlflow"},
        description="`arch` trained on the newest frozen version of `dataset` (resumable checkpoints; GPU when present), "
        "evaluated on its test split, logged to MLflow (params, per-epoch metrics, dataset input, plots, pyfunc model) "
        "and registered as a new version of bioasset-{dataset} with the `challenger` alias.",
    )
    def classifier(
        context: AssetExecutionContext,
        config: ClassifierConfig,
        warehouse: WarehouseResource,
        image_store: ImageStoreResource,
        mlflow: MlflowResource,
    ) -> MaterializeResult:
        from bioasset.mlflow_registry import DatasetVersionRef, train_and_register  # MLflow and torch: only here

        dataset, arch = _partition(context)
        wh = warehouse.warehouse()
        version = resolve_version(wh, dataset)
        run = train_and_register(
            mlflow.registry_for(context),
            DatasetVersionRef(dataset, version.version, version.snapshot or "", str(manifest_path(wh, version))),
            read_manifest(wh, version).to_pandas(),
            image_store.resolved_url(),
            training_config(config, arch),
            training_dir() / dataset / version.version / arch,
            init_from_champion=config.init == "champion",
            target_precision=config.target_precision,
            progress=lambda event: context.log.info(f"{dataset}|{arch} {event.kind} {event.epoch}: {event.metrics}"),
            storage_options=_storage_options(image_store),
        )
        return MaterializeResult(metadata={"dataset_version": version.ref, **classifier_metadata(run)})

    @asset(
        partitions_def=partitions_def,
        group_name=CLASSIFIERS_GROUP,
        deps=[classifier],
        pool=GPU_POOL,
        automation_condition=AutomationCondition.eager(),
        kinds={"mlflow"},
        description="The promotion gate: the newest `arch` version of bioasset-{dataset} becomes `champion` only if it "
        "beats the current champion on its own test split (top-1 accuracy, then Cohen's kappa; the champion is "
        "re-evaluated there when it was trained on another dataset version). The decision and its numbers are "
        "recorded here and as promotion.* tags on the model version and its run.",
    )
    def classifier_promotion(
        context: AssetExecutionContext, warehouse: WarehouseResource, image_store: ImageStoreResource, mlflow: MlflowResource
    ) -> MaterializeResult:
        from bioasset.mlflow_registry import promote_latest  # MLflow and torch: only here

        dataset, arch = _partition(context)
        wh = warehouse.warehouse()
        decision = promote_latest(
            mlflow.registry_for(context),
            dataset,
            arch,
            lambda dataset_version: read_manifest(wh, resolve_version(wh, dataset, dataset_version)).to_pandas(),
            image_store.resolved_url(),
            training_dir() / dataset / f"promotion-{arch}",
            storage_options=_storage_options(image_store),
        )
        context.log.info(f"{dataset}|{arch}: {decision.outcome} ({decision.reason})")
        return MaterializeResult(metadata=promotion_metadata(decision))

    sensor = AutomationConditionSensorDefinition(
        "classifier_automation_sensor",
        target=[classifier, classifier_promotion],
        default_status=DefaultSensorStatus.STOPPED,
        description="Retrains a dataset's classifiers when a new dataset version is frozen, then runs the promotion "
        "gate. Off until started: every configured architecture of that dataset trains.",
    )
    return ClassifierAssets(partitions_def, classifier, classifier_promotion, sensor)


#: The classifier assets over the default dataset specs, for the code location.
CLASSIFIER_ASSETS = build_classifier_assets(DATASET_ASSETS.datasets_partitions)
