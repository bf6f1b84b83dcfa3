"""The dataset card: every file exists and decodes, card.md shows the catalog numbers, the sample
grid shows the store's images, and the taxonomy tree keeps same-named genera apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from bioasset.dataset_card import CARD_FILES, SAMPLES_PER_CLASS, THUMB_SIZE, card_summary, taxonomy_tree, write_card
from bioasset.registry import DatasetVersion, FreezeResult, freeze_version, manifest_path
from bioasset.warehouse import Warehouse
from dataset_fixtures import Photo, make_manifest, standard_photos


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> tuple[Path, Path, FreezeResult]:
    root = tmp_path_factory.mktemp("card")
    store, warehouse = root / "images", root / "warehouse"
    photos = standard_photos() + [Photo(300, "Apis mellifera", stored=False)]
    result = freeze_version(warehouse, "demo", make_manifest(store, photos), snapshot="2024-11-27", spec_hash="f" * 64, image_store=str(store))
    return warehouse, store, result


def test_every_card_file_exists_and_every_png_decodes(frozen):
    warehouse, _, result = frozen
    card = result.path / "card"
    assert sorted(p.name for p in card.iterdir()) == sorted(CARD_FILES.values())
    for name in CARD_FILES.values():
        if name.endswith(".png"):
            with Image.open(card / name) as image:
                image.load()
                assert image.format == "PNG" and image.width > 200 and image.height > 100
    html = (card / "taxonomy_sunburst.html").read_text()
    assert "Pieris japonica" in html and "Lepidoptera" in html
    assert "<script src=" not in html and "plotly.js" in html.lower()  # self-contained: plotly.js is inlined


def test_card_markdown_links_the_files_and_shows_the_catalog_numbers(frozen):
    _, _, result = frozen
    version = result.version
    text = (result.path / "card" / "card.md").read_text()
    for name in CARD_FILES.values():
        if name != "card.md":
            assert f"({name})" in text, name
    assert f"# Dataset card: demo @ {version.version}" in text
    assert f"`{version.content_hash}`" in text and "| snapshot | 2024-11-27 |" in text
    assert "| images | 12: 7 train / 2 val / 3 test |" in text
    assert "| rows left out | 1 (image missing) |" in text
    assert "| CC-BY | 4 | 33.3% |" in text
    assert "| Pieris rapae | 55626 | 4 | 1 | 1 | 6 |" in text


def test_card_summary_gives_paths_and_markdown_for_dagster_metadata(frozen):
    warehouse, _, result = frozen
    summary = card_summary(warehouse, result.version)
    assert set(summary.paths) == set(CARD_FILES)
    assert all(path.is_file() for path in summary.paths.values())
    assert summary.markdown.startswith(f"### demo @ `{result.version.version}`")
    assert "| license | images | share |" in summary.markdown and "Largest classes (3 of 3)" in summary.markdown


def test_sample_grid_shows_store_images_and_grey_tiles_for_missing_ones(frozen, tmp_path):
    warehouse, store, result = frozen
    partial_store = tmp_path / "store"
    shutil.copytree(store, partial_store)
    for photo_id in (100, 101, 102, 103, 104, 105):  # every Pieris rapae image
        (partial_store / f"inaturalist/medium/{photo_id}.jpg").unlink()
    summary = write_card(tmp_path / "card", result.version, manifest_path(Warehouse(warehouse), result.version), image_store=str(partial_store))
    assert summary.missing_samples == SAMPLES_PER_CLASS  # Pieris rapae has 6 images, 4 are sampled
    assert any("could not be read" in note for note in summary.notes)
    assert "could not be read" in (tmp_path / "card" / "card.md").read_text()

    # Pieris rapae is the largest class, so the first block: its first tile is grey. Apis
    # mellifera's first tile (second block) is one of its solid-colour images.
    with Image.open(tmp_path / "card" / "sample_grid.png") as grid:
        grid = grid.convert("RGB")
        middle = THUMB_SIZE // 2
        first_tile = grid.getpixel((4 + middle, 4 + 18 + middle))
        block_width = SAMPLES_PER_CLASS * (THUMB_SIZE + 4) + 8
        second_block_tile = grid.getpixel((block_width + 4 + middle, 4 + 18 + middle))
    assert first_tile == (0xBB, 0xBB, 0xBB)
    apis_colours = set()
    for photo_id in (106, 107, 108, 109):
        with Image.open(store / f"inaturalist/medium/{photo_id}.jpg") as image:
            apis_colours.add(image.convert("RGB").getpixel((20, 15)))
    assert any(max(abs(a - b) for a, b in zip(second_block_tile, colour)) <= 3 for colour in apis_colours)


def test_write_card_refuses_an_existing_folder(frozen):
    warehouse, store, result = frozen
    with pytest.raises(FileExistsError, match="already exists"):
        write_card(result.path / "card", result.version, result.path / "manifest.parquet", image_store=str(store))


def test_taxonomy_tree_keeps_same_named_genera_apart_and_skips_missing_ranks(frozen, tmp_path):
    warehouse, _, result = frozen
    tree = taxonomy_tree(manifest_path(Warehouse(warehouse), result.version), "species")
    assert tree.images == 12
    assert {(n.name, n.images) for n in tree.children.values()} == {("Animalia", 10), ("Plantae", 2)}
    pieris = [node for node, _ in tree.walk() if node.name == "Pieris"]
    assert sorted(n.images for n in pieris) == [2, 6] and len({n.key for n in pieris}) == 2

    # A photo with no family hangs its genus from the order.
    manifest = make_manifest(tmp_path / "store", [Photo(1, "Apis mellifera"), Photo(2, "Pieris rapae")])
    manifest.loc[0, ["family", "family_id"]] = None
    path = tmp_path / "m.parquet"
    manifest.to_parquet(path)
    tree = taxonomy_tree(path, "species")
    parents = {node.name: parent.name for node, parent in tree.walk()}
    assert parents["Apis"] == "Hymenoptera" and parents["Pieris"] == "Pieridae"


def test_refreezing_a_version_without_a_card_writes_its_card(tmp_path):
    store = tmp_path / "store"
    manifest = make_manifest(store, standard_photos()[:4])
    first = freeze_version(tmp_path / "wh", "demo", manifest, image_store=str(store), with_card=False)
    assert not (first.path / "card").exists()
    second = freeze_version(tmp_path / "wh", "demo", manifest, image_store=str(store))
    assert not second.created and (second.path / "card" / "card.md").is_file()
    assert isinstance(second.version, DatasetVersion) and second.version == first.version
