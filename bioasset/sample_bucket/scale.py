"""A metadata-only snapshot of millions of photos, for benchmarks (``--scale-millions``).

Same layout and format as the sample bucket, no images. Observations and photos are drawn in
fixed-size vectorised numpy chunks and written by Arrow's CSV writer (their fields never hold
quotes or tabs), so memory stays flat whatever the size; the small tables are written row by
row. The taxonomy is the real catalogue plus thousands of synthetic species under the real
orders, with species weights that fall off like a power law; the family
``ONE_PERCENT_FAMILY_ID`` (Scarabaeidae) holds about 1% of the photos, a subtree to benchmark.
Deterministic for ``(millions, seed, snapshot_date)``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from bioasset.inat_format import LICENSES, TABLE_COLUMNS, header_line
from bioasset.sample_bucket.generate import (
    DEFAULT_SNAPSHOT_DATE,
    EXTENSION_WEIGHTS,
    LICENSE_WEIGHTS,
    ORIGINAL_SIZES,
    PHOTO_ID_START,
    PROJECTS,
    REGIONS,
    _row,
    observer_ids,
    observer_rows,
    taxon_row,
)
from bioasset.sample_bucket.errors import SampleBucketError
from bioasset.sample_bucket.snapshot_files import publish_snapshot, staging_dir, write_table
from bioasset.sample_bucket.taxonomy_data import (
    CATALOGUE_SPECIES_IDS,
    ONE_PERCENT_FAMILY_ID,
    catalogue,
    synthetic_tree,
)

OBSERVATIONS_PER_CHUNK = 250_000
SYNTHETIC_FAMILIES = 300
ONE_PERCENT = 0.01
PHOTO_COUNTS, PHOTO_COUNT_WEIGHTS = (1, 2, 3, 4), (0.55, 0.25, 0.12, 0.08)
QUALITY_GRADES = ("research", "needs_id", "casual")
_EPOCH = date(1970, 1, 1)
#: Byte value -> its two hex digits, as the two bytes of a uint16.
_HEX_PAIRS = np.frombuffer(b"".join(f"{value:02x}".encode() for value in range(256)), dtype=np.uint16)
#: Where the 32 hex digits of a UUID go among its 36 characters.
_HEX_COLUMNS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


@dataclass
class ScaleSnapshotReport:
    dest: Path
    snapshot_date: date
    is_latest: bool
    tarball: Path
    row_counts: dict[str, int]
    species: int
    one_percent_taxon_id: int
    one_percent_taxon_name: str
    one_percent_photos: int
    uncompressed_bytes: int
    bytes_written: int
    generate_s: float
    compress_s: float
    elapsed_s: float

    def describe(self) -> str:
        photos = self.row_counts["photos"]
        return (
            f"snapshot {self.snapshot_date} (metadata only): {photos:,} photos, {self.row_counts['observations']:,} observations, "
            f"{self.species:,} species; {self.one_percent_taxon_name} ({self.one_percent_taxon_id}) holds "
            f"{self.one_percent_photos:,} photos ({100 * self.one_percent_photos / max(photos, 1):.2f}%); "
            f"{self.uncompressed_bytes / 1e6:,.0f} MB of TSV, {self.bytes_written / 1e6:,.0f} MB written "
            f"(generate {self.generate_s:.1f} s, compress {self.compress_s:.1f} s)"
        )


@dataclass(frozen=True)
class _ScaleTaxonomy:
    taxa: list  # Taxon rows for taxa.csv
    species_ids: np.ndarray
    genus_ids: np.ndarray  # the genus of each species
    subspecies_ids: np.ndarray  # one subspecies of each species, or 0
    cumulative_weights: np.ndarray
    in_one_percent: np.ndarray  # bool: species under ONE_PERCENT_FAMILY_ID


def _scale_taxonomy(seed: int) -> _ScaleTaxonomy:
    tree = synthetic_tree(n_families=SYNTHETIC_FAMILIES, seed=seed)
    taxa = {**catalogue(), **{taxon.taxon_id: taxon for taxon in tree.taxa}}
    species = [taxa[taxon_id] for taxon_id in (*CATALOGUE_SPECIES_IDS, *tree.species_ids)]
    subspecies = {t.parent_id: t.taxon_id for t in sorted(taxa.values(), key=lambda t: -t.taxon_id) if t.rank == "subspecies" and t.active}
    genus = [next(a for a in reversed(s.ancestor_ids) if taxa[a].rank == "genus") for s in species]
    in_subtree = np.array([ONE_PERCENT_FAMILY_ID in s.ancestor_ids for s in species])
    # Power-law weights in a shuffled order; then the subtree is scaled to exactly 1%.
    rng = np.random.default_rng([seed, 13])
    weights = 1.0 / np.arange(1, len(species) + 1) ** 1.1
    weights = weights[rng.permutation(len(species))]
    weights[in_subtree] *= ONE_PERCENT / weights[in_subtree].sum()
    weights[~in_subtree] *= (1 - ONE_PERCENT) / weights[~in_subtree].sum()
    return _ScaleTaxonomy(
        taxa=sorted(taxa.values(), key=lambda t: t.taxon_id),
        species_ids=np.array([s.taxon_id for s in species], dtype=np.int32),
        genus_ids=np.array(genus, dtype=np.int32),
        subspecies_ids=np.array([subspecies.get(s.taxon_id, 0) for s in species], dtype=np.int32),
        cumulative_weights=np.cumsum(weights) / weights.sum(),
        in_one_percent=in_subtree,
    )


def uuid_strings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, pa.Array]:
    """``n`` random version-4 UUIDs: as an ``(n, 36)`` byte matrix and as an Arrow string array."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_COLUMNS] = _HEX_PAIRS[raw].view(np.uint8).reshape(n, 32)
    return text, _fixed_width_strings(text)


