"""Export a dataset version as an ImageFolder tree or WebDataset shards, with its attribution and a
Croissant description.

Every export folder holds:

- the images: ``{split}/{class}/{photo_id}.{ext}`` (ImageFolder; with ``nest_taxonomy`` the class
  folder is ``{kingdom}/{phylum}/…/{class}``), or ``{split}-{shard:05d}.tar`` shards of
  ``{photo_id}.{ext}`` + ``{photo_id}.json`` (WebDataset);
- ``classes.csv``: class index (the position of the class's folder name in sorted order, as
  torchvision's ImageFolder numbers them), taxon id, name, folder and images per split;
- ``attribution.csv`` (one row per image: photo_id, license, attribution, observer, source_url,
  file) and ``attribution.md`` (the same for people, grouped by license);
- ``croissant.json``: a Croissant 1.0 (MLCommons) JSON-LD description with sha256 checksums;
- ``card/``: the version's dataset card.

Images are read from the image store through fsspec and checked against their sha256. The export
is built in a temporary folder beside ``dest`` and renamed into place whole; an existing ``dest``
is never touched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import duckdb

from bioasset.download.items import ImageStore
from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import SPLITS
from bioasset.registry import (
    DatasetVersion,
    WarehouseLike,
    as_image_store,
    as_warehouse,
    card_dir,
    manifest_batches,
    manifest_path,
    query_manifest,
    quoted,
    read_store_files,
)
from bioasset.warehouse import sql_string

FORMATS = ("imagefolder", "webdataset")
DEFAULT_SHARD_SIZE = 1000

CLASSES_FILE = "classes.csv"
ATTRIBUTION_CSV = "attribution.csv"
ATTRIBUTION_MD = "attribution.md"
CROISSANT_FILE = "croissant.json"
ATTRIBUTION_COLUMNS = ("photo_id", "license", "attribution", "observer", "source_url", "file")

#: The license deeds the iNaturalist licenses point to (iNaturalist uses the 4.0 versions).
LICENSE_URLS = {
    "CC0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "CC-BY": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-NC": "https://creativecommons.org/licenses/by-nc/4.0/",
    "CC-BY-SA": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-ND": "https://creativecommons.org/licenses/by-nd/4.0/",
    "CC-BY-NC-SA": "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "CC-BY-NC-ND": "https://creativecommons.org/licenses/by-nc-nd/4.0/",
    "PD": "https://creativecommons.org/publicdomain/mark/1.0/",
}

MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}

#: Characters a folder name may not hold on common filesystems.
_UNSAFE_IN_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


class ExportError(ValueError):
    """An export that cannot be made: bad arguments, a missing or corrupt image."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    dest: Path
    format: str
    version: DatasetVersion
    images_per_split: dict[str, int]
    bytes: int  # image bytes copied
    files: tuple[str, ...]  # top-level files and folders, e.g. shards
    elapsed_s: float
    nest_taxonomy: bool = False
    shard_size: int | None = None

    @property
    def images(self) -> int:
        return sum(self.images_per_split.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest), "format": self.format, "version": self.version.ref, "images": self.images,
            "images_per_split": self.images_per_split, "bytes": self.bytes, "files": list(self.files),
            "elapsed_s": round(self.elapsed_s, 3), "nest_taxonomy": self.nest_taxonomy, "shard_size": self.shard_size,
        }


@dataclass(frozen=True)
class ExportClass:
    index: int
    label_id: int
    label_name: str
    folder: str  # relative to the split folder; several levels with nest_taxonomy
    counts: dict[str, int] = field(default_factory=dict)


