"""Dataset selection on a generated sample bucket, ingested with the real domain functions: every
spec rule checked against expectations computed here, independently, from the media and taxonomy
tables with pandas; then a later snapshot: stable splits and the update report."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bioasset.dataset_spec import DatasetSpecError, parse_spec
from bioasset.inat_format import CORE_TABLES, INSECTA_TAXON_ID, MAIN_RANKS
from bioasset.ingest import fetch_snapshot_files, ingest_snapshot_table
from bioasset.manifest_schema import MANIFEST_COLUMNS, SPLITS
from bioasset.media import build_media
from bioasset.sample_bucket import generate_sample_bucket
from bioasset.selection import (
    EXCLUSION_REASONS,
    SelectionError,
    build_manifest,
    class_photo_set_hashes,
    image_requests,
    photo_set_hashes,
    read_manifest_info,
    taxon_id_of_key,
    taxon_key,
)
from bioasset.storage import filesystem_for
from bioasset.taxonomy import build_taxonomy
from bioasset.warehouse import DuckDBSettings, Warehouse

SNAPSHOT = date(2026, 10, 27)
SEED = 4
BUCKET_URL = "s3://example-open-data"
ALL_GRADES = ["research", "needs_id", "casual"]


def ingest_snapshot(bucket: Path, warehouse: Warehouse, day: date) -> str:
    """Ingest one snapshot of a local bucket with the ingest domain functions; returns its key."""
    fs, root = filesystem_for(str(bucket))
    key = day.isoformat()
    fetch_snapshot_files(fs, root, day, warehouse.raw_dir(key))
    for table in CORE_TABLES:
        ingest_snapshot_table(warehouse, key, table)
    build_taxonomy(warehouse, warehouse.table_path(key, "taxa"), warehouse.table_path(key, "taxonomy"))
    build_media(
        warehouse, *(warehouse.table_path(key, t) for t in ("photos", "observations", "taxonomy", "observers")),
        warehouse.table_path(key, "media"),
    )  # fmt: skip
    return key


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A metadata-only sample bucket with two snapshots, both ingested."""
    root = tmp_path_factory.mktemp("selection")
    bucket = root / "bucket"
    first = generate_sample_bucket(bucket, seed=SEED, n_species=6, photos_per_species=30, sizes=(), snapshot_date=SNAPSHOT, workers=1)
    second = generate_sample_bucket(bucket, seed=SEED, photos_per_species=30, sizes=(), next_from=SNAPSHOT, workers=1)
    warehouse = Warehouse(root / "warehouse", DuckDBSettings(memory_limit="256MB", threads=1))
    keys = [ingest_snapshot(bucket, warehouse, report.snapshot_date) for report in (first, second)]
    return warehouse, keys, first, second


def spec(name: str, **fields):
    return parse_spec({"name": name, "root_taxon": INSECTA_TAXON_ID, "label_rank": "species", "seed": 1, **fields}, f"test spec {name}")


def photos_of(warehouse: Warehouse, key: str) -> pd.DataFrame:
    """The Insecta photos of a snapshot with their taxon's active flag and rank columns."""
    media = pd.read_parquet(warehouse.table_path(key, "media"))
    taxonomy = pd.read_parquet(warehouse.table_path(key, "taxonomy"))
    insecta = taxonomy.loc[taxonomy["taxon_id"] == INSECTA_TAXON_ID, "path"].item()
    rank_columns = [c for rank in MAIN_RANKS for c in (rank, f"{rank}_id")]
    photos = media.merge(taxonomy[["taxon_id", "active", *rank_columns]], on="taxon_id")
    photos = photos[(photos["taxon_path"] == insecta) | photos["taxon_path"].str.startswith(insecta + "/")]
    label_active = photos["species_id"].map(taxonomy.set_index("taxon_id")["active"])
    photos = photos.assign(label_active=label_active)
    return photos.reset_index(drop=True)


def usable(photos: pd.DataFrame, grades=ALL_GRADES, licenses=None) -> pd.DataFrame:
    """Photos that pass the per-photo rules (grades, licenses, active, labelled at species)."""
    keep = photos["quality_grade"].isin(grades) & photos["active"] & (photos["label_active"] != False)  # noqa: E712
    keep &= photos["species_id"].notna()
    if licenses is not None:
        keep &= photos["license"].isin(licenses)
    return photos[keep]


