"""The sample bucket: format fidelity read back strictly with DuckDB, layout, images,
determinism, ``--next`` and the scale mode. Small species and photo counts keep it fast."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
from datetime import date
from pathlib import Path

import duckdb
import pytest
from PIL import Image

from bioasset import cli
from bioasset.inat_format import (
    IMAGE_SIZES,
    LATEST_TARBALL,
    LICENSES,
    LIFE_TAXON_ID,
    QUALITY_GRADES,
    ROOT_CSV_TABLES,
    SNAPSHOT_TABLES,
    TABLE_COLUMNS,
    dated_tarball_key,
    photo_key,
    snapshot_dirname,
)
from bioasset.sample_bucket import (
    SampleBucketError,
    generate_sample_bucket,
    root_taxon,
    sample_species,
    sample_taxa,
)
from bioasset.sample_bucket.scale import generate_scale_snapshot

SNAPSHOT = date(2026, 10, 27)
# Six species reach the subspecies and the inactive synonym; 16 photos reach the fifth
# observation of each, where the special shapes end.
SMALL = dict(seed=3, n_species=6, photos_per_species=16, snapshot_date=SNAPSHOT)


@pytest.fixture(scope="module")
def small_bucket(tmp_path_factory) -> tuple[Path, object]:
    dest = tmp_path_factory.mktemp("sample") / "bucket"
    return dest, generate_sample_bucket(dest, workers=1, **SMALL)


@pytest.fixture(scope="module")
def next_bucket(small_bucket, tmp_path_factory):
    """A copy of the small bucket with a later snapshot derived from it (FROM given as a path)."""
    dest = tmp_path_factory.mktemp("next") / "bucket"
    shutil.copytree(small_bucket[0], dest)
    report = generate_sample_bucket(dest, seed=3, photos_per_species=20, next_from=dest / dated_tarball_key(SNAPSHOT), workers=1)
    return dest, report


def tarball_tables(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball, "r:gz") as archive:
        return {Path(m.name).name.removesuffix(".csv"): archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def read_strict(con: duckdb.DuckDBPyConnection, path: Path, table: str, name: str) -> None:
    """Load ``path`` into DuckDB table ``name`` as the ingestion reads the export: no quoting,
    explicit types, bad rows kept in ``{name}_rejects``. Selecting every column forces every cast."""
    columns = "{" + ", ".join(f"'{column}': '{kind}'" for column, kind in TABLE_COLUMNS[table].items()) + "}"
    con.execute(
        f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_csv('{path}', delim='\t', quote='', escape='', header=true, "
        f"columns={columns}, store_rejects=true, rejects_table='{name}_rejects', rejects_scan='{name}_scan')"
    )


def load_tables(path_of: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table, path in path_of.items():
        read_strict(con, path, table, table)
    return con


def extract(tarball: Path, into: Path) -> dict[str, Path]:
    into.mkdir(parents=True, exist_ok=True)
    paths = {}
    for table, data in tarball_tables(tarball).items():
        paths[table] = into / f"{table}.csv"
        paths[table].write_bytes(data)
    return paths


def rows(con, query: str) -> list[tuple]:
    return con.execute(query).fetchall()


def values(con, query: str) -> set:
    return {row[0] for row in rows(con, query)}


@pytest.fixture(scope="module")
def small_db(small_bucket, tmp_path_factory):
    dest, _ = small_bucket
    return load_tables(extract(dest / LATEST_TARBALL, tmp_path_factory.mktemp("extracted")))


# --- layout and format ---------------------------------------------------------------------


def test_tarball_holds_one_directory_with_the_six_tables(small_bucket):
    dest, report = small_bucket
    dated = dest / dated_tarball_key(SNAPSHOT)
    assert report.tarball == dated and report.is_latest
    assert dated.read_bytes() == (dest / LATEST_TARBALL).read_bytes()
    with tarfile.open(dated, "r:gz") as archive:
        members = archive.getmembers()
    folder = snapshot_dirname(SNAPSHOT)
    assert [m.name for m in members if m.isdir()] == [folder]
    assert sorted(m.name for m in members if m.isfile()) == sorted(f"{folder}/{t}.csv" for t in SNAPSHOT_TABLES)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}


def test_tables_read_strictly_with_no_rejects_and_exact_columns(small_bucket, small_db):
    dest, report = small_bucket
    con = small_db
    for table, columns in TABLE_COLUMNS.items():
        assert rows(con, f"SELECT count(*) FROM {table}_rejects") == [(0,)], table
        described = [(name, kind) for name, kind, *_ in rows(con, f"DESCRIBE {table}")]
        assert described == list(columns.items())
        assert rows(con, f"SELECT count(*) FROM {table}") == [(report.row_counts[table],)]
    # The root files read the same way.
    root = load_tables({table: dest / f"{table}.csv.gz" for table in ROOT_CSV_TABLES})
    for table in ROOT_CSV_TABLES:
        assert rows(root, f"SELECT count(*) FROM {table}_rejects") == [(0,)]


def test_root_csvs_are_the_latest_snapshot_tables(small_bucket):
    dest, _ = small_bucket
    inside = tarball_tables(dest / LATEST_TARBALL)
    for table in ROOT_CSV_TABLES:
        assert gzip.decompress((dest / f"{table}.csv.gz").read_bytes()) == inside[table]
    assert sorted(path.name for path in dest.glob("*.csv.gz")) == sorted(f"{t}.csv.gz" for t in ROOT_CSV_TABLES)


def test_values_are_written_as_the_real_export_writes_them(small_bucket, small_db):
    dest, _ = small_bucket
    con = small_db
    assert values(con, "SELECT license FROM photos") == set(LICENSES)
    assert values(con, "SELECT quality_grade FROM observations") == set(QUALITY_GRADES)
    assert values(con, "SELECT extension FROM photos") == {"jpg", "jpeg", "JPG"}
    assert values(con, "SELECT active FROM taxa") == {True, False}
    assert 33.5 in values(con, "SELECT rank_level FROM taxa")
    assert values(con, "SELECT count(*) FROM observations WHERE anomaly_score IS NULL") == {0}
    names = values(con, "SELECT name FROM observers")
    assert {"Siobhan O'Brien", 'Jean "JJ" Doe', None} <= names
    assert any("\"" in (title or "") for title in values(con, "SELECT title FROM projects"))
    raw = gzip.decompress((dest / "observers.csv.gz").read_bytes()).decode()
    assert "\tJean \"JJ\" Doe\n" in raw and "\tbugfan42\t\n" in raw  # no quoting; NULL is empty
    assert "\ttrue\n" in gzip.decompress((dest / "taxa.csv.gz").read_bytes()).decode()


def test_ancestry_runs_from_life_to_the_parent(small_db):
    taxa = {taxon_id: (ancestry, rank) for taxon_id, ancestry, rank in rows(small_db, "SELECT taxon_id, ancestry, rank FROM taxa")}
    assert taxa[LIFE_TAXON_ID][0] is None  # Life: empty field, read as NULL
    for taxon_id, (ancestry, _) in taxa.items():
        if taxon_id == LIFE_TAXON_ID:
            continue
        path = [int(part) for part in ancestry.split("/")]
        assert path[0] == LIFE_TAXON_ID and all(ancestor in taxa for ancestor in path)
        parent_ancestry = taxa[path[-1]][0]
        assert (parent_ancestry + "/" if parent_ancestry else "") + str(path[-1]) == ancestry


def test_references_between_tables_hold(small_db):
    con = small_db
    assert rows(con, "SELECT count(*) FROM photos p ANTI JOIN observations o USING (observation_uuid)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations o ANTI JOIN taxa t USING (taxon_id)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations o ANTI JOIN observers USING (observer_id)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM photos p JOIN observations o USING (observation_uuid) WHERE p.observer_id <> o.observer_id") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations_projects ANTI JOIN projects USING (project_id)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations_projects ANTI JOIN observations USING (observation_uuid)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM (SELECT photo_id FROM photos GROUP BY ALL HAVING count(*) > 1)") == [(0,)]


def test_every_special_row_shape_is_present(small_bucket, small_db):
    _, report = small_bucket
    con = small_db
    assert report.observations_without_coordinates
    uuid_list = ", ".join(f"'{u}'" for u in report.observations_without_coordinates)
    assert values(con, f"SELECT latitude IS NULL AND longitude IS NULL FROM observations WHERE observation_uuid IN ({uuid_list})") == {True}
    assert report.multi_photo_observations and report.genus_level_observations
    assert report.subspecies_observations and report.inactive_taxon_observations
    assert report.subspecies_taxon_ids and report.inactive_taxon_ids
    assert values(con, "SELECT rank FROM taxa WHERE NOT active") >= {"species", "genus"}
    # Genus homonyms across kingdoms.
    assert set(report.homonym_genera) == {"Morus", "Pieris"}
    for ids in report.homonym_genera.values():
        kingdoms = {ancestry.split("/")[1] for (ancestry,) in rows(con, f"SELECT ancestry FROM taxa WHERE taxon_id IN {tuple(ids)}")}
        assert len(kingdoms) == 2
    # Lycorma's ancestry has no family.
    assert 324726 in report.species_missing_main_ranks
    assert rows(con, "SELECT count(*) FROM taxa t JOIN taxa a ON list_contains(string_split(t.ancestry, '/'), a.taxon_id::VARCHAR) "
                     "WHERE t.taxon_id = 324726 AND a.rank = 'family'") == [(0,)]


def test_images_exist_with_the_right_longest_side(small_bucket, small_db):
    dest, report = small_bucket
    photos = rows(small_db, "SELECT photo_id, extension, width, height FROM photos")
    missing = set(report.missing_image_photo_ids)
    assert missing and missing < {photo_id for photo_id, *_ in photos}
    assert report.images_written == len(photos) - len(missing)
    for photo_id, extension, width, height in photos:
        for size in report.sizes:
            path = dest / photo_key(photo_id, size, extension)
            if photo_id in missing:
                assert not path.exists()
                continue
            with Image.open(path) as image:
                image.load()
                assert image.format == "JPEG"
                assert max(image.size) == min(IMAGE_SIZES[size], max(width, height))
                assert abs(image.width / image.height - width / height) < 0.02
    for photo_id in missing:
        assert not (dest / "photos" / str(photo_id)).exists()


def test_original_and_large_sizes_on_request(tmp_path):
    report = generate_sample_bucket(tmp_path, seed=1, n_species=1, photos_per_species=2, sizes=("original", "large", "small"), workers=1)
    photo_id = next(i for i in range(100_000_001, 100_000_003) if i not in report.missing_image_photo_ids)
    sides = {path.stem: max(Image.open(path).size) for path in (tmp_path / "photos" / str(photo_id)).iterdir()}
    assert sides["large"] == 1024 and sides["small"] == 240 and sides["original"] in (1600, 2048)


# --- the default bucket, determinism, CLI --------------------------------------------------------


def test_default_bucket_has_enough_species_photos_and_every_shape(tmp_path):
    report = generate_sample_bucket(tmp_path, sizes=())  # metadata only: the same rows, fast
    assert len(report.species_ids) >= 12 and report.row_counts["photos"] >= 600
    for special in ("missing_image_photo_ids", "observations_without_coordinates", "multi_photo_observations",
                    "genus_level_observations", "subspecies_observations", "inactive_taxon_observations",
                    "inactive_taxon_ids", "subspecies_taxon_ids", "species_missing_main_ranks"):
        assert getattr(report, special), special
    assert set(report.homonym_genera) == {"Morus", "Pieris"}
    assert set(report.licenses) == set(LICENSES) and set(report.quality_grades) == set(QUALITY_GRADES)
    assert report.images_written == 0 and not (tmp_path / "photos").exists()


def test_species_helpers_give_real_ids_and_the_root():
    species = sample_species()
    taxa = sample_taxa()
    slugs = [taxon.slug for taxon in species]
    assert "47355-popillia-japonica" in slugs and "48662-danaus-plexippus" in slugs
    insects = [taxon for taxon in species if "47158" in taxon.ancestry.split("/")]
    assert len(insects) >= 12
    assert 47158 in (*root_taxon(insects, taxa).ancestor_ids, root_taxon(insects, taxa).taxon_id)
    assert root_taxon(species, taxa).taxon_id == LIFE_TAXON_ID
    more = sample_species(20)
    assert more[:15] == species and len({taxon.taxon_id for taxon in more}) == 20


def tree_digest(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*")) if path.is_file()}


def test_cli_writes_the_same_bytes_as_the_api(tmp_path, capsys):
    generate_sample_bucket(tmp_path / "api", seed=4, n_species=3, photos_per_species=4, snapshot_date=date(2026, 5, 1), workers=1)
    args = ["--seed", "4", "--species", "3", "--photos-per-species", "4", "--snapshot-date", "2026-05-01", "--workers", "1"]
    assert cli.main(["sample-bucket", str(tmp_path / "cli"), *args]) == 0
    assert "snapshot 2026-05-01: 3 species" in capsys.readouterr().out
    digests = tree_digest(tmp_path / "cli")
    assert any(name.endswith(".tar.gz") for name in digests) and any(name.startswith("photos/") for name in digests)
    assert digests == tree_digest(tmp_path / "api")  # tarballs, root CSVs and every image


def test_another_seed_gives_another_bucket(tmp_path):
    generate_sample_bucket(tmp_path / "a", seed=1, n_species=2, photos_per_species=3, workers=1)
    generate_sample_bucket(tmp_path / "b", seed=2, n_species=2, photos_per_species=3, workers=1)
    key = dated_tarball_key(SNAPSHOT)
    assert (tmp_path / "a" / key).read_bytes() != (tmp_path / "b" / key).read_bytes()


def test_cli_reports_bad_input_and_how_to_fix_it(tmp_path, capsys):
    assert cli.main(["sample-bucket", str(tmp_path), "--next", "2026-01-01"]) == 2
    error = capsys.readouterr().err
    assert "inaturalist-open-data-20260101.tar.gz" in error and "generate that snapshot first" in error
    with pytest.raises(SystemExit):
        cli.main(["sample-bucket", str(tmp_path), "--sizes", "huge"])
    with pytest.raises(SampleBucketError, match="at least one species"):
        generate_sample_bucket(tmp_path, n_species=0)


# --- --next --------------------------------------------------------------------------------


def test_next_snapshot_adds_a_dated_tarball_and_moves_latest(next_bucket, small_bucket):
    dest, report = next_bucket
    new_date = date(2026, 11, 27)  # FROM + 1 month
    assert report.snapshot_date == new_date and report.previous_snapshot_date == SNAPSHOT and report.is_latest
    assert (dest / dated_tarball_key(SNAPSHOT)).read_bytes() == (small_bucket[0] / dated_tarball_key(SNAPSHOT)).read_bytes()
    assert (dest / dated_tarball_key(new_date)).read_bytes() == (dest / LATEST_TARBALL).read_bytes()
    inside = tarball_tables(dest / LATEST_TARBALL)
    for table in ROOT_CSV_TABLES:
        assert gzip.decompress((dest / f"{table}.csv.gz").read_bytes()) == inside[table]


def test_next_snapshot_has_the_promised_differences(next_bucket, tmp_path):
    dest, report = next_bucket
    old = load_tables(extract(dest / dated_tarball_key(SNAPSHOT), tmp_path / "old"))
    new = load_tables(extract(dest / LATEST_TARBALL, tmp_path / "new"))
    for con in (old, new):
        for table in TABLE_COLUMNS:
            assert rows(con, f"SELECT count(*) FROM {table}_rejects") == [(0,)]
    old_obs = dict(rows(old, "SELECT observation_uuid::VARCHAR, taxon_id FROM observations"))
    new_obs = dict(rows(new, "SELECT observation_uuid::VARCHAR, taxon_id FROM observations"))
    assert report.new_observations and set(report.new_observations) == set(new_obs) - set(old_obs)
    assert report.removed_observations and set(report.removed_observations) == set(old_obs) - set(new_obs)
    assert report.reidentified_observations
    for observation, (before, after) in report.reidentified_observations.items():
        assert before != after and old_obs[observation] == before and new_obs[observation] == after
    changed = {uuid for uuid in set(old_obs) & set(new_obs) if old_obs[uuid] != new_obs[uuid]}
    assert changed == set(report.reidentified_observations)
    old_licenses = dict(rows(old, "SELECT photo_id, license FROM photos"))
    new_licenses = dict(rows(new, "SELECT photo_id, license FROM photos"))
    assert report.license_changes
    assert {pid: (old_licenses[pid], new_licenses[pid]) for pid in set(old_licenses) & set(new_licenses)
            if old_licenses[pid] != new_licenses[pid]} == report.license_changes
    assert set(report.removed_photo_ids) == set(old_licenses) - set(new_licenses)
    assert set(report.new_photo_ids) == set(new_licenses) - set(old_licenses)
    assert rows(new, "SELECT count(*) FROM photos p ANTI JOIN observations o USING (observation_uuid)") == [(0,)]
    for photo_id, extension in rows(new, f"SELECT photo_id, extension FROM photos WHERE photo_id IN {tuple(report.new_photo_ids)}"):
        assert (dest / photo_key(photo_id, "small", extension)).exists() != (photo_id in report.missing_image_photo_ids)
    assert report.row_counts["observations"] == len(old_obs) - len(report.removed_observations) + len(report.new_observations)


def test_next_rejects_a_date_before_its_source(small_bucket):
    dest, _ = small_bucket
    with pytest.raises(SampleBucketError, match="must come after"):
        generate_sample_bucket(dest, next_from="2026-10-27", snapshot_date=date(2026, 10, 1))


# --- scale mode ----------------------------------------------------------------------------


def test_scale_snapshot_is_consistent_and_exact(tmp_path):
    report = generate_scale_snapshot(tmp_path / "scale", millions=0.02, seed=5)
    dest = tmp_path / "scale"
    con = load_tables(extract(dest / LATEST_TARBALL, tmp_path / "extracted"))
    for table in TABLE_COLUMNS:
        assert rows(con, f"SELECT count(*) FROM {table}_rejects") == [(0,)], table
        assert rows(con, f"SELECT count(*) FROM {table}") == [(report.row_counts[table],)]
    assert report.row_counts["photos"] == 20_000
    assert rows(con, "SELECT count(*) FROM photos p ANTI JOIN observations o USING (observation_uuid)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations o ANTI JOIN photos p USING (observation_uuid)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations o ANTI JOIN taxa t USING (taxon_id)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations o ANTI JOIN observers USING (observer_id)") == [(0,)]
    assert rows(con, "SELECT count(*) FROM observations_projects ANTI JOIN observations USING (observation_uuid)") == [(0,)]
    assert rows(con, "SELECT count(DISTINCT photo_id), min(position) FROM photos") == [(20_000, 0)]
    # About 1% of photos sit in the benchmark subtree, by the DESIGN subtree rule.
    (ancestry,) = values(con, f"SELECT ancestry FROM taxa WHERE taxon_id = {report.one_percent_taxon_id}")
    subtree = f"taxon_id = {report.one_percent_taxon_id} OR ancestry = '{ancestry}/{report.one_percent_taxon_id}' OR ancestry LIKE '{ancestry}/{report.one_percent_taxon_id}/%'"
    in_subtree = rows(con, f"SELECT count(*) FROM photos JOIN observations USING (observation_uuid) WHERE taxon_id IN (SELECT taxon_id FROM taxa WHERE {subtree})")
    assert in_subtree == [(report.one_percent_photos,)] and 100 < report.one_percent_photos < 300
    assert values(con, "SELECT license FROM photos") == set(LICENSES)
    assert 3000 < report.species and 33.5 in values(con, "SELECT rank_level FROM taxa")
    for table in ROOT_CSV_TABLES:
        assert gzip.decompress((dest / f"{table}.csv.gz").read_bytes()) == tarball_tables(dest / LATEST_TARBALL)[table]
    again = generate_scale_snapshot(tmp_path / "again", millions=0.02, seed=5)
    assert again.tarball.read_bytes() == report.tarball.read_bytes()
