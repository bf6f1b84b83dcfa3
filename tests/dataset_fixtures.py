"""Hand-made dataset manifests over tiny real images, for the registry, export and card tests.

Import as ``from dataset_fixtures import ...`` (tests/ is on sys.path)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import VERSION_COLUMNS

#: Made-up lineages (ids, names) from kingdom to species. Two genera are named Pieris, one a
#: butterfly and one a plant, as in iNaturalist.
LINEAGES: dict[str, list[tuple[int, str]]] = {
    "Pieris rapae": [(1, "Animalia"), (47120, "Arthropoda"), (47158, "Insecta"), (47157, "Lepidoptera"),
                     (55401, "Pieridae"), (55625, "Pieris"), (55626, "Pieris rapae")],
    "Apis mellifera": [(1, "Animalia"), (47120, "Arthropoda"), (47158, "Insecta"), (47201, "Hymenoptera"),
                       (47221, "Apidae"), (47219, "Apis"), (47220, "Apis mellifera")],
    "Pieris japonica": [(47126, "Plantae"), (211194, "Tracheophyta"), (47124, "Magnoliopsida"), (47433, "Ericales"),
                        (48552, "Ericaceae"), (50735, "Pieris"), (50736, "Pieris japonica")],
}

LICENSE_CYCLE = ("CC-BY", "CC0", "CC-BY-NC")


@dataclass(frozen=True)
class Photo:
    """One manifest row to make: its photo id, species, split and, unless ``stored`` is False,
    a real JPEG in the store (colour from ``shade`` so that checksums differ)."""

    photo_id: int
    species: str
    split: str = "train"
    shade: int = 0
    stored: bool = True
    license: str | None = None  # default: one of LICENSE_CYCLE by photo id


def write_image(store: Path, relative_path: str, shade: int, size: tuple[int, int] = (40, 30)) -> str:
    """Write a small JPEG into the store; returns its sha256."""
    buffer = io.BytesIO()
    Image.new("RGB", size, ((shade * 37) % 256, (shade * 91) % 256, (shade * 53) % 256)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    path = store / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def manifest_row(store: Path, photo: Photo) -> dict[str, Any]:
    lineage = LINEAGES[photo.species]
    row: dict[str, Any] = {column: None for column in VERSION_COLUMNS}
    for rank, (taxon_id, name) in zip(MAIN_RANKS, lineage):
        row[rank], row[f"{rank}_id"] = name, taxon_id
    license_ = photo.license or LICENSE_CYCLE[photo.photo_id % len(LICENSE_CYCLE)]
    observer = f"Observer {photo.photo_id % 4}"
    row.update(
        photo_id=photo.photo_id,
        observation_uuid=f"00000000-0000-0000-0000-{photo.photo_id:012d}",
        observer_id=photo.photo_id % 4,
        observer_login=f"observer{photo.photo_id % 4}",
        observer_name=observer,
        taxon_id=lineage[-1][0],
        label_id=lineage[-1][0],
        label_name=lineage[-1][1],
        license=license_,
        attribution=f"(c) {observer}, some rights reserved ({license_})",
        quality_grade="research",
        observed_on=pd.Timestamp("2024-05-01").date(),
        extension="jpg",
        image_size="medium",
        source_url=f"s3://inaturalist-open-data/photos/{photo.photo_id}/medium.jpg",
        split=photo.split,
    )
    if photo.stored:
        relative = f"inaturalist/medium/{photo.photo_id}.jpg"
        row.update(image_path=relative, sha256=write_image(store, relative, photo.shade or photo.photo_id), width=40, height=30)
    return row


def make_manifest(store: Path, photos: list[Photo]) -> pd.DataFrame:
    """A manifest with VERSION_COLUMNS, its images written to ``store``."""
    return _frame([manifest_row(store, photo) for photo in photos])


def fake_manifest(photos: list[Photo]) -> pd.DataFrame:
    """A manifest whose image columns are filled without writing any image: the sha256 is that of
    the text ``photo {id} shade {shade}``. Enough for the registry, which never reads images."""
    rows = []
    for photo in photos:
        row = manifest_row(Path("/nonexistent"), replace(photo, stored=False))
        if photo.stored:
            fake = hashlib.sha256(f"photo {photo.photo_id} shade {photo.shade}".encode()).hexdigest()
            row.update(image_path=f"inaturalist/medium/{photo.photo_id}.jpg", sha256=fake, width=40, height=30)
        rows.append(row)
    return _frame(rows)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(VERSION_COLUMNS))
    return frame.astype({"photo_id": "int64", "label_id": "int64", "width": "Int64", "height": "Int64"})


def standard_photos() -> list[Photo]:
    """12 photos, 3 species, all splits: 6 P. rapae, 4 A. mellifera, 2 P. japonica."""
    layout = [
        ("Pieris rapae", ["train", "train", "train", "train", "val", "test"]),
        ("Apis mellifera", ["train", "train", "val", "test"]),
        ("Pieris japonica", ["train", "test"]),
    ]
    photos, photo_id = [], 100
    for species, splits in layout:
        for split in splits:
            photos.append(Photo(photo_id, species, split))
            photo_id += 1
    return photos