def manifest(build) -> pd.DataFrame:
    return pd.read_parquet(build.path)


def expected_attribution(row) -> str:
    name = row.observer_name if isinstance(row.observer_name, str) else row.observer_login
    if row.license == "CC0":
        return f"{name}, no rights reserved (CC0)"
    if row.license == "PD":
        return f"{name}, no known copyright restrictions (PD)"
    return f"© {name}, some rights reserved ({row.license})"


def test_manifest_rows_labels_paths_attribution_and_urls(world):
    warehouse, (key, _), _, _ = world
    build = build_manifest(warehouse, spec("everything", quality_grades=ALL_GRADES), open_data_url=BUCKET_URL + "/", snapshot=key)
    rows = manifest(build)
    photos = photos_of(warehouse, key)
    expected = usable(photos)

    assert list(pq.read_schema(build.path).names) == list(MANIFEST_COLUMNS)
    assert sorted(rows["photo_id"]) == sorted(expected["photo_id"]) and build.rows == len(rows)
    assert not [p for p in build.path.parent.iterdir() if p.name != "manifest.parquet"], "a temporary file was left"

    truth = expected.set_index("photo_id").loc[rows["photo_id"]]
    assert (rows["label_id"].to_numpy() == truth["species_id"].to_numpy()).all()
    assert (rows["label_name"].to_numpy() == truth["species"].to_numpy()).all()
    for rank in MAIN_RANKS:
        assert (rows[f"{rank}_id"].to_numpy() == truth[f"{rank}_id"].to_numpy()).all(), rank
    assert set(rows["label_name"]) == {"Popillia japonica", "Coccinella septempunctata", "Harmonia axyridis",
                                       "Apis mellifera", "Bombus impatiens", "Danaus plexippus"}  # fmt: skip

    assert list(rows["attribution"]) == [expected_attribution(r) for r in rows.itertuples()]
    by_license = {license: group["attribution"].iloc[0] for license, group in rows.groupby("license")}
    assert by_license["CC0"].endswith(", no rights reserved (CC0)") and not by_license["CC0"].startswith("©")
    assert by_license["PD"].endswith(", no known copyright restrictions (PD)")
    assert by_license["CC-BY"].startswith("© ") and by_license["CC-BY"].endswith(", some rights reserved (CC-BY)")
    nameless = rows[rows["observer_name"].isna()]
    assert len(nameless) and all(login in text for login, text in zip(nameless["observer_login"], nameless["attribution"]))

    urls = [f"{BUCKET_URL}/photos/{r.photo_id}/medium.{r.extension}" for r in rows.itertuples()]
    assert list(rows["source_url"]) == urls and set(rows["split"]) == set(SPLITS)

    assert build.excluded["above_label_rank"] == int((photos["active"] & photos["species_id"].isna()).sum()) > 0
    inactive = ~photos["active"] | (photos["label_active"] == False)  # noqa: E712
    assert build.excluded["inactive_taxon"] == int(inactive.sum()) > 0
    assert build.scanned == len(photos) == build.rows + sum(build.excluded.values())
    assert list(build.excluded) == list(EXCLUSION_REASONS)
    info = read_manifest_info(build.path)
    assert (info.dataset, info.snapshot, info.image_size, info.stored_size) == ("everything", key, "medium", "medium")


def test_a_license_outside_the_spec_never_enters(world):
    warehouse, keys, _, second = world
    licenses = ["CC0", "CC-BY", "CC-BY-SA"]
    for key in keys:
        build = build_manifest(warehouse, spec("open", licenses=licenses, min_per_class=3), open_data_url=BUCKET_URL, snapshot=key)
        rows = manifest(build)
        assert set(rows["license"]) <= set(licenses)
        photos = photos_of(warehouse, key)
        research = photos[photos["quality_grade"] == "research"]
        assert build.excluded["license"] == int((~research["license"].isin(licenses)).sum()) > 0
    # The later snapshot relicensed some photos: those now outside the spec left the manifest.
    relicensed_out = {p for p, (_, new) in second.license_changes.items() if new not in licenses}
    assert relicensed_out and not relicensed_out & set(rows["photo_id"])