def export_version(
    warehouse: WarehouseLike,
    version: DatasetVersion,
    dest: str | os.PathLike[str],
    *,
    format: str,
    image_store: ImageStore | str | None = None,
    nest_taxonomy: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ExportReport:
    """Export ``version`` to the local folder ``dest`` (which must not exist) as ``format``
    (``imagefolder`` or ``webdataset``); see the module docstring for what is written."""
    started = time.perf_counter()
    warehouse = as_warehouse(warehouse)
    target = Path(dest).expanduser().resolve()
    _check_arguments(target, format, nest_taxonomy, shard_size)
    store = as_image_store(image_store)
    manifest = manifest_path(warehouse, version)
    classes = export_classes(manifest, version.label_rank, nest_taxonomy=nest_taxonomy)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        with open(staging / ATTRIBUTION_CSV, "w", newline="", encoding="utf-8") as attribution:
            writer = csv.writer(attribution)
            writer.writerow(ATTRIBUTION_COLUMNS)
            if format == "imagefolder":
                copied = _write_imagefolder(staging, manifest, classes, store, writer)
            else:
                copied = _write_webdataset(staging, manifest, classes, store, writer, shard_size, version)
        _write_attribution_markdown(staging, version)
        _write_classes(staging / CLASSES_FILE, classes)
        write_croissant(staging, version, classes, format)
        if card_dir(warehouse, version).is_dir():
            shutil.copytree(card_dir(warehouse, version), staging / "card")
        files = tuple(sorted(p.name for p in staging.iterdir()))
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {split: sum(c.counts.get(split, 0) for c in classes) for split in SPLITS}
    return ExportReport(
        target, format, version, counts, copied, files, time.perf_counter() - started, nest_taxonomy,
        shard_size if format == "webdataset" else None,
    )


def _check_arguments(target: Path, format: str, nest_taxonomy: bool, shard_size: int) -> None:
    if format not in FORMATS:
        raise ExportError(f"Export format {format!r} is not known. Fix: use one of {', '.join(FORMATS)}.")
    if nest_taxonomy and format != "imagefolder":
        raise ExportError("--nest-taxonomy nests ImageFolder class folders; WebDataset shards have no folders. Fix: drop it, or use --format imagefolder.")
    if shard_size < 1:
        raise ExportError(f"Shard size {shard_size} is not positive. Fix: give the number of images per shard, e.g. 1000.")
    if target.exists():
        raise ExportError(f"Export destination {target} already exists; an export never overwrites. Fix: choose a new folder, or remove it.")


# ---------------------------------------------------------------------------------------------
# Classes and their folders
# ---------------------------------------------------------------------------------------------


def export_classes(manifest: str | os.PathLike[str], label_rank: str | None, *, nest_taxonomy: bool = False) -> list[ExportClass]:
    """The classes of a frozen manifest with their folders and per-split counts, in class-index
    order. Class indexes number the flat folder names in sorted order (as ImageFolder does), so
    they are the same for every format and for ``nest_taxonomy``."""
    ranks = MAIN_RANKS[: MAIN_RANKS.index(label_rank)] if label_rank in MAIN_RANKS else MAIN_RANKS
    lineage = ", ".join(f"any_value({quoted(f'{r}_id')}) AS {quoted(f'{r}_id')}, any_value({quoted(r)}) AS {quoted(r)}" for r in ranks)
    per_split = ", ".join(f"count(*) FILTER (WHERE split = {sql_string(s)}) AS {s}" for s in SPLITS)
    rows = query_manifest(
        manifest, f"SELECT label_id, any_value(label_name) AS label_name, {lineage}, {per_split} FROM manifest GROUP BY label_id"
    )
    flat = folder_names({row["label_id"]: [(row["label_id"], row["label_name"])] for row in rows})
    if nest_taxonomy:
        nested = {
            row["label_id"]: [(row[f"{r}_id"], row[r] or f"no {r}") for r in ranks] + [(row["label_id"], row["label_name"])]
            for row in rows
        }
        folders = folder_names(nested)
    else:
        folders = flat
    ordered = sorted(rows, key=lambda row: (flat[row["label_id"]], row["label_id"]))
    return [
        ExportClass(index, row["label_id"], row["label_name"], folders[row["label_id"]], {s: row[s] for s in SPLITS})
        for index, row in enumerate(ordered)
    ]


def folder_names(lineages: dict[int, list[tuple[int | None, str]]]) -> dict[int, str]:
    """Folder paths for each class from its lineage of (taxon id, name), top down.

    Each level is the taxon's name made safe for a filesystem. Where two different taxa with the
    same name would share a folder (same parent folder), both get their id appended:
    ``Pieris (55625)``. Taxa with the same name under different parents keep the plain name."""
    ids_by_place: dict[tuple[tuple[int | None, ...], str], set[int | None]] = {}
    for lineage in lineages.values():
        for depth, (taxon_id, name) in enumerate(lineage):
            parent = tuple(i for i, _ in lineage[:depth])
            ids_by_place.setdefault((parent, safe_name(name)), set()).add(taxon_id)
    folders = {}
    for label_id, lineage in lineages.items():
        parts = []
        for depth, (taxon_id, name) in enumerate(lineage):
            parent = tuple(i for i, _ in lineage[:depth])
            plain = safe_name(name)
            parts.append(plain if len(ids_by_place[(parent, plain)]) == 1 else f"{plain} ({taxon_id})")
        folders[label_id] = "/".join(parts)
    return folders


def safe_name(name: str) -> str:
    """``name`` as one folder level: no separators or control characters, never ``.``/``..``."""
    cleaned = _UNSAFE_IN_NAME.sub("_", str(name)).strip(" .")
    return cleaned or "_"


def _write_classes(path: Path, classes: list[ExportClass]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "label_id", "label_name", "folder", *SPLITS, "total"])
        for c in classes:
            writer.writerow([c.index, c.label_id, c.label_name, c.folder, *(c.counts[s] for s in SPLITS), sum(c.counts.values())])


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

