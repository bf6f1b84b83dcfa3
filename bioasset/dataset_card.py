"""The dataset card of a version: plots and a ``card.md`` that shows them with the catalog numbers.

Files, in ``datasets/{name}/{version}/card/``:

- ``class_histogram.png``: images per class, stacked by split (matplotlib);
- ``taxonomy_sunburst.html``: the taxonomy as an interactive sunburst (plotly, self-contained);
- ``taxonomy_sunburst.png``: the same as nested rings (matplotlib; plotly's PNG export needs a
  browser, which the build machines do not have);
- ``license_breakdown.png``: images per license (its table is in ``card.md``);
- ``sample_grid.png``: a few images of every class, read from the image store (Pillow);
- ``card.md``: the summary (:func:`summary_markdown`) and the plots.

:func:`card_summary` gives the paths and the summary for Dagster metadata.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

from bioasset.download.items import ImageStore
from bioasset.inat_format import MAIN_RANKS
from bioasset.manifest_schema import SPLITS
from bioasset.registry import (
    DatasetVersion,
    WarehouseLike,
    as_image_store,
    as_warehouse,
    card_dir,
    class_split_counts,
    license_counts,
    manifest_path,
    query_manifest,
    quoted,
    read_store_files,
)

CARD_FILES = {
    "card": "card.md",
    "class_histogram": "class_histogram.png",
    "taxonomy_sunburst_html": "taxonomy_sunburst.html",
    "taxonomy_sunburst_png": "taxonomy_sunburst.png",
    "license_breakdown": "license_breakdown.png",
    "sample_grid": "sample_grid.png",
}

#: Plots with one bar per class show at most this many (the largest); the tables show all.
MAX_PLOTTED_CLASSES = 60
#: The sample grid shows at most this many classes (the largest) ...
MAX_GRID_CLASSES = 150
#: ... with this many images each, chosen by sha256 order: stable, and unrelated to photo age.
SAMPLES_PER_CLASS = 4
THUMB_SIZE = 96
SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


@dataclass(frozen=True)
class CardSummary:
    """What a Dagster wrapper shows: the card's files (key -> path) and a Markdown summary."""

    paths: dict[str, Path]
    markdown: str
    missing_samples: int = 0  # sample images the store could not give (drawn as grey tiles)
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def write_card(
    folder: str | os.PathLike[str],
    version: DatasetVersion,
    manifest: str | os.PathLike[str],
    *,
    image_store: ImageStore | str | None = None,
) -> CardSummary:
    """Write the card of ``version`` (whose frozen manifest is the Parquet file ``manifest``)
    into ``folder``, which must not exist yet: it is built beside it and renamed into place."""
    target = Path(folder)
    if target.exists():
        raise FileExistsError(f"Card folder {target} already exists. Fix: cards are written once; remove it to rebuild it.")
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        classes = class_split_counts(manifest)
        licenses = license_counts(manifest)
        _plot_class_histogram(classes, staging / CARD_FILES["class_histogram"])
        tree = taxonomy_tree(manifest, version.label_rank)
        _write_sunburst_html(tree, version, staging / CARD_FILES["taxonomy_sunburst_html"])
        _plot_sunburst_rings(tree, version, staging / CARD_FILES["taxonomy_sunburst_png"])
        _plot_license_breakdown(licenses, staging / CARD_FILES["license_breakdown"])
        missing = _draw_sample_grid(manifest, as_image_store(image_store), staging / CARD_FILES["sample_grid"])
        notes = _card_notes(len(classes), missing)
        (staging / CARD_FILES["card"]).write_text(_card_markdown(version, classes, licenses, notes), encoding="utf-8")
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CardSummary(_paths(target), summary_markdown(version, classes, licenses), missing, notes)


def card_summary(warehouse: WarehouseLike, version: DatasetVersion) -> CardSummary:
    """The card's paths and a Markdown summary of ``version``, for Dagster metadata
    (``MetadataValue.path`` per file, ``MetadataValue.md`` for the summary)."""
    warehouse = as_warehouse(warehouse)
    manifest = manifest_path(warehouse, version)
    return CardSummary(
        _paths(card_dir(warehouse, version)),
        summary_markdown(version, class_split_counts(manifest), license_counts(manifest)),
    )