def test_min_per_class_drops_small_classes_and_reports_them(world):
    warehouse, (key, _), _, _ = world
    sizes = usable(photos_of(warehouse, key), grades=["research"], licenses=["CC-BY-NC"]).groupby("species_id").size()
    threshold = int(sizes.median()) + 1
    build = build_manifest(
        warehouse, spec("small-classes", licenses=["CC-BY-NC"], min_per_class=threshold), open_data_url=BUCKET_URL, snapshot=key
    )
    expected_dropped = {int(i): int(n) for i, n in sizes.items() if n < threshold}
    assert 0 < len(expected_dropped) < len(sizes)
    assert {d.label_id: d.photos for d in build.dropped_classes if d.reason == "min_per_class"} == expected_dropped
    assert build.excluded["min_per_class"] == sum(expected_dropped.values())
    assert not set(manifest(build)["label_id"]) & set(expected_dropped)
    assert build.classes == len(sizes) - len(expected_dropped)


def _turn_spread_ok(selected: pd.Series, available: pd.Series) -> bool:
    """Round-robin: one group never has two more than another unless the other is exhausted."""
    selected = selected.reindex(available.index, fill_value=0)
    return all(selected[a] <= selected[b] + 1 or selected[b] == available[b] for a in available.index for b in available.index)


def test_max_per_class_cap_is_deterministic_and_spreads_over_observers_and_observations(world):
    warehouse, (key, _), _, _ = world
    uncapped = manifest(build_manifest(warehouse, spec("uncapped", quality_grades=ALL_GRADES), open_data_url=BUCKET_URL, snapshot=key))
    # Close to the class sizes, so that prolific observers are cut part-way through their observations.
    cap = int(uncapped.groupby("label_id").size().min()) - 4
    capped_spec = spec("capped", quality_grades=ALL_GRADES, max_per_class=cap)
    build = build_manifest(warehouse, capped_spec, open_data_url=BUCKET_URL, snapshot=key)
    capped = manifest(build)
    available = uncapped.groupby("label_id").size()
    assert (available > cap).all(), "every class must be over the cap for this test to mean something"
    assert (capped.groupby("label_id").size() == cap).all()
    assert build.excluded["max_per_class"] == len(uncapped) - len(capped)
    for label, pool in uncapped.groupby("label_id"):
        chosen = capped[capped["label_id"] == label]
        assert _turn_spread_ok(chosen.groupby("observer_id").size(), pool.groupby("observer_id").size()), label
        for observer, own in pool.groupby("observer_id"):
            mine = chosen[chosen["observer_id"] == observer]
            assert _turn_spread_ok(mine.groupby("observation_uuid").size(), own.groupby("observation_uuid").size()), observer
    # Several observers per class: a plain "first N" by id would not spread like this.
    assert min(capped.groupby("label_id")["observer_id"].nunique()) >= 3

    again = manifest(build_manifest(warehouse, capped_spec.model_copy(update={"name": "capped-again"}), open_data_url=BUCKET_URL, snapshot=key))
    assert list(again["photo_id"]) == list(capped["photo_id"])
    other_seed = capped_spec.model_copy(update={"name": "capped-seed", "seed": 99})
    assert set(manifest(build_manifest(warehouse, other_seed, open_data_url=BUCKET_URL, snapshot=key))["photo_id"]) != set(capped["photo_id"])


