"""Taxonomy (ranks, paths, subtrees, homonyms) and media (one row per photo, sorted by path)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import inat_fixtures as fx
from bioasset.ingest import ingest_table
from bioasset.media import MEDIA_COLUMNS, build_media, subtree_media_query
from bioasset.taxonomy import (
    TAXONOMY_COLUMNS,
    AmbiguousTaxonError,
    TaxonomyError,
    UnknownTaxonError,
    build_taxonomy,
    find_taxa,
    resolve_taxon,
    subtree_predicate,
    subtree_taxonomy_query,
)
from bioasset.warehouse import Warehouse, WarehouseError

TABLES = ("taxa", "observations", "photos", "observers")


def build_snapshot(root: Path, rows: dict[str, list] | None = None, **media_options):
    """Typed tables, taxonomy and media of a hand-made snapshot, through the real domain functions."""
    warehouse = Warehouse(root)
    key = fx.SNAPSHOT_KEY
    for table in TABLES:
        source = root / f"{table}.csv"
        source.write_bytes(fx.tsv(table, (rows or {}).get(table, fx.ROWS[table])))
        ingest_table(table, source, warehouse.table_path(key, table), warehouse.rejects_path(key, table), warehouse)
    taxonomy = build_taxonomy(warehouse, warehouse.table_path(key, "taxa"), warehouse.table_path(key, "taxonomy"))
    media = build_media(warehouse, *(warehouse.table_path(key, t) for t in ("photos", "observations", "taxonomy", "observers")),
                        warehouse.table_path(key, "media"), **media_options)  # fmt: skip
    warehouse.refresh_views()
    return warehouse, taxonomy, media


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    warehouse, taxonomy, media = build_snapshot(tmp_path_factory.mktemp("warehouse"))
    con = warehouse.connect_views()
    yield con, taxonomy, media
    con.close()


def taxon(con, taxon_id: int) -> dict:
    cursor = con.execute("SELECT * FROM taxonomy WHERE taxon_id = ?", [taxon_id])
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchall()[0]))


def subtree_photos(con, taxon_ids) -> dict[int, int]:
    query = subtree_media_query(con, taxon_ids, columns="taxon_id, count(*) AS n") + " GROUP BY taxon_id"
    return dict(con.execute(query).fetchall())


def expected_photos(*taxon_ids: int) -> dict[int, int]:
    return {t: fx.PHOTOS_PER_TAXON[t] for t in taxon_ids}


# ---------------------------------------------------------------------------------------------
# taxonomy
# ---------------------------------------------------------------------------------------------


def test_taxonomy_has_every_main_rank_and_a_path(snapshot):
    con, build, _ = snapshot
    assert build.rows == len(fx.TAXA) and build.inactive == 1 and build.unresolved_taxa == 0
    assert [c[0] for c in con.execute("DESCRIBE taxonomy").fetchall()] == TAXONOMY_COLUMNS

    rapae_rapae = taxon(con, fx.PIERIS_RAPAE_RAPAE)
    assert {r: rapae_rapae[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")} == {
        "kingdom": "Animalia", "phylum": "Arthropoda", "class": "Insecta", "order": "Lepidoptera",
        "family": "Pieridae", "genus": "Pieris", "species": "Pieris rapae", "subspecies": "Pieris rapae rapae",
    }  # fmt: skip
    assert (rapae_rapae["genus_id"], rapae_rapae["species_id"], rapae_rapae["family_id"]) == (
        fx.PIERIS_BUTTERFLY, fx.PIERIS_RAPAE, fx.PIERIDAE)  # fmt: skip
    assert rapae_rapae["path"] == f"{fx._PI}/{fx.PIERIS_BUTTERFLY}/{fx.PIERIS_RAPAE}/{fx.PIERIS_RAPAE_RAPAE}"
    assert rapae_rapae["parent_id"] == fx.PIERIS_RAPAE and rapae_rapae["depth"] == 11

    life = taxon(con, fx.LIFE)
    assert life["path"] == "48460" and life["kingdom"] is None and life["parent_id"] is None


def test_missing_ranks_are_null_and_off_ranks_are_ignored(snapshot):
    con, _, _ = snapshot
    lepisma = taxon(con, fx.LEPISMA_SACCHARINUM)  # genus directly under an order
    assert (lepisma["order"], lepisma["family"], lepisma["family_id"], lepisma["genus"]) == ("Zygentoma", None, None, "Lepisma")
    cossina = taxon(con, fx.COSSINA)  # rank_level 33.5, a rank that is none of the main ones
    assert cossina["rank_level"] == 33.5 and cossina["order"] == "Lepidoptera" and cossina["family"] is None
    assert taxon(con, fx.PIERIDAE)["family"] == "Pieridae"  # the zoosection above it changes nothing
    genus = taxon(con, fx.MORUS_PLANT)
    assert genus["species"] is None and genus["genus"] == "Morus"


def test_inactive_taxa_are_flagged(snapshot):
    con, _, _ = snapshot
    assert taxon(con, fx.OLD_GANNET)["active"] is False
    assert taxon(con, fx.MORUS_BASSANUS)["active"] is True


def test_unresolved_ancestry_is_counted(tmp_path):
    rows = dict(fx.ROWS, taxa=fx.TAXA + [(5555, f"{fx.LIFE}/{fx.ANIMALIA}/424242", 10, "species", "Lost species", "true")])
    _, build, _ = build_snapshot(tmp_path, rows)
    assert build.unresolved_taxa == 1
    assert build.unresolved_examples == [(5555, f"{fx.LIFE}/{fx.ANIMALIA}/424242")]


# ---------------------------------------------------------------------------------------------
# subtrees and homonyms
# ---------------------------------------------------------------------------------------------


def test_homonym_genera_have_separate_subtrees(snapshot):
    con, _, _ = snapshot
    assert subtree_photos(con, fx.MORUS_PLANT) == expected_photos(fx.MORUS_PLANT, fx.MORUS_ALBA)
    assert subtree_photos(con, fx.MORUS_BIRD) == expected_photos(fx.MORUS_BIRD, fx.MORUS_BASSANUS)
    assert subtree_photos(con, fx.PIERIS_BUTTERFLY) == expected_photos(fx.PIERIS_RAPAE, fx.PIERIS_RAPAE_RAPAE)
    assert subtree_photos(con, fx.PIERIS_PLANT) == expected_photos(fx.PIERIS_JAPONICA)
    assert subtree_photos(con, [fx.MORUS_PLANT, fx.PIERIS_PLANT]) == expected_photos(fx.MORUS_PLANT, fx.MORUS_ALBA, fx.PIERIS_JAPONICA)


def test_subtree_across_a_missing_rank_and_a_prefix_trap(snapshot):
    con, _, _ = snapshot
    assert subtree_photos(con, fx.ZYGENTOMA) == expected_photos(fx.LEPISMA_SACCHARINUM)
    # Chordata is "…/1/2"; Cnidaria "…/1/23" must not fall into its subtree.
    assert subtree_photos(con, fx.CHORDATA) == expected_photos(fx.MORUS_BIRD, fx.MORUS_BASSANUS)
    assert subtree_photos(con, fx.PLANTAE) == expected_photos(fx.MORUS_PLANT, fx.MORUS_ALBA, fx.PIERIS_JAPONICA)


def test_range_predicate_equals_the_ancestry_definition_for_every_taxon(snapshot):
    """The subtree of X is X, ancestry = 'A/X' or ancestry LIKE 'A/X/%' (A = X's own ancestry)."""
    con, _, _ = snapshot
    for taxon_id, path in con.execute("SELECT taxon_id, path FROM taxonomy").fetchall():
        by_range = {r[0] for r in con.execute(subtree_taxonomy_query(con, taxon_id)).fetchall()}
        by_definition = {
            r[0]
            for r in con.execute(
                "SELECT taxon_id FROM taxonomy WHERE taxon_id = $x OR ancestry = $p OR ancestry LIKE $p || '/%'",
                {"x": taxon_id, "p": path},
            ).fetchall()
        }
        assert by_range == by_definition, taxon_id


def test_names_resolve_only_when_unambiguous(snapshot):
    con, _, _ = snapshot
    assert {t["kingdom"] for t in find_taxa(con, "Morus")} == {"Animalia", "Plantae"}
    with pytest.raises(AmbiguousTaxonError, match=r"2 active taxa are named 'Pieris'.*52464.*Animalia.*60000.*Plantae.*Fix"):
        resolve_taxon(con, "Pieris")
    assert resolve_taxon(con, "Pieris", within=fx.PLANTAE) == fx.PIERIS_PLANT
    assert resolve_taxon(con, "morus", within=fx.ANIMALIA) == fx.MORUS_BIRD
    assert resolve_taxon(con, "Morus bassanus", rank="species") == fx.MORUS_BASSANUS
    with pytest.raises(UnknownTaxonError, match=r"No active taxon named 'Sula bassana'"):
        resolve_taxon(con, "Sula bassana")  # inactive
    with pytest.raises(UnknownTaxonError, match=r"\[31337\].*Fix"):
        subtree_media_query(con, [fx.MORUS_PLANT, 31337])
    with pytest.raises(TaxonomyError, match="not a taxon path"):
        subtree_predicate("1/2'; DROP TABLE media; --")


# ---------------------------------------------------------------------------------------------
# media
# ---------------------------------------------------------------------------------------------


def test_media_has_one_row_per_photo_sorted_by_path(snapshot):
    con, _, build = snapshot
    assert [c[0] for c in con.execute("DESCRIBE media").fetchall()] == list(MEDIA_COLUMNS)
    assert build.rows == len(fx.PHOTOS) == con.execute("SELECT count(DISTINCT photo_id) FROM media").fetchall()[0][0]
    assert (build.orphan_photos, build.photos_without_taxon) == (0, fx.PHOTOS_PER_TAXON[None])
    paths = [r[0] for r in con.execute("SELECT taxon_path FROM read_parquet($p)", {"p": str(build.path)}).fetchall()]
    known = [p for p in paths if p is not None]
    assert known == sorted(known) and paths[len(known):] == [None] * (len(paths) - len(known))  # nulls last
    assert build.top_taxa[0] == (fx.MORUS_BASSANUS, "Morus bassanus", "species", 3)

    row = con.execute("SELECT * FROM media WHERE photo_id = 1000").fetchall()[0]
    record = dict(zip(MEDIA_COLUMNS, row))
    assert record["observer_name"] == "Pat O'Brien" and record["license"] == "CC0"
    assert (record["width"], record["height"], record["extension"]) == (2048, 1536, "jpeg")
    assert record["taxon_path"].endswith(f"/{fx.MORUS_BIRD}/{fx.MORUS_BASSANUS}")


def test_orphan_photos_keep_their_row_and_are_counted(tmp_path):
    orphan = (fx.photo_uuid(999), 9999, fx.observation_uuid(999), 1, "png", "CC0", 100, 80, 0)
    _, _, build = build_snapshot(tmp_path, dict(fx.ROWS, photos=fx.PHOTOS + [orphan]))
    assert build.rows == len(fx.PHOTOS) + 1 and build.orphan_photos == 1
    assert 0 < build.orphan_ratio < 0.1


def test_subtree_query_reads_only_the_row_groups_it_needs(tmp_path):
    """Media sorted by path: a species' subtree scans a fraction of the row groups."""
    species = [fx.MORUS_ALBA, fx.PIERIS_JAPONICA, fx.LEPISMA_SACCHARINUM, fx.PIERIS_RAPAE]
    observations, photos = [], []
    for i in range(4 * 2500):
        observations.append((fx.observation_uuid(i), 1, 1.0, 2.0, None, species[i % 4], "research", "2024-05-01", None))
        photos.append((fx.photo_uuid(i), i, fx.observation_uuid(i), 1, "jpg", "CC-BY", 10, 10, 0))
    rows = dict(fx.ROWS, observations=observations, photos=photos)
    warehouse, _, build = build_snapshot(tmp_path, rows, row_group_size=2048)
    con = warehouse.connect_views()
    query = subtree_media_query(con, fx.PIERIS_JAPONICA, media=f"read_parquet('{build.path}')", columns="count(*)")
    assert con.execute(query).fetchall()[0][0] == 2500
    plan = con.execute("EXPLAIN ANALYZE " + query).fetchall()[0][1]
    scanned, total = map(int, re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan).groups())
    assert total >= 4 and scanned <= 2, (scanned, total)


def test_media_needs_its_inputs(tmp_path):
    warehouse = Warehouse(tmp_path)
    with pytest.raises(WarehouseError, match=r"The taxa table .* does not exist\. Fix: materialize the `taxa` asset"):
        build_taxonomy(warehouse, warehouse.table_path(fx.SNAPSHOT_KEY, "taxa"), tmp_path / "taxonomy.parquet")