_SAMPLE_COLUMNS = (
    "photo_id, label_id, label_name, taxon_id, split, image_path, sha256, license, attribution, "
    "coalesce(observer_name, observer_login) AS observer, observer_login, source_url"
)


def _with_bytes(store: ImageStore, batch: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each row with its image bytes, checked against the manifest's sha256."""
    contents = read_store_files(store, [row["image_path"] for row in batch])
    for row in batch:
        content = contents[row["image_path"]]
        location = f"{store.url.rstrip('/')}/{row['image_path']}"
        if isinstance(content, Exception):
            raise ExportError(
                f"Photo {row['photo_id']}: cannot read its image {location} ({type(content).__name__}: {content}). "
                "Fix: pass the image store the version was frozen from (--image-store), or re-run the image download."
            )
        if hashlib.sha256(content).hexdigest() != row["sha256"]:
            raise ExportError(
                f"Photo {row['photo_id']}: the image {location} does not match the version's sha256 {row['sha256']}; "
                "the store changed since the version was frozen. Fix: restore the image, or freeze a new version."
            )
        yield row, content


def _extension(image_path: str) -> str:
    return PurePosixPath(image_path).suffix.lstrip(".").lower() or "jpg"


def _write_imagefolder(
    staging: Path, manifest: Path, classes: list[ExportClass], store: ImageStore, attribution: Any
) -> int:
    folders = {c.label_id: c.folder for c in classes}
    copied = 0
    for batch in manifest_batches(manifest, _SAMPLE_COLUMNS, "split, label_id, photo_id"):
        for row, content in _with_bytes(store, batch):
            relative = f"{row['split']}/{folders[row['label_id']]}/{row['photo_id']}.{_extension(row['image_path'])}"
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            copied += len(content)
            _attribution_row(attribution, row, relative)
    return copied


def _write_webdataset(
    staging: Path, manifest: Path, classes: list[ExportClass], store: ImageStore, attribution: Any,
    shard_size: int, version: DatasetVersion,
) -> int:
    by_label = {c.label_id: c for c in classes}
    mtime = int(version.created.timestamp())  # fixed, so re-exports give identical tar files
    copied, shard, current_split, in_shard = 0, None, None, 0
    shard_number = 0
    try:
        # sha256 order is a fixed pseudo-random shuffle: WebDataset loaders read shards in order.
        for batch in manifest_batches(manifest, _SAMPLE_COLUMNS, "split, sha256"):
            for row, content in _with_bytes(store, batch):
                if row["split"] != current_split or in_shard == shard_size:
                    shard_number = 0 if row["split"] != current_split else shard_number + 1
                    current_split, in_shard = row["split"], 0
                    if shard is not None:
                        shard.close()
                    shard_name = f"{current_split}-{shard_number:05d}.tar"
                    shard = tarfile.open(staging / shard_name, "w", format=tarfile.PAX_FORMAT)
                key = str(row["photo_id"])
                image_name = f"{key}.{_extension(row['image_path'])}"
                label = by_label[row["label_id"]]
                annotation = {
                    "photo_id": row["photo_id"], "label_id": row["label_id"], "label_name": row["label_name"],
                    "class_index": label.index, "taxon_id": row["taxon_id"], "split": row["split"],
                    "path": row["image_path"], "sha256": row["sha256"], "license": row["license"],
                    "attribution": row["attribution"], "observer": row["observer"], "source_url": row["source_url"],
                }
                _add_member(shard, image_name, content, mtime)
                _add_member(shard, f"{key}.json", json.dumps(annotation, ensure_ascii=False).encode(), mtime)
                in_shard += 1
                copied += len(content)
                _attribution_row(attribution, row, f"{shard_name}/{image_name}")
    finally:
        if shard is not None:
            shard.close()
    return copied


def _add_member(archive: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    archive.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# Attribution
# ---------------------------------------------------------------------------------------------


def _attribution_row(writer: Any, row: dict[str, Any], file: str) -> None:
    writer.writerow([row["photo_id"], row["license"], row["attribution"], row["observer"], row["source_url"], file])


def _write_attribution_markdown(staging: Path, version: DatasetVersion) -> None:
    """``attribution.md`` from ``attribution.csv``: one section per license, most images first."""
    source = f"read_csv({sql_string(str(staging / ATTRIBUTION_CSV))}, header = true, all_varchar = true)"
    with duckdb.connect() as con, open(staging / ATTRIBUTION_MD, "w", encoding="utf-8") as out:
        counts = con.execute(f"SELECT license, count(*) AS n FROM {source} GROUP BY license ORDER BY n DESC, license").fetchall()
        out.write(f"# Attribution: {version.name} @ {version.version}\n\n")
        out.write(
            f"{version.images:,} photos from iNaturalist observers, each under its own license. "
            "Keep this file (or attribution.csv) with the images, and credit the observers as below.\n\n"
        )
        for license_, count in counts:
            _write_license_section(con, source, out, license_, count)


def _write_license_section(con: duckdb.DuckDBPyConnection, source: str, out: TextIO, license_: str, count: int) -> None:
    deed = LICENSE_URLS.get(license_)
    out.write(f"## {license_} ({count:,} images)\n\n" + (f"License: {deed}\n\n" if deed else ""))
    cursor = con.execute(f"SELECT file, attribution, source_url FROM {source} WHERE license = ? ORDER BY file", [license_])
    while rows := cursor.fetchmany(10_000):
        out.writelines(f"- `{file}`: {attribution or 'no attribution given'} ({url})\n" for file, attribution, url in rows)
    out.write("\n")


# ---------------------------------------------------------------------------------------------
# Croissant
# ---------------------------------------------------------------------------------------------

#: The JSON-LD context of Croissant 1.0 (as in the specification's examples).
CROISSANT_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
CROISSANT_CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
#: File set ids; every @id in a Croissant document must be unique, record sets included.
IMAGE_FILES = "image-files"
ANNOTATION_FILES = "annotation-files"


def write_croissant(folder: Path, version: DatasetVersion, classes: list[ExportClass], format: str) -> dict[str, Any]:
    """Write ``croissant.json`` describing the export in ``folder`` (its files must be there)."""
    document = croissant_document(folder, version, classes, format)
    (folder / CROISSANT_FILE).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return document


def croissant_document(folder: Path, version: DatasetVersion, classes: list[ExportClass], format: str) -> dict[str, Any]:
    """The Croissant JSON-LD of an export: metadata, distribution (files with sha256, image file
    sets) and record sets (images with label and split; the class table)."""
    licenses = [r[0] for r in _distinct_licenses(folder)]
    extensions = sorted({PurePosixPath(row).suffix.lstrip(".") for row in _attribution_files(folder)})
    media = sorted({MEDIA_TYPES.get(ext, f"image/{ext}") for ext in extensions})
    distribution = [_file_object(folder, CLASSES_FILE, "text/csv"), _file_object(folder, ATTRIBUTION_CSV, "text/csv")]
    if format == "imagefolder":
        distribution.append(
            {
                "@type": "cr:FileSet", "@id": IMAGE_FILES, "name": IMAGE_FILES,
                "description": "Images in {split}/{class folder}/{photo_id}.{extension}.",
                "encodingFormat": media[0] if len(media) == 1 else media,
                "includes": [f"{split}/**/*.{ext}" for split in SPLITS for ext in extensions],
            }
        )
        record_sets = [_imagefolder_records(), _classes_records()]
    else:
        shards = sorted(p.name for p in folder.glob("*.tar"))
        distribution += [_file_object(folder, shard, "application/x-tar") for shard in shards]
        contained_in = [{"@id": shard} for shard in shards]
        distribution += [
            {
                "@type": "cr:FileSet", "@id": IMAGE_FILES, "name": IMAGE_FILES, "containedIn": contained_in,
                "encodingFormat": media[0] if len(media) == 1 else media, "includes": [f"*.{ext}" for ext in extensions],
            },
            {
                "@type": "cr:FileSet", "@id": ANNOTATION_FILES, "name": ANNOTATION_FILES, "containedIn": contained_in,
                "encodingFormat": "application/json", "includes": ["*.json"],
            },
        ]
        record_sets = [_webdataset_image_records(), _webdataset_annotation_records(), _classes_records()]
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_CONFORMS_TO,
        "name": version.name,
        "description": (
            f"{version.name} version {version.version}: {version.images} iNaturalist photos in {version.class_count} "
            f"classes at rank {version.label_rank or 'mixed'}, exported as {format}. Content hash {version.content_hash}."
        ),
        # Croissant wants MAJOR.MINOR.PATCH: the version's sequence number, with its id as build metadata.
        "version": f"{version.sequence}.0.0+{version.version}",
        "datePublished": version.created.strftime("%Y-%m-%d"),
        "citeAs": f"{version.name} @ {version.version}, built with bioasset from iNaturalist open data (snapshot {version.snapshot or 'n/a'}).",
        "url": "https://www.inaturalist.org",
        "license": [LICENSE_URLS.get(license_, license_) for license_ in licenses],
        "creator": {"@type": "sc:Organization", "name": "iNaturalist observers (see attribution.csv)", "url": "https://www.inaturalist.org"},
        "keywords": ["biodiversity", "iNaturalist", "image classification", version.label_rank or "taxa"],
        "distribution": distribution,
        "recordSet": record_sets,
    }


def _distinct_licenses(folder: Path) -> list[tuple[str]]:
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT DISTINCT license FROM read_csv({sql_string(str(folder / ATTRIBUTION_CSV))}, header = true, all_varchar = true) ORDER BY 1"
        ).fetchall()


