"""``bioasset demo``: the whole chain on the embedded defaults, in ``BIOASSET_HOME``."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from bioasset import config
from bioasset.instance import ensure_dagster_home
from bioasset.inat_format import LATEST_TARBALL


#: Dagster's console logger at INFO: step starts/ends and our progress lines, not every event.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class DemoSummary:
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def record(self, name: str, started: float, detail: str) -> None:
        elapsed = time.perf_counter() - started
        self.steps.append((name, elapsed, detail))
        print(f"==> {name}: {detail} ({elapsed:.1f} s)", flush=True)


def build_sample_bucket(summary: DemoSummary, *, seed: int, rebuild: bool) -> None:
    from bioasset.sample_bucket import generate_sample_bucket

    started = time.perf_counter()
    bucket = config.sample_bucket_dir()
    if (bucket / LATEST_TARBALL).exists() and not rebuild:
        summary.record("sample bucket", started, f"reusing {bucket}")
        return
    report = generate_sample_bucket(bucket, seed=seed)
    summary.record("sample bucket", started, f"{bucket}: {report.describe()}")


def load_definitions(summary: DemoSummary):
    from dagster import Definitions

    started = time.perf_counter()
    from bioasset.definitions import defs

    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    asset_count = len(repo.asset_graph.get_all_asset_keys())
    summary.record("definitions", started, f"{asset_count} assets, {len(repo.job_names)} jobs, validated")
    return defs


def ingest_latest_snapshot(summary: DemoSummary, defs) -> str:
    """Tick the real snapshot sensor once, as the daemon would, and run what it requests in process."""
    from dagster import DagsterInstance, build_sensor_context

    from bioasset.partitions import snapshots_partitions
    from bioasset.sensors import inat_snapshot_sensor

    started = time.perf_counter()
    instance = DagsterInstance.get()
    context = build_sensor_context(instance=instance, definitions=defs, resources=dict(defs.resources))
    result = inat_snapshot_sensor(context)
    if result.run_requests:
        key = result.run_requests[0].partition_key
        reason = "new snapshot"
    else:
        # Already seen on an earlier demo run: re-ingest the newest known snapshot (idempotent).
        keys = sorted(instance.get_dynamic_partitions(snapshots_partitions.name))
        if not keys:
            raise RuntimeError(f"The snapshot sensor found nothing to ingest in {config.open_data_url()}: {result.skip_reason}")
        key, reason = keys[-1], "already known"
    instance.add_dynamic_partitions(snapshots_partitions.name, [key])
    job = defs.resolve_job_def("ingest_snapshot_job")
    outcome = job.execute_in_process(
        instance=instance, partition_key=key, raise_on_error=True, run_config=QUIET_RUN_CONFIG
    )
    summary.record("ingest", started, f"snapshot {key} ({reason}), run {outcome.run_id[:8]}")
    return key


#: The demo's classifier: tiny_cnn at 64 px, sized for a CPU (bench/sample_learnability.py).
DEMO_DATASET = "demo-insects"
DEMO_ARCHITECTURE = "tiny_cnn"
DEMO_TRAINING = {
    "epochs": 40,
    "batch_size": 32,
    "image_size": 64,
    "optimizer": "adamw",
    "learning_rate": 0.003,
    "weight_decay": 0.0005,
    "lr_schedule": "cosine",
    "warmup_epochs": 1.0,
    "min_crop_scale": 0.5,
    "num_workers": 0,
    "early_stopping_patience": 0,
}


def materialize_assets(defs, selection: list[str], partition_key: str, run_config: dict | None = None):
    from dagster import DagsterInstance, materialize

    return materialize(
        assets=list(defs.assets),
        selection=selection,
        partition_key=partition_key,
        instance=DagsterInstance.get(),
        resources=dict(defs.resources),
        run_config={**QUIET_RUN_CONFIG, **(run_config or {})},
    )


def build_dataset(summary: DemoSummary, defs) -> str:
    """Manifest → images of every class → a frozen, content-addressed dataset version."""
    from dagster import DagsterInstance

    from bioasset.assets.datasets import taxa_partitions
    from bioasset.jobs.taxon_images_batch import batch_run_config, taxon_images_batch_job

    started = time.perf_counter()
    result = materialize_assets(defs, ["dataset_manifest"], DEMO_DATASET)
    manifest_meta = result.asset_materializations_for_node("dataset_manifest")[0].metadata
    summary.record("dataset manifest", started, f"{DEMO_DATASET}: {_value(manifest_meta, 'dagster/row_count')} photos, {_value(manifest_meta, 'classes')} classes")

    started = time.perf_counter()
    instance = DagsterInstance.get()
    taxa_keys = sorted(instance.get_dynamic_partitions(taxa_partitions.name))
    # As taxon_images_sensor asks for this many classes: one batch run, one materialization per class.
    batch = defs.resolve_job_def(taxon_images_batch_job.name).execute_in_process(
        instance=instance, run_config={**QUIET_RUN_CONFIG, **batch_run_config(taxa_keys)},
    )
    summary.record("images", started, f"{len(taxa_keys)} taxa partitions downloaded and verified in one "
                                      f"{taxon_images_batch_job.name} run ({batch.run_id[:8]})")

    started = time.perf_counter()
    result = materialize_assets(defs, ["dataset_version"], DEMO_DATASET)
    version = _value(result.asset_materializations_for_node("dataset_version")[0].metadata, "version")
    summary.record("dataset version", started, f"{DEMO_DATASET}@{version} frozen")
    return str(version)


def train_and_promote(summary: DemoSummary, defs) -> dict:
    from dagster import MultiPartitionKey

    key = MultiPartitionKey({"dataset": DEMO_DATASET, "arch": DEMO_ARCHITECTURE})
    started = time.perf_counter()
    result = materialize_assets(defs, ["classifier"], key, {"ops": {"classifier": {"config": DEMO_TRAINING}}})
    trained = result.asset_materializations_for_node("classifier")[0].metadata
    summary.record(
        "classifier",
        started,
        f"{DEMO_ARCHITECTURE}: test top-1 {_value(trained, 'top1_accuracy'):.3f}, model {_value(trained, 'model_uri')}",
    )
    started = time.perf_counter()
    result = materialize_assets(defs, ["classifier_promotion"], key)
    decision = result.asset_materializations_for_node("classifier_promotion")[0].metadata
    summary.record("promotion", started, f"{_value(decision, 'decision')}: {_value(decision, 'reason')}")
    return {name: _value(trained, name) for name in ("top1_accuracy", "model_uri", "registered_model", "model_version")}


def _value(metadata: dict, name: str):
    entry = metadata.get(name)
    return getattr(entry, "value", entry)


def print_next_steps() -> None:
    print(
        f"""
