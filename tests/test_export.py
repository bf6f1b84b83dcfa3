"""Exports of a frozen version: ImageFolder (flat and nested by taxonomy), WebDataset shards, the
attribution files and the Croissant description, from real images in a temporary image store."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from bioasset.cli import main
from bioasset.export import ExportError, export_version, folder_names, safe_name
from bioasset.registry import DatasetVersion, freeze_version
from dataset_fixtures import LINEAGES, standard_photos, make_manifest

#: Images per (split, species) in standard_photos().
EXPECTED = {
    ("train", "Pieris rapae"): 4, ("val", "Pieris rapae"): 1, ("test", "Pieris rapae"): 1,
    ("train", "Apis mellifera"): 2, ("val", "Apis mellifera"): 1, ("test", "Apis mellifera"): 1,
    ("train", "Pieris japonica"): 1, ("test", "Pieris japonica"): 1,
}


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> tuple[Path, Path, DatasetVersion]:
    """(warehouse, image store, version) of the standard photos, card included."""
    root = tmp_path_factory.mktemp("export")
    store, warehouse = root / "images", root / "warehouse"
    result = freeze_version(warehouse, "demo", make_manifest(store, standard_photos()), snapshot="2024-11-27", image_store=str(store))
    return warehouse, store, result.version


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg") if "card" not in p.relative_to(root).parts)


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def test_imagefolder_export_files_per_class_and_split(frozen, tmp_path):
    warehouse, store, version = frozen
    report = export_version(warehouse, version, tmp_path / "out", format="imagefolder", image_store=str(store))
    out = tmp_path / "out"
    assert report.images == 12 and report.images_per_split == {"train": 7, "val": 2, "test": 3}
    counts = Counter((p.relative_to(out).parts[0], p.parent.name) for p in image_files(out))
    assert counts == EXPECTED
    assert all(len(p.relative_to(out).parts) == 3 for p in image_files(out))  # split/class/photo.jpg
    # Bytes are the store's, unchanged.
    for path in image_files(out):
        assert path.read_bytes() == (store / "inaturalist" / "medium" / path.name).read_bytes()
    assert sorted(report.files) == sorted(
        ["attribution.csv", "attribution.md", "card", "classes.csv", "croissant.json", "test", "train", "val"]
    )
    assert (out / "card" / "card.md").is_file()
    classes = read_csv(out / "classes.csv")
    assert [(c["class_index"], c["label_name"], c["total"]) for c in classes] == [
        ("0", "Apis mellifera", "4"), ("1", "Pieris japonica", "2"), ("2", "Pieris rapae", "6"),
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_nest_taxonomy_nests_class_folders_from_kingdom_to_species(frozen, tmp_path):
    warehouse, store, version = frozen
    export_version(warehouse, version, tmp_path / "out", format="imagefolder", image_store=str(store), nest_taxonomy=True)
    out = tmp_path / "out"
    folders = {p.parent.relative_to(out).as_posix() for p in image_files(out)}
    expected = {
        f"{split}/" + "/".join(name for _, name in LINEAGES[species])
        for split, species in EXPECTED
    }
    assert folders == expected
    # Two genera named Pieris, in different kingdoms, keep their plain names in their own trees.
    assert (out / "train/Animalia/Arthropoda/Insecta/Lepidoptera/Pieridae/Pieris/Pieris rapae").is_dir()
    assert (out / "train/Plantae/Tracheophyta/Magnoliopsida/Ericales/Ericaceae/Pieris/Pieris japonica").is_dir()
    files = {row["file"] for row in read_csv(out / "attribution.csv")}
    assert files == {p.relative_to(out).as_posix() for p in image_files(out)}


def test_folder_names_disambiguate_only_names_that_would_share_a_folder():
    folders = folder_names({
        1: [(10, "Animalia"), (20, "Morus")],
        2: [(11, "Plantae"), (21, "Morus")],
        3: [(10, "Animalia"), (22, "Morus")],  # a second Morus in the same folder
        4: [(10, "Animalia"), (None, "no genus")],
    })
    assert folders == {1: "Animalia/Morus (20)", 2: "Plantae/Morus", 3: "Animalia/Morus (22)", 4: "Animalia/no genus"}
    assert safe_name("a/b: c?") == "a_b_ c_"
    assert safe_name("..") == "_"


def test_attribution_csv_and_markdown(frozen, tmp_path):
    warehouse, store, version = frozen
    export_version(warehouse, version, tmp_path / "out", format="imagefolder", image_store=str(store))
    out = tmp_path / "out"
    rows = read_csv(out / "attribution.csv")
    assert list(rows[0]) == ["photo_id", "license", "attribution", "observer", "source_url", "file"]
    assert sorted(int(r["photo_id"]) for r in rows) == [p.photo_id for p in standard_photos()]
    row = next(r for r in rows if r["photo_id"] == "104")
    assert row["license"] == "CC-BY-NC" and row["observer"] == "Observer 0"
    assert row["attribution"] == "(c) Observer 0, some rights reserved (CC-BY-NC)"
    assert row["source_url"] == "s3://inaturalist-open-data/photos/104/medium.jpg"
    assert (out / row["file"]).is_file()

    markdown = (out / "attribution.md").read_text()
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections == ["## CC-BY (4 images)", "## CC-BY-NC (4 images)", "## CC0 (4 images)"]
    cc_by_nc = markdown.split("## CC-BY-NC")[1].split("## CC0")[0]
    assert f"`{row['file']}`: (c) Observer 0" in cc_by_nc and "creativecommons.org/licenses/by-nc/4.0/" in cc_by_nc


# ---------------------------------------------------------------------------------------------
# WebDataset
# ---------------------------------------------------------------------------------------------


def test_webdataset_shards_hold_image_and_json_per_sample(frozen, tmp_path):
    warehouse, store, version = frozen
    report = export_version(warehouse, version, tmp_path / "out", format="webdataset", image_store=str(store), shard_size=3)
    out = tmp_path / "out"
    shards = sorted(p.name for p in out.glob("*.tar"))
    # 7 train images in shards of 3 -> 3 shards; 2 val -> 1; 3 test -> 1.
    assert shards == ["test-00000.tar", "train-00000.tar", "train-00001.tar", "train-00002.tar", "val-00000.tar"]
    assert report.shard_size == 3

    samples = {}
    for shard in shards:
        with tarfile.open(out / shard) as archive:
            names = archive.getnames()
            assert len(names) == 2 * len({n.split(".")[0] for n in names})
            for name in names:
                key, extension = name.split(".", 1)
                data = archive.extractfile(name).read()
                samples.setdefault(key, {})[extension] = data
                samples[key]["shard"] = shard
    assert len(samples) == 12
    for key, sample in samples.items():
        annotation = json.loads(sample["json"])
        assert annotation["photo_id"] == int(key)
        assert sample["shard"].startswith(annotation["split"] + "-")
        assert hashlib.sha256(sample["jpg"]).hexdigest() == annotation["sha256"]
        assert {"label_id", "label_name", "class_index", "path", "license", "attribution"} <= set(annotation)
    by_label = Counter((json.loads(s["json"])["split"], json.loads(s["json"])["label_name"]) for s in samples.values())
    assert by_label == EXPECTED

    attribution = read_csv(out / "attribution.csv")
    assert {r["file"] for r in attribution} == {f"{s['shard']}/{key}.jpg" for key, s in samples.items()}


def test_webdataset_shards_read_with_the_webdataset_library(frozen, tmp_path):
    webdataset = pytest.importorskip("webdataset")
    warehouse, store, version = frozen
    export_version(warehouse, version, tmp_path / "out", format="webdataset", image_store=str(store), shard_size=4)
    urls = [str(p) for p in sorted((tmp_path / "out").glob("train-*.tar"))]
    samples = list(webdataset.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "json"))
    assert len(samples) == 7
    for key, image, annotation in samples:
        assert image.size == (40, 30) and annotation["split"] == "train" and str(annotation["photo_id"]) == key


# ---------------------------------------------------------------------------------------------
# Croissant
# ---------------------------------------------------------------------------------------------


def test_croissant_structure(frozen, tmp_path):
    warehouse, store, version = frozen
    export_version(warehouse, version, tmp_path / "out", format="webdataset", image_store=str(store))
    out = tmp_path / "out"
    document = json.loads((out / "croissant.json").read_text())
    assert document["@type"] == "sc:Dataset" and document["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert document["@context"]["cr"] == "http://mlcommons.org/croissant/"
    assert document["name"] == "demo" and document["version"] == f"1.0.0+{version.version}"
    assert sorted(document["license"]) == sorted([
        "https://creativecommons.org/licenses/by/4.0/", "https://creativecommons.org/licenses/by-nc/4.0/",
        "https://creativecommons.org/publicdomain/zero/1.0/",
    ])
    objects = {d["@id"]: d for d in document["distribution"] if d["@type"] == "cr:FileObject"}
    assert set(objects) == {"classes.csv", "attribution.csv", "test-00000.tar", "train-00000.tar", "val-00000.tar"}
    for name, entry in objects.items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    file_sets = {d["@id"]: d for d in document["distribution"] if d["@type"] == "cr:FileSet"}
    assert file_sets["image-files"]["encodingFormat"] == "image/jpeg"
    assert {c["@id"] for c in file_sets["image-files"]["containedIn"]} == {"test-00000.tar", "train-00000.tar", "val-00000.tar"}
    fields = {f["@id"] for record_set in document["recordSet"] for f in record_set["field"]}
    assert {"images/image", "annotations/label_id", "annotations/label_name", "annotations/split"} <= fields


#: Run in a child process: mlcroissant caches extracted archives by their contentUrl under
#: CROISSANT_CACHE (read once, at import), so each run gets its own cache folder.
MLCROISSANT_CHECK = """
import json, sys
from collections import Counter
import mlcroissant