def _fixed_width_strings(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix)))


def _choices(rng: np.random.Generator, values, weights, n: int) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    return rng.choice(len(values), size=n, p=weights / weights.sum()).astype(np.int8)


def _strings(codes: np.ndarray, values) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(list(values), pa.string())).dictionary_decode()


class _TsvWriter:
    """A raw TSV file written in Arrow record batches, header first."""

    def __init__(self, path: Path, table: str):
        self.columns = list(TABLE_COLUMNS[table])
        self.sink = pa.OSFile(str(path), "wb")
        self.sink.write(header_line(table).encode())
        self.writer = None

    def write(self, columns: dict[str, pa.Array]) -> None:
        batch = pa.record_batch([columns[name] for name in self.columns], names=self.columns)
        if self.writer is None:
            options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", batch_size=1 << 16)
            self.writer = pa_csv.CSVWriter(self.sink, batch.schema, write_options=options)
        self.writer.write_batch(batch)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.sink.close()


def _chunk(rng, taxonomy: _ScaleTaxonomy, n_obs: int, photos_left: int, first_photo_id: int, observers: np.ndarray, snapshot: date):
    """One chunk of observations, their photos and project links, as Arrow columns, with the
    photos in the 1% subtree; the photo count is cut to ``photos_left``."""
    counts = np.asarray(PHOTO_COUNTS, dtype=np.int64)[_choices(rng, PHOTO_COUNTS, PHOTO_COUNT_WEIGHTS, n_obs)]
    total = np.cumsum(counts)
    if total[-1] >= photos_left:  # the last chunk: stop at exactly the photos asked for
        n_obs = int(np.searchsorted(total, photos_left)) + 1
        counts = counts[:n_obs]
        counts[-1] -= total[n_obs - 1] - photos_left
    uuid_matrix, observation_uuid = uuid_strings(rng, n_obs)
    observations, species, observer = _observation_columns(rng, taxonomy, observation_uuid, observers, snapshot)
    photos = _photo_columns(rng, counts, uuid_matrix, observer, first_photo_id)
    linked = np.nonzero(rng.random(n_obs) < 0.03)[0]
    project_ids = np.array([pid for pid, _, _ in PROJECTS], dtype=np.int32)
    links = {
        "observation_uuid": _fixed_width_strings(uuid_matrix[linked]),
        "project_id": pa.array(project_ids[rng.integers(0, len(project_ids), len(linked))]),
    }
    return observations, photos, links, int(counts[taxonomy.in_one_percent[species]].sum())


def _observation_columns(rng, taxonomy: _ScaleTaxonomy, observation_uuid: pa.Array, observers: np.ndarray, snapshot: date):
    """The observation columns, and each observation's species index and observer id."""
    n_obs = len(observation_uuid)
    species = np.searchsorted(taxonomy.cumulative_weights, rng.random(n_obs), side="right").clip(0, len(taxonomy.species_ids) - 1)
    roll = rng.random(n_obs)
    to_genus = roll < 0.04
    to_subspecies = (roll > 0.96) & (taxonomy.subspecies_ids[species] > 0)
    taxon = np.where(to_genus, taxonomy.genus_ids[species], np.where(to_subspecies, taxonomy.subspecies_ids[species], taxonomy.species_ids[species]))
    placed = rng.random(n_obs) > 0.05
    region = np.asarray(REGIONS)[species % len(REGIONS)]
    grade = np.where(~placed, 2, np.where(to_genus | (rng.random(n_obs) > 0.85), 1, 0)).astype(np.int8)
    # A few observers make most observations.
    observer = observers[np.minimum(len(observers) - 1, (len(observers) * rng.random(n_obs) ** 2.5).astype(np.int64))]
    days = (snapshot - _EPOCH).days - rng.integers(1, 3650, n_obs)
    columns = {
        "observation_uuid": observation_uuid,
        "observer_id": pa.array(observer, pa.int32()),
        "latitude": pa.array(np.round(region[:, 0] + rng.normal(0, 3, n_obs), 6), mask=~placed),
        "longitude": pa.array(np.round(region[:, 1] + rng.normal(0, 3, n_obs), 6), mask=~placed),
        "positional_accuracy": pa.array(rng.lognormal(3, 1.5, n_obs).astype(np.int32) + 1, mask=~placed | (rng.random(n_obs) < 0.25)),
        "taxon_id": pa.array(taxon, pa.int32()),
        "quality_grade": _strings(grade, QUALITY_GRADES),
        "observed_on": pa.array(days.astype(np.int32), pa.date32()),
        "anomaly_score": pa.array(np.round(rng.beta(1.2, 10, n_obs), 6)),
    }
    return columns, species, observer


