"""How learnable are the sample bucket's photos? Train a tiny CNN on them for about a CPU minute.

    .venv/bin/python bench/sample_learnability.py [--bucket PATH] [--size 64] [--cpu-seconds 120]

Without ``--bucket`` it generates the default sample bucket in a temporary folder. Labels are
species, as a dataset at species rank sees them: subspecies roll up to their species, while
observations identified only to genus or to an inactive taxon are left out. Every fifth
observation of each species (by UUID) is held out for the test. The budget is CPU time of
this process (default 120 s: a minute of both cores here), so that other work on the machine
does not change the result. Prints one JSON line: top-1 on the held-out photos, counts, and
timings. The aim is roughly 92-98%: learnable well, not perfectly.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bioasset.inat_format import photo_key  # noqa: E402
from bioasset.sample_bucket import generate_sample_bucket  # noqa: E402


def read_root_table(bucket: Path, table: str) -> list[dict[str, str]]:
    with gzip.open(bucket / f"{table}.csv.gz", "rt", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in handle]


def labelled_photos(bucket: Path, size_name: str) -> list[tuple[Path, int, str]]:
    """(image path, species id, observation uuid) for each photo of a species-level observation
    that has an image."""
    taxa = {row["taxon_id"]: row for row in read_root_table(bucket, "taxa")}
    species_of_observation = {}
    for observation in read_root_table(bucket, "observations"):
        taxon = taxa[observation["taxon_id"]]
        if taxon["active"] != "true":
            continue
        if taxon["rank"] == "species":
            species_of_observation[observation["observation_uuid"]] = int(taxon["taxon_id"])
        elif taxon["rank"] == "subspecies":
            species_of_observation[observation["observation_uuid"]] = int(taxon["ancestry"].rsplit("/", 1)[-1])
    out = []
    for photo in read_root_table(bucket, "photos"):
        species = species_of_observation.get(photo["observation_uuid"])
        path = bucket / photo_key(int(photo["photo_id"]), size_name, photo["extension"])
        if species is not None and path.exists():
            out.append((path, species, photo["observation_uuid"]))
    return out


def load_split(photos, image_size: int):
    classes = sorted({species for _, species, _ in photos})
    observations_by_species = defaultdict(set)
    for _, species, observation in photos:
        observations_by_species[species].add(observation)
    held_out = {obs for observations in observations_by_species.values() for obs in sorted(observations)[::5]}
    arrays = {"train": ([], []), "test": ([], [])}
    for path, species, observation in photos:
        image = Image.open(path).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        images, labels = arrays["test" if observation in held_out else "train"]
        images.append(np.asarray(image))
        labels.append(classes.index(species))
    tensors = {}
    for split, (images, labels) in arrays.items():
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
        tensors[split] = (x, torch.tensor(labels))
    return classes, tensors


def tiny_cnn(n_classes: int) -> nn.Module:
    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 24), block(24, 48), block(48, 96), block(96, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, n_classes))


def augment(x: torch.Tensor) -> torch.Tensor:
    """Flips, quarter turns, random shifts (pad and crop) and brightness."""
    flip = torch.rand(x.shape[0]) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    x = torch.rot90(x, int(torch.randint(0, 4, ())), dims=(2, 3))
    pad = x.shape[-1] // 8
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    return (x * (0.8 + 0.4 * torch.rand(x.shape[0], 1, 1, 1))).clamp(0, 1)


def train(tensors, n_classes: int, seed: int, *, cpu_seconds: float, epochs_wanted: int | None) -> tuple[float, int, float]:
    """Train until ``epochs_wanted`` epochs, or else until ``cpu_seconds`` of CPU time; returns
    top-1 on the test split, the epochs run and the wall seconds."""
    torch.manual_seed(seed)
    model = tiny_cnn(n_classes)
    x_train, y_train = tensors["train"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    batch, epochs, started, cpu_started = 32, 0, time.perf_counter(), time.process_time()

    def progress() -> float:
        return epochs / epochs_wanted if epochs_wanted else (time.process_time() - cpu_started) / cpu_seconds

    while progress() < 1.0:
        # Cosine decay over the budget, set once per epoch.
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * 0.5 * (1 + np.cos(np.pi * progress()))
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            loss = nn.functional.cross_entropy(model(augment(x_train[index])), y_train[index], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs += 1
    train_seconds = time.perf_counter() - started
    model.eval()
    x_test, y_test = tensors["test"]
    with torch.no_grad():
        top1 = (model(x_test).argmax(1) == y_test).float().mean().item()
    return top1, epochs, train_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", type=Path, help="an existing sample bucket (default: generate one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos-per-species", type=int, help="when generating (default: the generator's)")
    parser.add_argument("--size", type=int, default=64, help="training image side in pixels")
    parser.add_argument("--image", default="small", help="which stored size to read")
    parser.add_argument("--cpu-seconds", type=float, default=120, help="training budget in CPU seconds of this process")
    parser.add_argument("--epochs", type=int, help="train exactly this many epochs instead (independent of machine load)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--results-json", type=Path, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"size": args.size, "image": args.image, "seed": args.seed}
    with tempfile.TemporaryDirectory() as scratch:
        bucket = args.bucket
        if bucket is None:
            bucket = Path(scratch) / "bucket"
            extra = {"photos_per_species": args.photos_per_species} if args.photos_per_species else {}
            report = generate_sample_bucket(bucket, seed=args.seed, **extra)
            result["generate_seconds"] = round(report.elapsed_s, 1)
        started = time.perf_counter()
        photos = labelled_photos(bucket, args.image)
        classes, tensors = load_split(photos, args.size)
        result["load_seconds"] = round(time.perf_counter() - started, 1)
    top1, epochs, seconds = train(tensors, len(classes), args.seed, cpu_seconds=args.cpu_seconds, epochs_wanted=args.epochs)
    result.update(
        top1=round(top1, 4), classes=len(classes), train_photos=len(tensors["train"][1]),
        test_photos=len(tensors["test"][1]), epochs=epochs, budget=f"{args.epochs} epochs" if args.epochs else f"{args.cpu_seconds:g} CPU s",
        train_wall_seconds=round(seconds, 1),
    )
    line = json.dumps(result)
    print(line)
    if args.results_json:
        args.results_json.parent.mkdir(parents=True, exist_ok=True)
        args.results_json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