def test_max_per_class_keeps_the_photos_it_chose_before(world):
    """A capped class keeps the photos of the previous manifest that are still eligible; new photos
    only fill the room left (a fresh selection would push some of them out)."""
    warehouse, (key1, key2), _, _ = world
    eligible_later = manifest(build_manifest(warehouse, spec("uncapped-later", quality_grades=ALL_GRADES),
                                             open_data_url=BUCKET_URL, snapshot=key2)).set_index("photo_id")["label_id"]
    cap = int(eligible_later.value_counts().min()) - 4
    capped_spec = spec("capped-later", quality_grades=ALL_GRADES, max_per_class=cap)
    first = manifest(build_manifest(warehouse, capped_spec, open_data_url=BUCKET_URL, snapshot=key1))
    later = manifest(build_manifest(warehouse, capped_spec, open_data_url=BUCKET_URL, snapshot=key2))
    fresh = manifest(build_manifest(warehouse, capped_spec.model_copy(update={"name": "capped-fresh"}),
                                    open_data_url=BUCKET_URL, snapshot=key2))

    still_eligible = first[first["label_id"].to_numpy() == eligible_later.reindex(first["photo_id"]).to_numpy()]
    assert len(still_eligible) > 0 and set(still_eligible["photo_id"]) <= set(later["photo_id"])
    assert (later.groupby("label_id").size() <= cap).all()
    assert set(still_eligible["photo_id"]) - set(fresh["photo_id"]), "the test needs a snapshot whose new photos would displace chosen ones"
    kept = later.set_index("photo_id").loc[still_eligible["photo_id"], "split"]
    assert (kept == still_eligible.set_index("photo_id")["split"]).all()


def test_max_photos_per_observation_keeps_the_first_positions(world):
    warehouse, (key, _), _, _ = world
    uncapped = manifest(build_manifest(warehouse, spec("per-obs-all"), open_data_url=BUCKET_URL, snapshot=key))
    build = build_manifest(warehouse, spec("per-obs-one", max_photos_per_observation=1), open_data_url=BUCKET_URL, snapshot=key)
    rows = manifest(build)
    assert rows["observation_uuid"].is_unique
    media = pd.read_parquet(warehouse.table_path(key, "media"), columns=["photo_id", "position"]).set_index("photo_id")["position"]
    first = uncapped.assign(position=uncapped["photo_id"].map(media)).sort_values(["position", "photo_id"]).drop_duplicates("observation_uuid")
    assert set(rows["photo_id"]) == set(first["photo_id"])
    assert build.excluded["max_photos_per_observation"] == len(uncapped) - len(rows) > 0


def test_include_and_exclude_taxa_are_subtrees(world):
    warehouse, (key, _), _, _ = world
    beetles = spec("beetles", root_taxon="Insecta", include_taxa=["Coleoptera"], exclude_taxa=["Popillia japonica"])
    build = build_manifest(warehouse, beetles, open_data_url=BUCKET_URL, snapshot=key)
    assert set(manifest(build)["label_name"]) == {"Coccinella septempunctata", "Harmonia axyridis"}
    photos = photos_of(warehouse, key)
    assert build.excluded["not_in_include_taxa"] == int((photos["order"] != "Coleoptera").sum())
    assert build.excluded["in_exclude_taxa"] == int((photos["species"] == "Popillia japonica").sum()) > 0


def test_grouping_by_observer_keeps_each_observer_in_one_split(world):
    warehouse, (key, _), _, _ = world
    build = build_manifest(warehouse, spec("by-observer", split={"group_by": "observer"}), open_data_url=BUCKET_URL, snapshot=key)
    rows = manifest(build)
    assert (rows.groupby("observer_id")["split"].nunique() == 1).all() and set(rows["split"]) == set(SPLITS)