def _paths(folder: Path) -> dict[str, Path]:
    return {key: folder / name for key, name in CARD_FILES.items()}


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def summary_markdown(version: DatasetVersion, classes: list[dict[str, Any]], licenses: list[dict[str, Any]], *, top_classes: int = 10) -> str:
    """The catalog numbers, the license table and the largest classes, as Markdown."""
    largest = class_table(classes[:top_classes], title=f"Largest classes ({min(top_classes, len(classes))} of {len(classes)})")
    return "\n\n".join([f"### {version.name} @ `{version.version}`", numbers_table(version), license_table(licenses), largest])


def numbers_table(version: DatasetVersion) -> str:
    """The catalog row of ``version`` as a two-column Markdown table."""
    splits = " / ".join(f"{version.images_per_split[s]:,} {s}" for s in SPLITS)
    parent = f"`{version.parent_version}`" if version.parent_version else "none (first version)"
    rows = [
        ("version", f"#{version.sequence} `{version.version}`, frozen {version.created:%Y-%m-%d %H:%M} UTC"),
        ("content hash", f"`{version.content_hash}`"),
        ("snapshot", version.snapshot or "n/a"),
        ("spec hash", f"`{version.spec_hash}`" if version.spec_hash else "n/a"),
        ("parent", parent),
        ("labels", f"{version.class_count:,} classes at rank {version.label_rank or 'mixed'}"),
        ("images", f"{version.images:,}: {splits}"),
        (
            "change vs parent",
            f"+{version.added:,} added, -{version.removed:,} removed, {version.relabelled:,} relabelled, "
            f"{version.resplit:,} moved between splits",
        ),
        ("rows left out", f"{version.missing_images:,} (image missing)"),
    ]
    return "\n".join(["| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows)])


def license_table(licenses: list[dict[str, Any]]) -> str:
    rows = [f"| {r['license']} | {r['images']:,} | {r['percent']:.1f}% |" for r in licenses]
    return "\n".join(["| license | images | share |", "| --- | ---: | ---: |", *rows])


def class_table(classes: list[dict[str, Any]], *, title: str) -> str:
    header = "| class | taxon id | " + " | ".join(SPLITS) + " | total |"
    rule = "| --- | ---: | " + " | ".join("---:" for _ in SPLITS) + " | ---: |"
    rows = [
        f"| {_markdown_cell(r['label_name'])} | {r['label_id']} | " + " | ".join(f"{r[s]:,}" for s in SPLITS) + f" | {r['total']:,} |"
        for r in classes
    ]
    return "\n".join([f"**{title}**", "", header, rule, *rows])


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _card_notes(class_count: int, missing_samples: int) -> tuple[str, ...]:
    notes = []
    if class_count > MAX_PLOTTED_CLASSES:
        notes.append(f"The class histogram shows the {MAX_PLOTTED_CLASSES} largest of {class_count} classes.")
    if class_count > MAX_GRID_CLASSES:
        notes.append(f"The sample grid shows the {MAX_GRID_CLASSES} largest of {class_count} classes.")
    if missing_samples:
        notes.append(f"{missing_samples} sample images could not be read from the image store (grey tiles).")
    return tuple(notes)


def _card_markdown(version: DatasetVersion, classes: list[dict[str, Any]], licenses: list[dict[str, Any]], notes: tuple[str, ...]) -> str:
    files = CARD_FILES
    sections = [
        f"# Dataset card: {version.name} @ {version.version}",
        "",
        numbers_table(version),
        "",
        *(f"> {note}\n" for note in notes),
        "",
        "## Classes",
        "",
        f"![Images per class and split]({files['class_histogram']})",
        "",
        class_table(classes, title=f"All {len(classes)} classes"),
        "",
        "## Taxonomy",
        "",
        f"![Taxonomy sunburst]({files['taxonomy_sunburst_png']})",
        "",
        f"Interactive version: [{files['taxonomy_sunburst_html']}]({files['taxonomy_sunburst_html']}).",
        "",
        "## Licenses",
        "",
        f"![Images per license]({files['license_breakdown']})",
        "",
        license_table(licenses),
        "",
        "Every image keeps its own license. Each export of this version lists the license, attribution, "
        "observer and source of every image in `attribution.csv` and `attribution.md`.",
        "",
        "## Sample images",
        "",
        f"![Sample images per class]({files['sample_grid']})",
        "",
    ]
    return "\n".join(sections)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=110, bbox_inches="tight")


def _plot_class_histogram(classes: list[dict[str, Any]], path: Path) -> None:
    shown = classes[:MAX_PLOTTED_CLASSES]
    figure = Figure(figsize=(8, 1.2 + 0.22 * len(shown)))
    axes = figure.add_subplot()
    names = [str(r["label_name"]) for r in shown]
    left = [0] * len(shown)
    for split in SPLITS:
        counts = [r[split] for r in shown]
        axes.barh(names, counts, left=left, color=SPLIT_COLORS[split], label=split)
        left = [a + b for a, b in zip(left, counts)]
    axes.invert_yaxis()  # largest class on top
    axes.set_xlabel("images")
    suffix = f" (largest {len(shown)} of {len(classes)})" if len(classes) > len(shown) else ""
    axes.set_title(f"Images per class{suffix}")
    axes.legend(loc="lower right")
    axes.tick_params(axis="y", labelsize=8)
    _save(figure, path)


def _plot_license_breakdown(licenses: list[dict[str, Any]], path: Path) -> None:
    figure = Figure(figsize=(7, 1.2 + 0.4 * len(licenses)))
    axes = figure.add_subplot()
    bars = axes.barh([r["license"] for r in licenses], [r["images"] for r in licenses], color="#8172B3")
    axes.bar_label(bars, labels=[f"{r['images']:,} ({r['percent']:.1f}%)" for r in licenses], padding=3, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("images")
    axes.set_title("Images per license")
    axes.margins(x=0.25)
    _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Taxonomy sunburst
# ---------------------------------------------------------------------------------------------


@dataclass
class TaxonNode:
    """One taxon of the sunburst; ``key`` is the path of taxon ids from the top, unique even
    where names repeat across kingdoms."""

    key: str
    name: str
    rank: str
    images: int = 0
    children: dict[str, TaxonNode] = field(default_factory=dict)

    def sorted_children(self) -> list[TaxonNode]:
        return sorted(self.children.values(), key=lambda c: (c.name, c.key))

    def walk(self) -> Iterator[tuple[TaxonNode, TaxonNode]]:
        """(node, parent) for every descendant, depth first, in name order."""
        for child in self.sorted_children():
            yield child, self
            yield from child.walk()


def taxonomy_tree(manifest: str | os.PathLike[str], label_rank: str | None) -> TaxonNode:
    """Images per taxon from the top rank down to the labels. A rank that is null for a photo is
    skipped, so its taxon hangs from the nearest named ancestor."""
    ranks = MAIN_RANKS[: MAIN_RANKS.index(label_rank)] if label_rank in MAIN_RANKS else MAIN_RANKS
    levels = [(rank, f"{rank}_id", rank) for rank in ranks] + [(label_rank or "label", "label_id", "label_name")]
    select = ", ".join(f"{quoted(id_column)}, {quoted(name_column)}" for _, id_column, name_column in levels)
    rows = query_manifest(manifest, f"SELECT {select}, count(*) AS images FROM manifest GROUP BY ALL")
    root = TaxonNode("", "all images", "root")
    for row in rows:
        node = root
        root.images += row["images"]
        for rank, id_column, name_column in levels:
            if row[id_column] is None:
                continue
            key = f"{node.key}/{row[id_column]}"
            node = node.children.setdefault(key, TaxonNode(key, str(row[name_column]), rank))
            node.images += row["images"]
    return root


def _write_sunburst_html(tree: TaxonNode, version: DatasetVersion, path: Path) -> None:
    import plotly.graph_objects as go

    nodes = list(tree.walk())
    figure = go.Figure(
        go.Sunburst(
            ids=[node.key for node, _ in nodes],
            labels=[node.name for node, _ in nodes],
            parents=[parent.key for _, parent in nodes],
            values=[node.images for node, _ in nodes],
            branchvalues="total",
            customdata=[node.rank for node, _ in nodes],
            hovertemplate="%{label} (%{customdata})<br>%{value} images<extra></extra>",
        )
    )
    figure.update_layout(title=f"{version.name} @ {version.version}: {tree.images:,} images", margin=dict(t=50, l=0, r=0, b=0))
    figure.write_html(path, include_plotlyjs=True, full_html=True)


def _plot_sunburst_rings(tree: TaxonNode, version: DatasetVersion, path: Path) -> None:
    """A sunburst as nested rings on polar axes: one ring per depth, each wedge's angle in
    proportion to its images, children inside their parent's angle."""
    figure = Figure(figsize=(8, 8))
    axes = figure.add_subplot(projection="polar")
    palette = [to_rgb(f"C{i}") for i in range(10)]
    total = max(tree.images, 1)
    font_size = 6.5
    # Points per radial unit: the rings (plus the hole) span about 3.2 of the figure's 8 inches.
    points_per_unit = 3.2 * 72 / (_depth(tree) + 1)
    branch_depth, node = 0, tree
    while len(node.children) == 1:
        node, branch_depth = next(iter(node.children.values())), branch_depth + 1

    def draw(node: TaxonNode, start: float, depth: int, color: tuple[float, float, float]) -> None:
        angle = start
        for index, child in enumerate(node.sorted_children()):
            width = 2 * math.pi * child.images / total
            # The taxa where the tree first branches get their own colours (the single line above
            # them is grey); below them, a lighter shade of the parent's colour, alternating.
            if depth < branch_depth:
                shade = to_rgb("#9AA5B1")
            elif depth == branch_depth:
                shade = palette[index % len(palette)]
            else:
                shade = _lighter(color, 0.10 + 0.08 * (index % 2))
            axes.bar(angle, 1, width=width, bottom=depth + 1, align="edge", color=shade, edgecolor="white", linewidth=0.6)
            # Write the name along the arc, cut to the characters that fit in it.
            fits = int(width * (depth + 1.5) * points_per_unit / (0.6 * font_size))
            if fits >= 5:
                middle = angle + width / 2
                rotation = (math.degrees(middle) - 90) % 360
                rotation = rotation - 180 if 90 < rotation < 270 else rotation
                label = child.name if len(child.name) <= fits else child.name[: fits - 1] + "…"
                axes.text(middle, depth + 1.5, label, rotation=rotation, ha="center", va="center", fontsize=font_size)
            draw(child, angle, depth + 1, shade)
            angle += width

    draw(tree, 0.0, 0, palette[0])
    axes.set_axis_off()
    axes.text(0, 0, f"{tree.images:,}\nimages", ha="center", va="center", fontsize=9)
    axes.set_title(f"Taxonomy of {version.name} @ {version.version}")
    _save(figure, path)


def _depth(node: TaxonNode) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0) if node.children else 0


def _lighter(color: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
    hue, lightness, saturation = colorsys.rgb_to_hls(*color)
    return colorsys.hls_to_rgb(hue, min(0.92, lightness + amount * (1 - lightness)), saturation)


# ---------------------------------------------------------------------------------------------
# Sample grid
# ---------------------------------------------------------------------------------------------


def _draw_sample_grid(manifest: str | os.PathLike[str], store: ImageStore, path: Path) -> int:
    """Draw up to ``SAMPLES_PER_CLASS`` images of each of the largest classes; returns how many
    could not be read or decoded (drawn as grey tiles)."""
    samples = query_manifest(
        manifest,
        f"""
        WITH sizes AS (SELECT label_id, count(*) AS images FROM manifest GROUP BY label_id
                       ORDER BY images DESC, label_id LIMIT {MAX_GRID_CLASSES}),
             ranked AS (SELECT label_id, label_name, image_path,
                               row_number() OVER (PARTITION BY label_id ORDER BY sha256) AS n FROM manifest)
        SELECT ranked.label_id, label_name, list(image_path ORDER BY n) AS image_paths
        FROM ranked JOIN sizes USING (label_id) WHERE n <= {SAMPLES_PER_CLASS}
        GROUP BY ranked.label_id, label_name, images ORDER BY images DESC, label_name
        """,
    )
    contents = read_store_files(store, [p for row in samples for p in row["image_paths"]])
    font = ImageFont.load_default(size=12)
    gap, caption = 4, 18
    block_width = SAMPLES_PER_CLASS * (THUMB_SIZE + gap) + 2 * gap
    block_height = caption + THUMB_SIZE + 2 * gap
    columns = max(1, min(3, len(samples)))
    rows = math.ceil(len(samples) / columns)
    canvas = Image.new("RGB", (columns * block_width, max(1, rows) * block_height), "white")
    draw = ImageDraw.Draw(canvas)
    missing = 0
    for index, row in enumerate(samples):
        left, top = (index % columns) * block_width + gap, (index // columns) * block_height + gap
        draw.text((left, top), str(row["label_name"])[:40], fill="black", font=font)
        for position, image_path in enumerate(row["image_paths"]):
            tile = _thumbnail(contents[image_path])
            if tile is None:
                missing += 1
                tile = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), "#bbbbbb")
            canvas.paste(tile, (left + position * (THUMB_SIZE + gap), top + caption))
    canvas.save(path, format="PNG", optimize=True)
    return missing


def _thumbnail(content: bytes | Exception) -> Image.Image | None:
    if isinstance(content, Exception):
        return None
    try:
        with Image.open(io.BytesIO(content)) as image:
            return ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (THUMB_SIZE, THUMB_SIZE))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
