"""The dataset registry: content-addressed version ids, immutability, the catalog, diffs and the
``bioasset datasets`` list / show / diff commands, on real DuckDB and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from bioasset.cli import main
from bioasset.registry import (
    CATALOG_ROW_FILENAME,
    CATALOG_VIEW,
    MANIFEST_FILENAME,
    RegistryError,
    catalog,
    diff_versions,
    freeze_version,
    manifest_content_hash,
    parse_version_ref,
    resolve_version,
    version_dir,
)
from bioasset.warehouse import Warehouse, sql_string
from dataset_fixtures import Photo, fake_manifest, standard_photos

#: The content hash of ``fake_manifest(standard_photos())``. If the hashing recipe changes, every
#: version id changes: bump CONTENT_HASH_RECIPE and update this on purpose.
STANDARD_CONTENT_HASH = "dd4b185d2b565add7f1e791b664852fc6215e1d1132daa95f22303429c427397"


def changed_photos() -> list[Photo]:
    """The standard photos, then: 100 and 110 removed; 200, 201 and 202 added; 101 relabelled
    from Pieris rapae to Apis mellifera; 106 (train -> val) and 108 (val -> test) moved; 107 with
    other image bytes."""
    photos = {p.photo_id: p for p in standard_photos()}
    del photos[100], photos[110]
    photos[101] = replace(photos[101], species="Apis mellifera")
    photos[106] = replace(photos[106], split="val")
    photos[108] = replace(photos[108], split="test")
    photos[107] = replace(photos[107], shade=999)
    photos[200] = Photo(200, "Pieris rapae", "train")
    photos[201] = Photo(201, "Apis mellifera", "val")
    photos[202] = Photo(202, "Pieris japonica", "test")
    return list(photos.values())


def freeze(warehouse: Path, manifest: pd.DataFrame | str | Path, name: str = "demo", **options):
    return freeze_version(warehouse, name, manifest, with_card=False, **options)


def file_stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Version ids
# ---------------------------------------------------------------------------------------------


def test_content_hash_is_stable_and_independent_of_row_order_and_other_columns():
    manifest = fake_manifest(standard_photos())
    assert manifest_content_hash(manifest) == STANDARD_CONTENT_HASH
    shuffled = manifest.sample(frac=1, random_state=7).reset_index(drop=True)
    assert not shuffled["photo_id"].equals(manifest["photo_id"])
    assert manifest_content_hash(shuffled) == STANDARD_CONTENT_HASH
    # Columns outside the recipe (observer names, dates, sizes) do not change the content.
    renamed = manifest.assign(observer_name="Someone Else", width=99)
    assert manifest_content_hash(renamed) == STANDARD_CONTENT_HASH


@pytest.mark.parametrize(
    "column, value",
    [
        ("label_id", 47220),
        ("label_name", "Pieris brassicae"),
        ("split", "val"),
        ("sha256", "0" * 64),
        ("license", "CC-BY-NC-ND"),
    ],
)
def test_content_hash_changes_with_any_label_split_checksum_or_license(column, value):
    manifest = fake_manifest(standard_photos())
    changed = manifest.copy()
    assert changed.loc[0, column] != value
    changed.loc[0, column] = value
    assert manifest_content_hash(changed) != manifest_content_hash(manifest)


def test_rows_without_images_are_left_out_and_counted(tmp_path):
    photos = standard_photos() + [Photo(300, "Apis mellifera", stored=False), Photo(301, "Pieris rapae", stored=False)]
    result = freeze(tmp_path, fake_manifest(photos))
    assert result.missing_images == 2 and result.version.missing_images == 2
    assert result.version.images == 12
    # The excluded rows do not count toward the content either.
    assert result.version.content_hash == STANDARD_CONTENT_HASH


def test_freezing_refuses_an_image_without_sha256_naming_the_rows(tmp_path):
    manifest = fake_manifest(standard_photos())
    manifest.loc[[2, 5], "sha256"] = None
    with pytest.raises(RegistryError) as error:
        freeze(tmp_path, manifest)
    message = str(error.value)
    assert "2 rows have an image_path but no sha256" in message
    assert "input rows 3, 6" in message and "Fix:" in message
    assert not (tmp_path / "datasets").exists()


def test_freezing_reports_every_kind_of_bad_row_and_missing_columns(tmp_path):
    manifest = fake_manifest(standard_photos())
    manifest.loc[0, "split"] = "holdout"
    manifest.loc[1, "photo_id"] = manifest.loc[2, "photo_id"]
    with pytest.raises(RegistryError) as error:
        freeze(tmp_path, manifest)
    assert "have a split other than train, val, test" in str(error.value)
    assert "repeat a photo_id (input rows 2, 3)" in str(error.value)
    with pytest.raises(RegistryError, match="lacks the columns sha256, width"):
        freeze(tmp_path, manifest.drop(columns=["sha256", "width"]))


# ---------------------------------------------------------------------------------------------
# Immutability and the catalog
# ---------------------------------------------------------------------------------------------


def test_refreezing_the_same_content_returns_the_version_without_writing(tmp_path):
    manifest = fake_manifest(standard_photos())
    first = freeze(tmp_path, manifest, snapshot="2024-11-27", spec_hash="a" * 64)
    assert first.created and first.version.version == STANDARD_CONTENT_HASH[:12]
    folder = version_dir(Warehouse(tmp_path), "demo", first.version.version)
    assert first.path == folder and sorted(file_stats(folder)) == [CATALOG_ROW_FILENAME, MANIFEST_FILENAME]
    before = file_stats(folder)

    # Same content in another row order, from a Parquet file, with another snapshot: same version.
    parquet = tmp_path / "manifest.parquet"
    manifest.iloc[::-1].to_parquet(parquet)
    second = freeze(tmp_path, parquet, snapshot="2024-12-27")
    assert not second.created
    assert second.version == first.version  # the stored row, snapshot included, is unchanged
    assert file_stats(folder) == before
    assert [v.version for v in catalog(tmp_path)] == [first.version.version]


def test_catalog_rows_parent_and_counts_against_the_parent(tmp_path):
    first = freeze(tmp_path, fake_manifest(standard_photos()), snapshot="2024-11-27", spec_hash="s1").version
    second = freeze(tmp_path, fake_manifest(changed_photos()), snapshot="2024-12-27", spec_hash="s1").version
    assert (first.sequence, first.parent_version) == (1, None)
    assert (first.added, first.removed, first.relabelled, first.resplit) == (12, 0, 0, 0)
    assert (first.class_count, first.images_per_split) == (3, {"train": 7, "val": 2, "test": 3})
    assert first.label_rank == "species"

    assert (second.sequence, second.parent_version, second.snapshot) == (2, first.version, "2024-12-27")
    assert (second.added, second.removed, second.relabelled, second.resplit) == (3, 2, 1, 2)
    assert second.images == 13 and second.images_per_split == {"train": 5, "val": 3, "test": 5}

    # The DuckDB view in bioasset.duckdb sees both rows, through the glob, without a rewrite.
    with duckdb.connect(str(Warehouse(tmp_path).db_path), read_only=True) as con:
        rows = con.execute(f"SELECT version, parent_version, added, removed, relabelled FROM {CATALOG_VIEW} ORDER BY sequence").fetchall()
    assert rows == [(first.version, None, 12, 0, 0), (second.version, first.version, 3, 2, 1)]
    assert resolve_version(tmp_path, "demo") == second


def test_different_content_never_lands_in_an_existing_version_folder(tmp_path):
    first = freeze(tmp_path, fake_manifest(standard_photos())).version
    folder = version_dir(Warehouse(tmp_path), "demo", first.version)
    # Fake a 48-bit id collision: the folder of this id now claims other content.
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * REPLACE ('f' || content_hash[2:] AS content_hash) FROM read_parquet({sql_string(str(folder / CATALOG_ROW_FILENAME))})) "
            f"TO {sql_string(str(tmp_path / 'tampered.parquet'))} (FORMAT parquet)"
        )
    (tmp_path / "tampered.parquet").replace(folder / CATALOG_ROW_FILENAME)
    manifest_before = (folder / MANIFEST_FILENAME).read_bytes()
    with pytest.raises(RegistryError, match="the short ids collide"):
        freeze(tmp_path, fake_manifest(standard_photos()))
    assert (folder / MANIFEST_FILENAME).read_bytes() == manifest_before


def test_concurrent_freezes_of_the_same_content_make_one_version(tmp_path):
    manifest = fake_manifest(standard_photos())
    results, errors = [], []

    def run():
        try:
            results.append(freeze(tmp_path, manifest.copy()))
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.created for r in results) == [False, False, True]
    assert len({r.version for r in results}) == 1
    assert len(catalog(tmp_path)) == 1


def test_a_held_duckdb_file_does_not_stop_a_freeze(tmp_path):
    """Another process (a DuckDB CLI, say) holding bioasset.duckdb: the version is stored and
    listed; only the view waits for the next freeze."""
    db_path = Warehouse(tmp_path).db_path
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(db_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = freeze(tmp_path, fake_manifest(standard_photos()))
        assert result.created and "was not created" in result.catalog_view_error and "Fix:" in result.catalog_view_error
        assert [v.version for v in catalog(tmp_path)] == [result.version.version]
    finally:
        holder.kill()
        holder.wait()
    second = freeze(tmp_path, fake_manifest(changed_photos()))
    assert second.catalog_view_error is None
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {CATALOG_VIEW}").fetchone()[0] == 2


def test_created_time_is_stored_in_utc(tmp_path):
    moment = datetime(2024, 11, 28, 9, 30, tzinfo=timezone.utc)
    version = freeze(tmp_path, fake_manifest(standard_photos()), created=moment).version
    assert catalog(tmp_path)[0].created == moment == version.created


# ---------------------------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------------------------


def test_diff_counts_per_class_and_in_total(tmp_path):
    old = freeze(tmp_path, fake_manifest(standard_photos())).version
    new = freeze(tmp_path, fake_manifest(changed_photos())).version
    diff = diff_versions(tmp_path, old, new)
    assert (diff.added, diff.removed, diff.relabelled, diff.resplit, diff.image_changed) == (3, 2, 1, 2, 1)
    per_class = {c.label_name: (c.before, c.after, c.added, c.removed, c.relabelled_in, c.relabelled_out) for c in diff.classes}
    assert per_class == {
        "Pieris rapae": (6, 5, 1, 1, 0, 1),
        "Apis mellifera": (4, 6, 1, 0, 1, 0),
        "Pieris japonica": (2, 2, 1, 1, 0, 0),
    }
    backwards = diff_versions(tmp_path, new, old)
    assert (backwards.added, backwards.removed, backwards.relabelled) == (2, 3, 1)
    assert diff.relicensed == backwards.relicensed == 0


def test_diff_counts_relicensed_photos(tmp_path):
    """Another license means another attribution (and maybe no longer within a spec): reported."""
    photos = standard_photos()
    target = photos[0]
    changed = [replace(p, license="CC-BY-SA") if p is target else p for p in photos]  # not in the fixture's cycle
    old = freeze(tmp_path, fake_manifest(photos)).version
    new = freeze(tmp_path, fake_manifest(changed)).version
    assert new.version != old.version
    diff = diff_versions(tmp_path, old, new)
    assert (diff.added, diff.removed, diff.relabelled, diff.relicensed) == (0, 0, 0, 1)
    assert {c.label_name: c.relicensed for c in diff.classes if c.relicensed} == {target.species: 1}
    assert (old.relicensed, new.relicensed) == (0, 1)  # the catalog row records it too


def test_catalog_rows_written_before_relicensed_was_recorded_still_read(tmp_path, capsys):
    """A row from before the column existed reads as relicensed=None, beside newer rows."""
    first = freeze(tmp_path, fake_manifest(standard_photos())).version
    row_path = version_dir(Warehouse(tmp_path), "demo", first.version) / CATALOG_ROW_FILENAME
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * EXCLUDE (relicensed) FROM read_parquet('{row_path}')) TO '{row_path}.old' (FORMAT parquet)")
    os.replace(f"{row_path}.old", row_path)
    second = freeze(tmp_path, fake_manifest(changed_photos())).version

    assert [v.relicensed for v in catalog(tmp_path)] == [None, second.relicensed] and second.relicensed is not None
    with duckdb.connect(str(Warehouse(tmp_path).db_path), read_only=True) as con:
        assert con.execute(f"SELECT relicensed FROM {CATALOG_VIEW} ORDER BY sequence").fetchall() == [(None,), (second.relicensed,)]
    assert main(["datasets", "list", "--warehouse", str(tmp_path)]) == 0
    assert "relicensed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Version references
# ---------------------------------------------------------------------------------------------


def test_version_references_and_their_errors(tmp_path):
    first = freeze(tmp_path, fake_manifest(standard_photos())).version
    second = freeze(tmp_path, fake_manifest(changed_photos())).version
    freeze(tmp_path, fake_manifest(standard_photos()[:5]), name="other")
    assert parse_version_ref("demo") == ("demo", None)
    assert parse_version_ref(f"demo@{first.version}") == ("demo", first.version)
    assert resolve_version(tmp_path, "demo", first.version[:6]) == first
    assert resolve_version(tmp_path, "demo", "latest") == second

    with pytest.raises(RegistryError) as error:
        resolve_version(tmp_path, "dmeo")
    assert "datasets in" in str(error.value) and "demo, other" in str(error.value)
    with pytest.raises(RegistryError) as error:
        resolve_version(tmp_path, "demo", "abcdef0123")
    assert first.version in str(error.value) and second.version in str(error.value)
    with pytest.raises(RegistryError, match="ends with '@'"):
        parse_version_ref("demo@")


# ---------------------------------------------------------------------------------------------
# CLI: list, show, diff
# ---------------------------------------------------------------------------------------------


def test_cli_list_show_and_diff(tmp_path, capsys):
    old = freeze(tmp_path, fake_manifest(standard_photos()), snapshot="2024-11-27").version
    new = freeze(tmp_path, fake_manifest(changed_photos()), snapshot="2024-12-27").version
    warehouse = ["--warehouse", str(tmp_path)]

    assert main(["datasets", "list", *warehouse]) == 0
    text = capsys.readouterr().out
    assert old.version in text and new.version in text and "2024-12-27" in text
    assert main(["datasets", "list", "--json", *warehouse]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["latest"]) for v in listed] == [(old.version, False), (new.version, True)]

    assert main(["datasets", "show", "demo", "--json", *warehouse]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"]["version"] == new.version and shown["latest"]
    assert {c["label_name"]: (c["train"], c["val"], c["test"]) for c in shown["classes"]} == {
        "Apis mellifera": (2, 2, 2), "Pieris rapae": (3, 1, 1), "Pieris japonica": (0, 0, 2),
    }
    assert sum(r["images"] for r in shown["licenses"]) == 13
    assert main(["datasets", "show", f"demo@{old.version[:5]}", *warehouse]) == 0
    text = capsys.readouterr().out
    assert f"demo@{old.version}" in text and "Pieris japonica" in text and "CC-BY-NC" in text

    assert main(["datasets", "diff", f"demo@{old.version}", f"demo@{new.version}", "--json", *warehouse]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert (diff["added"], diff["removed"], diff["relabelled"]) == (3, 2, 1)
    assert main(["datasets", "diff", f"demo@{old.version}", "demo", *warehouse]) == 0
    assert "3 added, 2 removed, 1 relabelled" in capsys.readouterr().out


def test_cli_errors_list_what_exists(tmp_path, capsys):
    version = freeze(tmp_path, fake_manifest(standard_photos())).version
    assert main(["datasets", "show", "nope", "--warehouse", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "Dataset 'nope' has no versions" in error and "demo" in error and "Fix:" in error
    assert main(["datasets", "show", "demo@ffff", "--warehouse", str(tmp_path)]) == 1
    assert version.version in capsys.readouterr().err
    assert main(["datasets", "list", "--warehouse", str(tmp_path / "empty")]) == 0
    assert "No dataset versions yet" in capsys.readouterr().out
