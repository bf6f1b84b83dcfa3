"""A tiny image dataset drawn with Pillow, with a manifest shaped like a frozen dataset version.

For tests, benchmarks and demos of training: each class is a coloured shape on a noisy
background, easy to learn in a few CPU seconds at 32-64 px. Classes are species; two species
share a genus and four a family, so hierarchical metrics have something to measure.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from bioasset.inat_format import MAIN_RANKS

COLOURS = ((220, 40, 40), (40, 170, 40), (40, 60, 220), (230, 200, 30), (200, 40, 200), (30, 200, 210), (250, 130, 20), (120, 70, 20))
SHAPES = ("ellipse", "rectangle", "triangle")
FIRST_LABEL_ID = 1000


def write_shapes_dataset(
    root: str | os.PathLike,
    *,
    per_class: Sequence[int] | int = 30,
    n_classes: int = 3,
    image_size: int = 48,
    split_shares: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> pd.DataFrame:
    """Write JPEGs under ``root/shapes/`` and return their manifest (image paths relative to ``root``).

    ``per_class``: images per class, one number for all or one per class (for imbalance). Each
    class's images are split train/val/test by ``split_shares``.
    """
    counts = [per_class] * n_classes if isinstance(per_class, int) else list(per_class)
    rng = np.random.default_rng(seed)
    folder = Path(root) / "shapes"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    photo_id = 1
    for label, count in enumerate(counts):
        n_train = round(count * split_shares[0])
        n_val = round(count * split_shares[1])
        for i in range(count):
            data = _draw(label, image_size, rng)
            relative = f"shapes/{photo_id}.jpg"
            (folder / f"{photo_id}.jpg").write_bytes(data)
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            rows.append({"photo_id": photo_id, **_taxonomy(label), "split": split, "image_path": relative,
                         "sha256": hashlib.sha256(data).hexdigest(), "width": image_size, "height": image_size})
            photo_id += 1
    return pd.DataFrame(rows)


def _taxonomy(label: int) -> dict[str, object]:
    """Rank names and ids: species ``label``, genus ``label // 2``, family ``label // 4``."""
    path = {"kingdom": (1, "Animalia"), "phylum": (2, "Arthropoda"), "class": (3, "Insecta"), "order": (4, "Coleoptera"),
            "family": (100 + label // 4, f"Family{label // 4}"), "genus": (200 + label // 2, f"Genus{label // 2}"),
            "species": (FIRST_LABEL_ID + label, f"Genus{label // 2} species{label}")}
    columns: dict[str, object] = {"label_id": FIRST_LABEL_ID + label, "label_name": path["species"][1], "taxon_id": FIRST_LABEL_ID + label}
    for rank in MAIN_RANKS:
        columns[rank], columns[f"{rank}_id"] = path[rank][1], path[rank][0]
    return columns


def _draw(label: int, size: int, rng: np.random.Generator) -> bytes:
    background = rng.integers(70, 170, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    extent = int(size * rng.uniform(0.45, 0.7))
    x, y = (int(v) for v in rng.integers(0, size - extent, 2))
    colour = tuple(int(c) for c in np.clip(np.array(COLOURS[label % len(COLOURS)]) + rng.integers(-25, 25, 3), 0, 255))
    shape = SHAPES[(label // len(COLOURS)) % len(SHAPES)]
    if shape == "ellipse":
        draw.ellipse([x, y, x + extent, y + extent], fill=colour)
    elif shape == "rectangle":
        draw.rectangle([x, y, x + extent, y + extent], fill=colour)
    else:
        draw.polygon([(x, y + extent), (x + extent, y + extent), (x + extent // 2, y)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