def _photo_columns(rng, counts: np.ndarray, uuid_matrix: np.ndarray, observer: np.ndarray, first_photo_id: int) -> dict[str, pa.Array]:
    """The photo columns: ``counts[i]`` photos of observation ``i``, with consecutive ids."""
    n_photos = int(counts.sum())
    of_photo = np.repeat(np.arange(len(counts)), counts)
    sizes = np.asarray(list(ORIGINAL_SIZES), dtype=np.int16)[_choices(rng, list(ORIGINAL_SIZES), list(ORIGINAL_SIZES.values()), n_photos)]
    return {
        "photo_uuid": uuid_strings(rng, n_photos)[1],
        "photo_id": pa.array(np.arange(first_photo_id, first_photo_id + n_photos, dtype=np.int64)),
        "observation_uuid": _fixed_width_strings(uuid_matrix[of_photo]),
        "observer_id": pa.array(observer[of_photo], pa.int32()),
        "extension": _strings(_choices(rng, EXTENSION_WEIGHTS, list(EXTENSION_WEIGHTS.values()), n_photos), EXTENSION_WEIGHTS),
        "license": _strings(_choices(rng, LICENSES, [LICENSE_WEIGHTS[code] for code in LICENSES], n_photos), LICENSES),
        "width": pa.array(sizes[:, 0]),
        "height": pa.array(sizes[:, 1]),
        "position": pa.array((np.arange(n_photos) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int16)),
    }


def generate_scale_snapshot(
    dest: str | os.PathLike,
    *,
    millions: float,
    seed: int = 0,
    snapshot_date: date = DEFAULT_SNAPSHOT_DATE,
    compresslevel: int = 1,
) -> ScaleSnapshotReport:
    """Write a metadata-only snapshot of ``millions`` million photos into the folder ``dest``
    (dated tarball, and the latest tarball and root CSVs when it is the newest snapshot),
    gzipped at ``compresslevel`` by python-isal when installed (zlib otherwise)."""
    started = time.perf_counter()
    n_photos = round(millions * 1_000_000)
    if n_photos < 1:
        raise SampleBucketError(f"--scale-millions {millions}: asks for {n_photos} photos; pass at least 0.000001")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    taxonomy = _scale_taxonomy(seed)
    rng = np.random.default_rng([seed, snapshot_date.toordinal()])
    observers = observer_ids(rng, max(1000, n_photos // 50), first_id=1000).astype(np.int32)
    counts = {"observations": 0, "photos": 0, "observations_projects": 0}
    one_percent = 0
    with staging_dir(dest) as raw_dir:
        write_table(raw_dir / "taxa.csv", "taxa", map(taxon_row, taxonomy.taxa))
        write_table(raw_dir / "observers.csv", "observers", observer_rows(rng, observers, with_specials=True))
        write_table(raw_dir / "projects.csv", "projects", (_row(project_id=p, title=t, project_type=k) for p, t, k in PROJECTS))
        writers = {table: _TsvWriter(raw_dir / f"{table}.csv", table) for table in counts}
        try:
            chunk = 0
            while counts["photos"] < n_photos:
                chunk_rng = np.random.default_rng([seed, snapshot_date.toordinal(), 100 + chunk])
                tables = _chunk(chunk_rng, taxonomy, OBSERVATIONS_PER_CHUNK, n_photos - counts["photos"],
                                PHOTO_ID_START + counts["photos"], observers, snapshot_date)
                for table, columns in zip(writers, tables[:3]):
                    writers[table].write(columns)
                    counts[table] += len(next(iter(columns.values())))
                one_percent += tables[3]
                chunk += 1
        finally:
            for writer in writers.values():
                writer.close()
        generated = time.perf_counter()
        uncompressed = sum(path.stat().st_size for path in raw_dir.iterdir())
        published = publish_snapshot(dest, snapshot_date, raw_dir, compresslevel=compresslevel, fast=True)
    finished = time.perf_counter()
    return ScaleSnapshotReport(
        dest=dest,
        snapshot_date=snapshot_date,
        is_latest=published.is_latest,
        tarball=published.tarball,
        row_counts={"observations": counts["observations"], "photos": counts["photos"], "taxa": len(taxonomy.taxa),
                    "observers": len(observers), "projects": len(PROJECTS), "observations_projects": counts["observations_projects"]},
        species=len(taxonomy.species_ids),
        one_percent_taxon_id=ONE_PERCENT_FAMILY_ID,
        one_percent_taxon_name=catalogue()[ONE_PERCENT_FAMILY_ID].name,
        one_percent_photos=one_percent,
        uncompressed_bytes=uncompressed,
        bytes_written=published.bytes_written,
        generate_s=generated - started,
        compress_s=finished - generated,
        elapsed_s=finished - started,
    )