def test_a_later_snapshot_keeps_splits_and_reports_added_removed_relabelled(world, tmp_path):
    warehouse, (key1, key2), _, second = world
    dataset = spec("stable", quality_grades=ALL_GRADES)
    first = build_manifest(warehouse, dataset, open_data_url=BUCKET_URL, snapshot=key1)
    assert first.update is None and first.previous is None
    # The sample's re-identifications never move a photo between species, so the previous
    # manifest is given three photos labelled as another class, as an older taxonomy might have.
    old_rows = manifest(first)
    moved = old_rows[old_rows["label_id"] != old_rows["label_id"].iloc[0]].index[:3]
    old_rows.loc[moved, ["label_id", "label_name"]] = [old_rows["label_id"].iloc[0], old_rows["label_name"].iloc[0]]
    old_path = tmp_path / "old.parquet"
    old_rows.to_parquet(old_path)
    shutil.copyfile(old_path, first.path)
    later = build_manifest(warehouse, dataset, open_data_url=BUCKET_URL, snapshot=key2)
    old, new = pd.read_parquet(old_path).set_index("photo_id"), manifest(later).set_index("photo_id")

    both = old.index.intersection(new.index)
    assert len(both) > 0 and (old.loc[both, "split"] == new.loc[both, "split"]).all() and later.moved_photos == 0
    assert later.previous == str(first.path)

    added, removed = new.index.difference(old.index), old.index.difference(new.index)
    relabelled = both[old.loc[both, "label_id"].to_numpy() != new.loc[both, "label_id"].to_numpy()]
    update = later.update
    assert (update.added, update.removed, update.relabelled) == (len(added), len(removed), len(relabelled))
    assert update.added > 0 and update.removed > 0 and update.relabelled >= 3
    assert set(second.removed_photo_ids) & set(old.index) <= set(removed)
    per_class = {c.label_id: (c.added, c.removed, c.relabelled_in, c.relabelled_out) for c in update.classes}
    expected = Counter()
    for photo in added:
        expected[(new.loc[photo, "label_id"], 0)] += 1
    for photo in removed:
        expected[(old.loc[photo, "label_id"], 1)] += 1
    for photo in relabelled:
        expected[(new.loc[photo, "label_id"], 2)] += 1
        expected[(old.loc[photo, "label_id"], 3)] += 1
    for label, counts in per_class.items():
        assert counts == tuple(expected[(label, i)] for i in range(4)), label


def test_unknown_taxa_and_empty_selections_fail_clearly(world):
    warehouse, (key, _), _, _ = world
    with pytest.raises(DatasetSpecError, match=r"test spec nowhere: root_taxon: no taxon is named 'Notataxon'"):
        build_manifest(warehouse, spec("nowhere", root_taxon="Notataxon"), open_data_url=BUCKET_URL, snapshot=key)
    with pytest.raises(SelectionError, match=r"No photo of .* passes test spec empty .*min_per_class: \d+.*Fix: widen the spec"):
        build_manifest(warehouse, spec("empty", min_per_class=10_000), open_data_url=BUCKET_URL, snapshot=key)
    assert not (warehouse.root / "datasets" / "empty").exists()
    with pytest.raises(SelectionError, match="ingest a snapshot first"):
        build_manifest(Warehouse(warehouse.root.parent / "empty"), spec("x"), open_data_url=BUCKET_URL)


def test_taxon_keys():
    assert taxon_key(47208, "Popillia japonica") == "47208-popillia-japonica"
    assert taxon_key(5, "Çà et là × ÿ") == "5-ca-et-la-y"
    long_key = taxon_key(123456789, "Verylongname " * 10)
    assert len(long_key) <= 64 and taxon_id_of_key(long_key) == 123456789 and not long_key.endswith("-")
    for bad in ("popillia-japonica", "47208", "047208-x", "47208-Popillia"):
        with pytest.raises(SelectionError, match="is not '{taxon_id}-{slug}'"):
            taxon_id_of_key(bad)


def test_photo_set_hashes_change_only_for_changed_classes(world):
    warehouse, (key, _), _, _ = world
    build_manifest(warehouse, spec("hashing"), open_data_url=BUCKET_URL, snapshot=key)
    requests = image_requests(warehouse)
    before = photo_set_hashes(requests)
    assert class_photo_set_hashes(warehouse) == before  # what the sensor compares with what taxon_images records
    assert set(before) >= {taxon_key(i, n) for i, n in zip(requests["label_id"], requests["label_name"])}
    one_class = requests["label_id"].iloc[0]
    changed = requests[~((requests["label_id"] == one_class) & (requests["photo_id"] == requests["photo_id"].iloc[0]))]
    after = photo_set_hashes(changed)
    assert {k for k in before if before[k] != after.get(k)} == {taxon_key(one_class, requests["label_name"].iloc[0])}
    resized = photo_set_hashes(requests.assign(stored_size="medium-short64-q90"))
    assert all(resized[k] != before[k] for k in before)
    assert photo_set_hashes(requests.sample(frac=1, random_state=0)) == before
