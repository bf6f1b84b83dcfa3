"""Training throughput, and how well a tiny training learns the sample bucket.

    .venv/bin/python bench/train.py [--bucket PATH] [--parts pipeline,steps,sample] [--results bench/results/train.json]
    .venv/bin/python bench/train.py --markdown bench/results/train.json   # the ## Train tables

Parts (each on the CPU, and on the GPU when CUDA is present; the results say when it is not):

- ``pipeline``: images/s of the input pipeline alone: manifest rows -> image store -> JPEG decode
  -> transforms.v2 -> batches, by DataLoader worker count;
- ``steps``: images/s of training steps fed by that pipeline, and of pure compute (the same
  steps on synthetic batches already on the device), swept over the batch size. Both go through
  ``bioasset.training.loop.train_one_epoch``, the function training uses;
- ``sample``: ``train_classifier`` + ``evaluate_classifier`` end to end on the sample bucket with
  the small config recommended for the end-to-end test: test top-1 and seconds.

Without ``--bucket`` it generates the default sample bucket (15 species x 48 photos, medium and
small images) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bioasset.inat_format import MAIN_RANKS, photo_key  # noqa: E402
from bioasset.metrics import evaluate_classifier  # noqa: E402
from bioasset.sample_bucket import generate_sample_bucket  # noqa: E402
from bioasset.splits import assign_splits  # noqa: E402
from bioasset.training import TrainingConfig, train_classifier  # noqa: E402
from bioasset.training.data import build_labels, make_loader, manifest_dataset, train_transform  # noqa: E402
from bioasset.training.loop import Runtime, lr_factor, make_optimizer, resolve_runtime, train_one_epoch  # noqa: E402
from bioasset.training.models import build_model  # noqa: E402

#: The recommended config for "a tiny end-to-end training on a sample bucket reaches >= 90% top-1":
#: 0.922 / 0.903 / 0.932 test top-1 for seeds 0 / 1 / 2, about 95 CPU seconds each (see docs/benchmarks.md).
SAMPLE_CONFIG = TrainingConfig(
    architecture="tiny_cnn", image_size=64, batch_size=32, epochs=40, optimizer="adamw", learning_rate=3e-3,
    lr_schedule="cosine", warmup_epochs=1.0, weight_decay=5e-4, min_crop_scale=0.5, early_stopping_patience=0,
    num_workers=0, seed=0,
)

#: Per device: the model, the input side, the stored image size read, batch sizes and worker counts.
SETUPS = {
    "cpu": {"architectures": ["resnet18", "tiny_cnn"], "image_size": 64, "image": "small", "batch_sizes": [16, 32, 64],
            "workers": [0, 1, 2], "batches": 4, "warmup": 1},
    "cuda": {"architectures": ["resnet50", "resnet18"], "image_size": 224, "image": "medium", "batch_sizes": [64, 128, 256],
             "workers": [0, 4, 8, 14], "batches": 20, "warmup": 3},
}


def sample_bucket_manifest(bucket: Path, image: str, *, seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """A species-rank manifest over the bucket's photos, like a frozen dataset version would be.

    Labels are species (subspecies roll up); observations identified above species or to an
    inactive taxon, and photos without a file, are left out and counted. Splits come from
    ``bioasset.splits.assign_splits`` grouped by observation.
    """
    read = lambda table: pd.read_csv(bucket / f"{table}.csv.gz", sep="\t", quoting=3, dtype=str, keep_default_na=False)  # noqa: E731
    taxa = read("taxa").set_index("taxon_id")
    observations, photos = read("observations"), read("photos")
    counts = {"photos": len(photos)}

    def species_of(taxon_id: str) -> str | None:
        taxon = taxa.loc[taxon_id]
        if taxon["active"] != "true":
            return None
        if taxon["rank"] == "subspecies":
            return taxon["ancestry"].rsplit("/", 1)[-1]
        return taxon_id if taxon["rank"] == "species" else None

    species = observations.set_index("observation_uuid")["taxon_id"].map(species_of)
    photos = photos.assign(species=photos["observation_uuid"].map(species))
    counts["not_at_species"] = int(photos["species"].isna().sum())
    photos = photos.dropna(subset=["species"])
    photos["image_path"] = [photo_key(int(p), image, e) for p, e in zip(photos["photo_id"], photos["extension"])]
    exists = photos["image_path"].map(lambda path: (bucket / path).exists())
    counts["no_image"] = int((~exists).sum())
    photos = photos[exists]
    rows = []
    for record in photos.to_dict("records"):
        path = {taxa.loc[t, "rank"]: (int(t), taxa.loc[t, "name"]) for t in [*taxa.loc[record["species"], "ancestry"].split("/"), record["species"]] if t in taxa.index}
        row = {"photo_id": int(record["photo_id"]), "observation_uuid": record["observation_uuid"], "image_path": record["image_path"],
               "label_id": int(record["species"]), "label_name": taxa.loc[record["species"], "name"]}
        for rank in MAIN_RANKS:
            row[f"{rank}_id"], row[rank] = path.get(rank, (None, None))
        rows.append(row)
    manifest = pd.DataFrame(rows)
    split = assign_splits(manifest.rename(columns={"label_id": "label", "observation_uuid": "group_key"}), seed=seed)
    manifest = manifest.merge(split.assignments, on="photo_id").astype({"split": str})
    counts["dropped_small_classes"] = len(split.dropped_classes)
    return manifest, counts


def bench_pipeline(manifest: pd.DataFrame, bucket: Path, setup: dict, runtime: Runtime) -> list[dict]:
    """Batches/s of the DataLoader alone, after its first batch (worker start-up excluded)."""
    labels = build_labels(manifest, "species")
    batch = setup["batch_sizes"][len(setup["batch_sizes"]) // 2]
    dataset = manifest_dataset(manifest, labels, str(bucket), train_transform(setup["image_size"], min_crop_scale=0.5), decode_size=setup["image_size"])
    out = []
    for workers in setup["workers"]:
        loader = make_loader(dataset, batch_size=batch, num_workers=workers, pin_memory=runtime.pin_memory,
                             sampler=RandomSampler(dataset, replacement=True, num_samples=batch * (setup["batches"] + 1)))
        batches = iter(loader)
        next(batches)
        started = time.perf_counter()
        seen = sum(len(images) for images, _ in batches)
        seconds = time.perf_counter() - started
        out.append({"num_workers": workers, "batch_size": batch, "images_per_s": round(seen / seconds, 1)})
        print(f"  pipeline {runtime.device.type} workers={workers}: {out[-1]['images_per_s']} images/s", flush=True)
        del batches, loader
    return out


def bench_steps(manifest: pd.DataFrame, bucket: Path, setup: dict, runtime: Runtime) -> list[dict]:
    """Training steps fed by the pipeline vs the same steps on synthetic batches already on the device."""
    labels = build_labels(manifest, "species")
    size, k = setup["image_size"], len(labels)
    workers = max(setup["workers"])
    dataset = manifest_dataset(manifest, labels, str(bucket), train_transform(size, min_crop_scale=0.5), decode_size=size)
    out = []
    for architecture, batch in ((a, b) for a in setup["architectures"] for b in setup["batch_sizes"]):
        total = setup["warmup"] + setup["batches"]
        loader = make_loader(dataset, batch_size=batch, num_workers=workers, pin_memory=runtime.pin_memory,
                             sampler=RandomSampler(dataset, replacement=True, num_samples=batch * total))
        images = torch.randn(batch, 3, size, size)
        synthetic = [(runtime.images_to_device(images), torch.randint(k, (batch,), device=runtime.device))] * total
        row = {"architecture": architecture, "batch_size": batch}
        for source, batches in (("pipeline", iter(loader)), ("compute", iter(synthetic))):
            row[f"{source}_images_per_s"] = round(_time_steps(architecture, setup, runtime, k, batches), 1)
        row["pipeline_share_of_compute"] = round(row["pipeline_images_per_s"] / row["compute_images_per_s"], 3)
        print(f"  steps {runtime.device.type}: {row}", flush=True)
        out.append(row)
    return out


def _time_steps(architecture: str, setup: dict, runtime: Runtime, num_classes: int, batches) -> float:
    config = TrainingConfig(architecture=architecture, image_size=setup["image_size"], optimizer="sgd", learning_rate=0.01)
    torch.manual_seed(0)
    model = build_model(config.architecture, num_classes)
    model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.contiguous_format)
    optimizer = make_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, 1000))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
    criterion = torch.nn.CrossEntropyLoss()

    def steps(n: int) -> dict:
        return train_one_epoch(model, islice(batches, n), criterion, optimizer, scheduler, scaler, runtime, epoch=1)

    steps(setup["warmup"])  # cudnn autotuning, allocator, worker start-up
    return steps(setup["batches"])["images_per_s"]


def bench_sample(manifest: pd.DataFrame, bucket: Path, config: TrainingConfig) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = train_classifier(manifest, str(bucket), config, Path(scratch) / "train", resume=False)
        train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        started = time.perf_counter()
        evaluation = evaluate_classifier(result.bundle_dir, manifest, str(bucket), out_dir=Path(scratch) / "eval")
        eval_seconds = time.perf_counter() - started
    metrics = evaluation.metrics
    row = {
        "config": {k: v for k, v in config.to_dict().items() if v != getattr(TrainingConfig(), k)},
        "classes": result.num_classes, **{f"{split}_rows": n for split, n in result.rows.items()},
        "test_top1": round(metrics["top1_accuracy"], 4), "test_top5": round(metrics["top5_accuracy"], 4),
        "test_mean_per_class_accuracy": round(metrics["mean_per_class_accuracy"], 4),
        "threshold_at_0.95": metrics["threshold"], "coverage_at_threshold": round(metrics["coverage_at_threshold"], 3),
        "val_accuracy_by_epoch": [round(r["val_accuracy"], 3) for r in result.history],
        "train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(train_cpu_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "train_images_per_s": round(result.images_per_s, 1),
    }
    print(f"  sample: {row}", flush=True)
    return row


def environment() -> dict:
    return {
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(results: dict) -> str:
    lines = [f"Environment: {json.dumps(results['environment'])}", ""]
    for device, parts in results["devices"].items():
        if "not_run" in parts:
            lines += [f"**{device}**: not run: {parts['not_run']}", ""]
            continue
        setup = parts["setup"]
        lines += [f"**{device}**: {setup['image_size']} px, {parts['precision']}, images read at iNaturalist size `{setup['image']}`", ""]
        lines += ["| input pipeline alone: workers | batch | images/s |", "| ---: | ---: | ---: |"]
        lines += [f"| {r['num_workers']} | {r['batch_size']} | {r['images_per_s']} |" for r in parts.get("pipeline", [])]
        lines += ["", "| model | batch | training steps fed by the pipeline, images/s | pure compute, images/s | pipeline / compute |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['architecture']} | {r['batch_size']} | {r['pipeline_images_per_s']} | {r['compute_images_per_s']} | {r['pipeline_share_of_compute']} |"
                  for r in parts.get("steps", [])]
        lines.append("")
    samples = results.get("sample", [])
    if samples:
        lines += [f"Sample bucket end to end (`train_classifier` + `evaluate_classifier`), config `{json.dumps(samples[0]['config'])}` "
                  f"({samples[0]['classes']} classes, {samples[0]['train_rows']}/{samples[0]['val_rows']}/{samples[0]['test_rows']} train/val/test photos):", "",
                  "| seed | test top-1 | test top-5 | mean per-class accuracy | training s (wall) | training s (CPU) | training images/s |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {row['config'].get('seed', 0)} | {row['test_top1']} | {row['test_top5']} | {row['test_mean_per_class_accuracy']} | "
                  f"{row['train_seconds']} | {row['train_cpu_seconds']} | {row['train_images_per_s']} |" for row in samples]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", type=Path, help="an existing sample bucket with small (and, for the GPU, medium) images")
    parser.add_argument("--parts", default="pipeline,steps,sample")
    parser.add_argument("--results", type=Path, default=Path("bench/results/train.json"))
    parser.add_argument("--sample-config", type=json.loads, default={}, help="JSON overrides of the sample part's config")
    parser.add_argument("--sample-seeds", default="0", help="comma-separated seeds of the sample part, one training each")
    parser.add_argument("--markdown", type=Path, metavar="RESULTS", help="print the ## Train tables of a results file and exit")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); 1 on a busy shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    parts = set(args.parts.split(","))
    results: dict = {"environment": environment(), "devices": {}}
    with tempfile.TemporaryDirectory() as scratch:
        bucket = args.bucket
        if bucket is None:
            bucket = Path(scratch) / "bucket"
            generate_sample_bucket(bucket, seed=0)
        for device in ("cpu", "cuda"):
            if device == "cuda" and not torch.cuda.is_available():
                results["devices"]["cuda"] = {"not_run": "no CUDA device on this machine"}
                continue
            setup = SETUPS[device]
            runtime = resolve_runtime(device)
            torch.backends.cudnn.benchmark = device == "cuda"
            manifest, counts = sample_bucket_manifest(bucket, setup["image"])
            entry: dict = {"setup": setup, "precision": runtime.precision, "manifest": counts | {"rows": len(manifest)}}
            if "pipeline" in parts:
                entry["pipeline"] = bench_pipeline(manifest, bucket, setup, runtime)
            if "steps" in parts:
                entry["steps"] = bench_steps(manifest, bucket, setup, runtime)
            results["devices"][device] = entry
        if "sample" in parts:
            manifest, _ = sample_bucket_manifest(bucket, "small")
            config = replace(SAMPLE_CONFIG, **args.sample_config)
            results["sample"] = [bench_sample(manifest, bucket, replace(config, seed=int(seed))) for seed in args.sample_seeds.split(",")]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