report = {}
for name in sys.argv[1:]:
    dataset = mlcroissant.Dataset(jsonld=name + "/croissant.json")
    issues = dataset.metadata.ctx.issues
    records = {}
    for record_set in dataset.metadata.record_sets:
        try:
            records[record_set.uuid] = [
                {k: (v.decode() if isinstance(v, bytes) else list(v.size) if hasattr(v, "size") else v) for k, v in r.items()}
                for r in dataset.records(record_set.uuid)
            ]
        except Exception as error:
            records[record_set.uuid] = repr(error)[:200]
    report[name] = {"errors": sorted(issues.errors), "warnings": sorted(issues.warnings), "records": records}
print(json.dumps(report))
"""


def test_croissant_validates_and_loads_with_mlcroissant(frozen, tmp_path):
    pytest.importorskip("mlcroissant")
    warehouse, store, version = frozen
    folder, shards = tmp_path / "folder", tmp_path / "shards"
    export_version(warehouse, version, folder, format="imagefolder", image_store=str(store), nest_taxonomy=True)
    export_version(warehouse, version, shards, format="webdataset", image_store=str(store))
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "croissant-cache")}
    run = subprocess.run(
        [sys.executable, "-c", MLCROISSANT_CHECK, str(folder), str(shards)], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])

    assert report[str(folder)]["errors"] == [] and report[str(folder)]["warnings"] == []
    images = report[str(folder)]["records"]["images"]
    assert Counter((r["images/split"], r["images/label"]) for r in images) == EXPECTED
    assert all(r["images/image"] == [40, 30] for r in images)
    assert sorted(r["images/photo_id"] for r in images) == [p.photo_id for p in standard_photos()]
    assert sorted(r["classes/label_name"] for r in report[str(folder)]["records"]["classes"]) == sorted(LINEAGES)

    assert report[str(shards)]["errors"] == [] and report[str(shards)]["warnings"] == []
    # mlcroissant 1.1 reads the images out of the tar shards (but not yet jsonPath inside them).
    assert sorted(r["images/photo_id"] for r in report[str(shards)]["records"]["images"]) == [p.photo_id for p in standard_photos()]


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


def test_export_refuses_an_existing_destination_and_bad_options(frozen, tmp_path):
    warehouse, store, version = frozen
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_version(warehouse, version, tmp_path / "out", format="imagefolder", image_store=str(store))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match="--nest-taxonomy"):
        export_version(warehouse, version, tmp_path / "x", format="webdataset", image_store=str(store), nest_taxonomy=True)
    with pytest.raises(ExportError, match="imagefolder, webdataset"):
        export_version(warehouse, version, tmp_path / "x", format="coco", image_store=str(store))


def test_a_changed_or_missing_image_fails_the_export_and_leaves_nothing(frozen, tmp_path):
    warehouse, store, version = frozen
    # A copy of the store with one image changed and one missing.
    broken = tmp_path / "store"
    for path in (store / "inaturalist" / "medium").iterdir():
        target = broken / "inaturalist" / "medium" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (broken / "inaturalist/medium/104.jpg").write_bytes(b"not the same bytes")
    with pytest.raises(ExportError, match=r"Photo 104: the image .*104\.jpg does not match") as error:
        export_version(warehouse, version, tmp_path / "out", format="imagefolder", image_store=str(broken))
    assert "Fix:" in str(error.value)
    (broken / "inaturalist/medium/104.jpg").unlink()
    with pytest.raises(ExportError, match="Photo 104: cannot read its image"):
        export_version(warehouse, version, tmp_path / "out", format="webdataset", image_store=str(broken))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_cli_export(frozen, tmp_path, capsys):
    warehouse, store, version = frozen
    common = ["--warehouse", str(warehouse), "--image-store", str(store)]
    assert main(["datasets", "export", "demo", str(tmp_path / "wds"), "--format", "webdataset", "--shard-size", "5", "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == version.ref and report["images"] == 12
    assert "train-00001.tar" in report["files"]
    assert main(["datasets", "export", f"demo@{version.version}", str(tmp_path / "tree"), "--format", "imagefolder", "--nest-taxonomy", *common]) == 0
    assert "Exported demo@" in capsys.readouterr().out
    assert (tmp_path / "tree" / "train" / "Plantae").is_dir()
    assert main(["datasets", "export", "demo", str(tmp_path / "tree"), "--format", "imagefolder", *common]) == 1
    assert "already exists" in capsys.readouterr().err