def _attribution_files(folder: Path) -> Iterator[str]:
    with open(folder / ATTRIBUTION_CSV, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield row["file"]


def _file_object(folder: Path, name: str, encoding_format: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(folder / name, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {
        "@type": "cr:FileObject", "@id": name, "name": name, "contentUrl": name,
        "contentSize": f"{(folder / name).stat().st_size} B", "encodingFormat": encoding_format, "sha256": digest.hexdigest(),
    }


def _record_set(record_set: str, description: str, fields: list[tuple[str, str, str, dict[str, Any]]]) -> dict[str, Any]:
    """A RecordSet from (field name, data type, description, source) tuples."""
    return {
        "@type": "cr:RecordSet", "@id": record_set, "name": record_set, "description": description,
        "field": [
            {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name, "description": about, "dataType": data_type, "source": source}
            for name, data_type, about, source in fields
        ],
    }


def _from_file(file_property: str, regex: str | None = None) -> dict[str, Any]:
    """A field taken from a property of each file of the image file set, maybe through a regex."""
    source: dict[str, Any] = {"fileSet": {"@id": IMAGE_FILES}, "extract": {"fileProperty": file_property}}
    if regex:
        source["transform"] = {"regex": regex}
    return source


_PHOTO_ID_FROM_FILENAME = ("photo_id", "sc:Integer", "The iNaturalist photo id.", _from_file("filename", r"^([0-9]+)\..*$"))
_IMAGE_CONTENT = ("image", "sc:ImageObject", "The image.", _from_file("content"))


def _imagefolder_records() -> dict[str, Any]:
    return _record_set("images", "One record per image; label and split come from its folder.", [
        _IMAGE_CONTENT,
        ("label", "sc:Text", "The class folder (its name, or name (taxon id) where names repeat).",
         _from_file("fullpath", r"^[^/]+/(?:.*/)?([^/]+)/[^/]+$")),
        ("split", "sc:Text", "train, val or test.", _from_file("fullpath", r"^([^/]+)/.*$")),
        _PHOTO_ID_FROM_FILENAME,
    ])


def _webdataset_image_records() -> dict[str, Any]:
    return _record_set("images", "One record per image in the shards; join with annotations on photo_id.", [
        _IMAGE_CONTENT, _PHOTO_ID_FROM_FILENAME,
    ])


#: Fields of each sample's JSON that the Croissant description declares: name, type, description.
_ANNOTATION_FIELDS = (
    ("photo_id", "sc:Integer", "The iNaturalist photo id."),
    ("label_id", "sc:Integer", "The class's iNaturalist taxon id."),
    ("label_name", "sc:Text", "The class's scientific name."),
    ("class_index", "sc:Integer", "The class index (see classes.csv)."),
    ("split", "sc:Text", "train, val or test."),
    ("license", "sc:Text", "The image's license."),
)
#: Columns of classes.csv that the Croissant description declares.
_CLASS_FIELDS = (
    ("class_index", "sc:Integer", "Position of the class (sorted folder names)."),
    ("label_id", "sc:Integer", "iNaturalist taxon id."),
    ("label_name", "sc:Text", "Scientific name."),
    ("folder", "sc:Text", "Folder of the class under each split."),
)


def _webdataset_annotation_records() -> dict[str, Any]:
    return _record_set(
        "annotations", "The {photo_id}.json sample of each image: label, split, license and attribution.",
        [(name, kind, about, {"fileSet": {"@id": ANNOTATION_FILES}, "extract": {"jsonPath": f"$.{name}"}}) for name, kind, about in _ANNOTATION_FIELDS],
    )


def _classes_records() -> dict[str, Any]:
    return _record_set(
        "classes", "The classes: index, iNaturalist taxon id, name and folder.",
        [(name, kind, about, {"fileObject": {"@id": CLASSES_FILE}, "extract": {"column": name}}) for name, kind, about in _CLASS_FIELDS],
    )