Everything lives under {config.bioasset_home()}
  Dagster UI:  .venv/bin/bioasset ui dagster   (then open http://127.0.0.1:3000)
  MLflow UI:   .venv/bin/bioasset ui mlflow    (then open http://127.0.0.1:5000)
""",
        flush=True,
    )


def run_demo(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    summary = DemoSummary()
    build_sample_bucket(summary, seed=args.seed, rebuild=args.rebuild)
    defs = load_definitions(summary)
    snapshot = ingest_latest_snapshot(summary, defs)
    version = build_dataset(summary, defs)
    model = train_and_promote(summary, defs)
    print(
        f"""
Summary
  snapshot:         {snapshot}
  dataset version:  {DEMO_DATASET}@{version}
  test top-1:       {model['top1_accuracy']:.3f}
  model:            {model['model_uri']}  (registered model {model['registered_model']}, version {model['model_version']})
  champion:         models:/{model['registered_model']}@champion
  predict:          .venv/bin/bioasset predict IMAGE.jpg --model models:/{model['registered_model']}@champion""",
        flush=True,
    )
    print_next_steps()
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole chain on the local sample bucket")
    parser.add_argument("--seed", type=int, default=0, help="sample-bucket seed")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the sample bucket even if present")
    parser.set_defaults(func=run_demo)
