"""A sample of ``s3://inaturalist-open-data`` in a local folder: metadata tarballs, root CSVs
and photos, with every shape of row the real export has.

``generate_sample_bucket`` writes one snapshot; with ``next_from`` it derives a later snapshot
from an earlier one in the same folder (new, removed, re-identified observations and changed
licenses). Generation is deterministic for its arguments, down to the bytes.
"""

from __future__ import annotations

import calendar
import os
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from bioasset.inat_format import IMAGE_SIZES, LICENSES, SNAPSHOT_TABLES, dated_tarball_key, parse_dated_tarball_key
from bioasset.sample_bucket.images import PhotoToDraw, remove_photo_images, write_photo_images
from bioasset.sample_bucket.errors import SampleBucketError
from bioasset.sample_bucket.snapshot_files import (
    format_value,
    publish_snapshot,
    read_tables,
    staging_dir,
    write_table,
)
from bioasset.sample_bucket.taxon_index import TaxonIndex, taxon_from_row
from bioasset.sample_bucket.taxonomy_data import CATALOGUE_SPECIES_IDS, Taxon, sample_species, sample_taxa

DEFAULT_SNAPSHOT_DATE = date(2026, 10, 27)
DEFAULT_N_SPECIES = len(CATALOGUE_SPECIES_IDS)
DEFAULT_PHOTOS_PER_SPECIES = 48
DEFAULT_SIZES = ("medium", "small")

PHOTO_ID_START = 100_000_001

#: Share of photos of each license (the real export is mostly CC-BY-NC).
LICENSE_WEIGHTS = dict(zip(LICENSES, (0.08, 0.15, 0.55, 0.05, 0.03, 0.07, 0.05, 0.02)))
EXTENSION_WEIGHTS = {"jpg": 0.86, "jpeg": 0.09, "JPG": 0.05}
#: Original pixel sizes (width, height) and their shares; some originals are under 2048.
ORIGINAL_SIZES = {(2048, 1536): 0.4, (1536, 2048): 0.2, (2048, 1365): 0.15, (1365, 2048): 0.05,
                  (2048, 2048): 0.08, (2048, 1152): 0.05, (1600, 1200): 0.05, (1200, 1600): 0.02}
PHOTOS_PER_OBSERVATION = (1, 1, 1, 1, 2, 2, 3, 4)
MISSING_IMAGE_RATE = 0.02
#: Places observations cluster around (latitude, longitude).
REGIONS = ((42.36, -71.06), (51.51, -0.13), (35.68, 139.69), (48.86, 2.35), (-33.87, 151.21),
           (37.77, -122.42), (19.43, -99.13), (52.52, 13.40), (-23.55, -46.63), (45.50, -73.57))

#: Observers whose names stress the unquoted TSV: apostrophes, double quotes, non-ASCII, NULL.
SPECIAL_OBSERVERS = (
    ("siobhan_obrien", "Siobhan O'Brien"),
    ("jj_doe", 'Jean "JJ" Doe'),
    ("jose_alvarez", "José Álvarez"),
    ("tanaka_ken", "田中 健"),
    ("dee_mccarthy", "D'Arcy \"Dee\" McCarthy"),
    ("bugfan42", None),
)
_FIRST_NAMES = ("Ana", "Ben", "Chloé", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivan", "Jia", "Kai", "Lena", "Mo", "Nia")
_LAST_NAMES = ("Okafor", "Smith", "Nguyen", "García", "Kowalski", "Ito", "Brown", "Singh", "Müller", "Rossi")
PROJECTS = (
    (1001, 'City Nature Challenge 2026: "Greater Boston"', "collection"),
    (1002, "O'Hare Airport BioBlitz", "bioblitz"),
    (1003, "Pollinators of the Pacific Northwest", "umbrella"),
    (1004, "Invasive Pests: Early Detection", "collection"),
    (1005, "Insectes du Québec", None),
)

Row = dict[str, str]


@dataclass
class SampleBucketReport:
    """What a generation wrote, with the ids of the special rows so that tests and later code
    can assert them. Observation lists hold observation UUIDs; photo lists hold photo ids."""

    dest: Path
    snapshot_date: date
    previous_snapshot_date: date | None
    is_latest: bool
    tarball: Path
    row_counts: dict[str, int]
    species_ids: list[int]
    sizes: tuple[str, ...]
    images_written: int
    missing_image_photo_ids: list[int]
    observations_without_coordinates: list[str]
    multi_photo_observations: list[str]
    genus_level_observations: list[str]
    subspecies_observations: list[str]
    inactive_taxon_observations: list[str]
    inactive_taxon_ids: list[int]
    subspecies_taxon_ids: list[int]
    homonym_genera: dict[str, list[int]]
    species_missing_main_ranks: list[int]
    licenses: dict[str, int]
    extensions: dict[str, int]
    quality_grades: dict[str, int]
    new_observations: list[str] = field(default_factory=list)
    new_photo_ids: list[int] = field(default_factory=list)
    removed_observations: list[str] = field(default_factory=list)
    removed_photo_ids: list[int] = field(default_factory=list)
    reidentified_observations: dict[str, tuple[int, int]] = field(default_factory=dict)
    license_changes: dict[int, tuple[str, str]] = field(default_factory=dict)
    bytes_written: int = 0
    elapsed_s: float = 0.0

    def describe(self) -> str:
        counts = ", ".join(f"{n} {table}" for table, n in self.row_counts.items() if table in ("observations", "photos", "taxa"))
        text = f"snapshot {self.snapshot_date}: {len(self.species_ids)} species, {counts}, {self.images_written} images"
        if self.previous_snapshot_date:
            text += (
                f"; since {self.previous_snapshot_date}: +{len(self.new_observations)} observations,"
                f" -{len(self.removed_observations)}, {len(self.reidentified_observations)} re-identified,"
                f" {len(self.license_changes)} licenses changed"
            )
        return text + f" ({self.elapsed_s:.1f} s)"


@dataclass
class _Tables:
    observations: list[Row] = field(default_factory=list)
    photos: list[Row] = field(default_factory=list)
    observers: list[Row] = field(default_factory=list)
    taxa: list[Row] = field(default_factory=list)
    projects: list[Row] = field(default_factory=list)
    observations_projects: list[Row] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Row]]:
        return {table: getattr(self, table) for table in SNAPSHOT_TABLES}


def _row(**values: object) -> Row:
    return {column: format_value(value) for column, value in values.items()}


def _pick(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    return keys[int(rng.choice(len(keys), p=np.array(list(weights.values())) / sum(weights.values())))]


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def taxon_row(taxon: Taxon) -> Row:
    return _row(taxon_id=taxon.taxon_id, ancestry=taxon.ancestry, rank_level=float(taxon.rank_level),
                rank=taxon.rank, name=taxon.name, active=taxon.active)


def observer_ids(rng: np.random.Generator, count: int, first_id: int) -> np.ndarray:
    """``count`` sorted, sparse observer ids from ``first_id`` on (real ids are sparse too)."""
    return np.sort(rng.choice(40 * count + 100, size=count, replace=False)) + first_id


def observer_rows(rng: np.random.Generator, ids: np.ndarray, with_specials: bool) -> Iterator[Row]:
    """Rows of observers.csv for ``ids``; the first take the ``SPECIAL_OBSERVERS`` names."""
    for position, observer_id in enumerate(ids):
        if with_specials and position < len(SPECIAL_OBSERVERS):
            login, name = SPECIAL_OBSERVERS[position]
        else:
            first, last = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))], _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
            ascii_name = unicodedata.normalize("NFKD", f"{first[:3]}{last[:4]}").encode("ascii", "ignore").decode().lower()
            login, name = f"{ascii_name}{observer_id}", f"{first} {last}"
            name = None if rng.random() < 0.1 else name  # many users leave their name blank
        yield _row(observer_id=int(observer_id), login=login, name=name)


@dataclass
class _Generator:
    """Draws observations and photos for species; shared by a first snapshot and ``--next``."""

    rng: np.random.Generator
    index: TaxonIndex
    observers: list[int]
    first_day: date
    last_day: date
    next_photo_id: int
    tables: _Tables
    photos_drawn: int = 0

    def _observer(self) -> int:
        # A few observers make most observations, as on iNaturalist.
        return self.observers[min(len(self.observers) - 1, int(len(self.observers) * self.rng.random() ** 2.5))]

    def add_species(self, species_id: int, n_photos: int) -> list[str]:
        """Observations of ``species_id`` with ``n_photos`` photos in all; returns their UUIDs.

        The first observations of each species take the special shapes in turn (several photos,
        genus-level id, subspecies, no coordinates, inactive synonym); later ones draw them at
        random."""
        uuids, remaining = [], n_photos
        while remaining > 0:
            position = len(uuids)
            observation = self._add_observation(species_id, position)
            count = 3 if position == 0 else PHOTOS_PER_OBSERVATION[int(self.rng.integers(len(PHOTOS_PER_OBSERVATION)))]
            self._add_photos(observation, self.tables.observations[-1]["observer_id"], min(count, remaining))
            remaining -= min(count, remaining)
            if self.rng.random() < 0.2:
                for project in self.rng.choice(len(PROJECTS), size=int(self.rng.integers(1, 3)), replace=False):
                    self.tables.observations_projects.append(_row(observation_uuid=observation, project_id=PROJECTS[project][0]))
            uuids.append(observation)
        return uuids

    def _taxon_for(self, species_id: int, position: int) -> int:
        """What the observation is identified as: mostly the species; at times its genus (only
        for the genus' representative), a subspecies, or an inactive synonym."""
        genus = self.index.representative_genus(species_id)
        subspecies = self.index.subspecies_of(species_id)
        synonyms = self.index.inactive_synonyms_of(species_id)
        roll = self.rng.random()
        if (position == 1 or (position > 4 and roll < 0.04)) and genus:
            return genus
        if (position == 2 or (position > 4 and roll < 0.14)) and subspecies:
            return subspecies[int(self.rng.integers(len(subspecies)))]
        if position == 4 and synonyms:
            return synonyms[0]
        return species_id

    def _add_observation(self, species_id: int, position: int) -> str:
        taxon = self.index.by_id[self._taxon_for(species_id, position)]
        has_coordinates = position != 3 and self.rng.random() > 0.06
        observed_on = None if self.rng.random() < 0.01 else self._day()
        if not has_coordinates or observed_on is None:
            grade = "casual"  # iNat's rule: no place or no date
        elif taxon.rank == "genus" or not taxon.active:
            grade = "needs_id"
        else:
            grade = "research" if self.rng.random() < 0.85 else "needs_id"
        center = REGIONS[species_id % len(REGIONS)]
        observation = _uuid(self.rng)
        self.tables.observations.append(_row(
            observation_uuid=observation,
            observer_id=self._observer(),
            latitude=round(center[0] + self.rng.normal(0, 1.5), 6) if has_coordinates else None,
            longitude=round(center[1] + self.rng.normal(0, 1.5), 6) if has_coordinates else None,
            positional_accuracy=int(self.rng.lognormal(3, 1.5)) + 1 if has_coordinates and self.rng.random() > 0.25 else None,
            taxon_id=taxon.taxon_id,
            quality_grade=grade,
            observed_on=observed_on,
            anomaly_score=round(float(self.rng.beta(1.2, 10)), 6),
        ))
        return observation

    def _day(self) -> date:
        return self.first_day + timedelta(days=int(self.rng.integers(0, (self.last_day - self.first_day).days + 1)))

    def _add_photos(self, observation: str, observer_id: str, count: int) -> None:
        for position in range(count):
            # The first photos ever drawn take every license and extension once.
            drawn = self.photos_drawn
            license_code = LICENSES[drawn] if drawn < len(LICENSES) else _pick(self.rng, LICENSE_WEIGHTS)
            extension = list(EXTENSION_WEIGHTS)[drawn] if drawn < len(EXTENSION_WEIGHTS) else _pick(self.rng, EXTENSION_WEIGHTS)
            width, height = _pick(self.rng, ORIGINAL_SIZES)
            self.tables.photos.append(_row(
                photo_uuid=_uuid(self.rng), photo_id=self.next_photo_id, observation_uuid=observation,
                observer_id=observer_id, extension=extension, license=license_code,
                width=width, height=height, position=position,
            ))
            self.next_photo_id += 1
            self.photos_drawn += 1


def deleted_upstream(seed: int, photo_id: int) -> bool:
    """Whether the images of a photo were deleted upstream (its row stays in photos.csv):
    about 2% of photos, and always the sixth photo id, so that every sample has one. A function
    of the seed and id alone, so that a later snapshot knows it too."""
    return photo_id == PHOTO_ID_START + 5 or np.random.default_rng([seed, photo_id, 5]).random() < MISSING_IMAGE_RATE


def _add_month(day: date) -> date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def resolve_snapshot(dest: Path, snapshot: date | str | os.PathLike) -> tuple[date, Path]:
    """The date and tarball of an earlier snapshot given as a date, ``YYYY-MM-DD``/``YYYYMMDD``,
    or the path to its dated tarball."""
    if isinstance(snapshot, date):
        day = snapshot
    else:
        text = os.fspath(snapshot)
        path = Path(text)
        if path.suffixes[-2:] == [".tar", ".gz"] or path.exists():
            day = parse_dated_tarball_key(path.name)
            if day is None or not path.is_file():
                raise SampleBucketError(f"--next {text}: not a dated snapshot tarball (metadata/inaturalist-open-data-YYYYMMDD.tar.gz)")
            return day, path
        try:
            day = date.fromisoformat(text) if "-" in text else date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError as error:
            raise SampleBucketError(f"--next {text}: not a date (YYYY-MM-DD or YYYYMMDD) nor a tarball path") from error
    tarball = dest / dated_tarball_key(day)
    if not tarball.is_file():
        raise SampleBucketError(
            f"--next {day}: {tarball} does not exist; generate that snapshot first "
            f"(bioasset sample-bucket {dest} --snapshot-date {day}) or pass the path of its tarball"
        )
    return day, tarball


def generate_sample_bucket(
    dest: str | os.PathLike,
    *,
    seed: int = 0,
    n_species: int = DEFAULT_N_SPECIES,
    photos_per_species: int = DEFAULT_PHOTOS_PER_SPECIES,
    snapshot_date: date | None = None,
    sizes: tuple[str, ...] = DEFAULT_SIZES,
    next_from: date | str | os.PathLike | None = None,
    workers: int | None = None,
) -> SampleBucketReport:
    """Write a sample bucket into the local folder ``dest``.

    Without ``next_from``: snapshot ``snapshot_date`` (default ``DEFAULT_SNAPSHOT_DATE``) with
    ``n_species`` species of ``photos_per_species`` photos each. With ``next_from`` (an earlier
    snapshot in ``dest``: its date or tarball path): a later snapshot, by default a month on,
    with about ``photos_per_species / 10`` new photos per species. Images of ``sizes`` are
    written for every new photo not deleted upstream (none for an empty ``sizes``: metadata
    only); ``workers`` processes draw them (default: up to the CPU count). Use the same ``seed``
    for ``next_from`` as for the earlier snapshot.
    """
    started = time.perf_counter()
    dest = Path(dest)
    if photos_per_species < 1:
        raise SampleBucketError(f"photos_per_species={photos_per_species}: pass 1 or more")
    unknown = [size for size in sizes if size not in IMAGE_SIZES]
    if unknown:
        raise SampleBucketError(f"sizes={list(sizes)}: {unknown} are not image sizes; pass some of {list(IMAGE_SIZES)}, or none for metadata only")
    dest.mkdir(parents=True, exist_ok=True)
    previous: date | None = None
    if next_from is None:
        snapshot = snapshot_date or DEFAULT_SNAPSHOT_DATE
        tables, index, changes = _first_snapshot(seed, n_species, photos_per_species, snapshot)
    else:
        previous, tarball = resolve_snapshot(dest, next_from)
        snapshot = snapshot_date or _add_month(previous)
        if snapshot <= previous:
            raise SampleBucketError(f"--snapshot-date {snapshot}: must come after the --next snapshot {previous}")
        tables, index, changes = _next_snapshot(read_tables(tarball), seed, photos_per_species, previous, snapshot)
    missing = sorted(int(p["photo_id"]) for p in tables.photos if deleted_upstream(seed, int(p["photo_id"])))
    remove_photo_images(dest, missing)
    # Images first, metadata last: a reader that sees the new tarball finds its photos.
    to_draw = _photos_to_draw(tables, index, set(changes["drawn_photo_ids"]), seed) if sizes else []
    images, image_bytes = write_photo_images(dest, to_draw, sizes, seed=seed, workers=workers)
    with staging_dir(dest) as raw_dir:
        for table, rows in tables.as_dict().items():
            write_table(raw_dir / f"{table}.csv", table, rows)
        published = publish_snapshot(dest, snapshot, raw_dir)
    report = _report(dest, snapshot, previous, published, tables, index, sizes, images, missing, changes)
    report.bytes_written = published.bytes_written + image_bytes
    report.elapsed_s = time.perf_counter() - started
    return report


def _photos_to_draw(tables: _Tables, index: TaxonIndex, drawn: set[int], seed: int) -> list[PhotoToDraw]:
    """The photos among ``drawn`` whose images exist, each with the species its photos show."""
    taxon_of_observation = {o["observation_uuid"]: int(o["taxon_id"]) for o in tables.observations}
    to_draw = []
    for photo in tables.photos:
        photo_id = int(photo["photo_id"])
        if photo_id in drawn and not deleted_upstream(seed, photo_id):
            taxon_id = taxon_of_observation[photo["observation_uuid"]]
            species_id = index.species_shown(taxon_id) or taxon_id
            to_draw.append(PhotoToDraw(photo_id, photo["extension"], int(photo["width"]), int(photo["height"]), species_id))
    return to_draw


def _first_snapshot(seed: int, n_species: int, photos_per_species: int, snapshot: date):
    rng = np.random.default_rng([seed, snapshot.toordinal()])
    taxa = sample_taxa(n_species, seed=seed)
    species = [taxon.taxon_id for taxon in sample_species(n_species, seed=seed)]
    index = TaxonIndex(taxa, species)
    tables = _Tables(taxa=[taxon_row(taxon) for taxon in taxa])
    n_observers = max(len(SPECIAL_OBSERVERS) + 4, n_species * photos_per_species // 8)
    tables.observers = list(observer_rows(rng, observer_ids(rng, n_observers, first_id=1000), with_specials=True))
    tables.projects = [_row(project_id=pid, title=title, project_type=kind) for pid, title, kind in PROJECTS]
    generator = _Generator(rng, index, [int(o["observer_id"]) for o in tables.observers],
                           snapshot - timedelta(days=3 * 365), snapshot - timedelta(days=1), PHOTO_ID_START, tables)
    for species_id in species:
        generator.add_species(species_id, photos_per_species)
    return tables, index, {"drawn_photo_ids": [int(p["photo_id"]) for p in tables.photos]}


def _next_snapshot(old: dict[str, list[Row]], seed: int, photos_per_species: int, previous: date, snapshot: date):
    rng = np.random.default_rng([seed, snapshot.toordinal(), previous.toordinal()])
    taxa = [taxon_from_row(row) for row in old["taxa"]]
    index = TaxonIndex(taxa, _species_with_observations(old["observations"], taxa))
    tables = _Tables(**{table: [dict(row) for row in rows] for table, rows in old.items()})
    removed, removed_photos = _remove_some_observations(tables, rng)
    reidentified = _reidentify(tables.observations, index, rng)
    license_changes = _change_some_licenses(tables.photos, rng)

    # New observers and observations, photographed since the previous snapshot.
    last_observer = max(int(o["observer_id"]) for o in tables.observers)
    tables.observers += observer_rows(rng, observer_ids(rng, 3, first_id=last_observer + 1), with_specials=False)
    observers = [int(o["observer_id"]) for o in tables.observers]
    first_new_photo = max(int(p["photo_id"]) for p in old["photos"]) + 1
    generator = _Generator(rng, index, observers, previous, snapshot - timedelta(days=1), first_new_photo, tables, photos_drawn=len(LICENSES))
    new_observations = []
    for species_id in index.observed_species:
        new_observations += generator.add_species(species_id, max(1, round(photos_per_species / 10)))
    new_photo_ids = list(range(first_new_photo, generator.next_photo_id))
    return tables, index, {
        "drawn_photo_ids": new_photo_ids,
        "new_observations": new_observations,
        "new_photo_ids": new_photo_ids,
        "removed_observations": removed,
        "removed_photo_ids": removed_photos,
        "reidentified_observations": reidentified,
        "license_changes": license_changes,
    }


def _species_with_observations(observations: list[Row], taxa: list[Taxon]) -> set[int]:
    """Active species observed at species or subspecies rank."""
    by_id = {taxon.taxon_id: taxon for taxon in taxa}
    out = set()
    for observation in observations:
        taxon = by_id.get(int(observation["taxon_id"]))
        if taxon is not None and taxon.active and taxon.rank in ("species", "subspecies"):
            out.add(taxon.taxon_id if taxon.rank == "species" else taxon.parent_id)
    return out


def _remove_some_observations(tables: _Tables, rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Remove about 3% of observations (at least one) with their photos and project links."""
    removed = {o["observation_uuid"] for o in tables.observations if rng.random() < 0.03} or {tables.observations[-1]["observation_uuid"]}
    removed_photos = [int(p["photo_id"]) for p in tables.photos if p["observation_uuid"] in removed]
    tables.observations = [o for o in tables.observations if o["observation_uuid"] not in removed]
    tables.photos = [p for p in tables.photos if p["observation_uuid"] not in removed]
    tables.observations_projects = [link for link in tables.observations_projects if link["observation_uuid"] not in removed]
    return sorted(removed), sorted(removed_photos)


def _change_some_licenses(photos: list[Row], rng: np.random.Generator) -> dict[int, tuple[str, str]]:
    """Relicense about 4% of photos (at least one), as observers change their defaults."""
    changes: dict[int, tuple[str, str]] = {}
    for photo in photos:
        if rng.random() < 0.04 or not changes and photo is photos[-1]:
            new_license = LICENSES[(LICENSES.index(photo["license"]) + int(rng.integers(1, len(LICENSES)))) % len(LICENSES)]
            changes[int(photo["photo_id"])] = (photo["license"], new_license)
            photo["license"] = new_license
    return changes


def _reidentify(observations: list[Row], index: TaxonIndex, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """Re-identify some observations to another taxon, always to one their photos show:
    genus-level ids and inactive synonyms to the species, species to a subspecies, and a few
    representative species back to their genus (an id withdrawn in a dispute)."""
    changes: dict[str, tuple[int, int]] = {}
    for observation in observations:
        taxon_id = int(observation["taxon_id"])
        taxon = index.by_id.get(taxon_id)
        shown = index.species_shown(taxon_id)
        if taxon is None or shown is None:
            continue
        roll = rng.random()
        new_taxon = None
        if (taxon.rank == "genus" or not taxon.active) and roll < 0.5:
            new_taxon = shown
        elif taxon_id == shown and roll < 0.03 and index.subspecies_of(shown):
            new_taxon = index.subspecies_of(shown)[0]
        elif taxon_id == shown and roll > 0.99 and index.representative_genus(shown):
            new_taxon = index.representative_genus(shown)
        if new_taxon is not None:
            changes[observation["observation_uuid"]] = (taxon_id, new_taxon)
    if not changes:  # always at least one: the first observation a representative species has
        for observation in observations:
            genus = index.representative_genus(int(observation["taxon_id"]))
            if genus:
                changes[observation["observation_uuid"]] = (int(observation["taxon_id"]), genus)
                break
    for observation in observations:
        if observation["observation_uuid"] in changes:
            new_taxon = changes[observation["observation_uuid"]][1]
            observation["taxon_id"] = str(new_taxon)
            placed = observation["latitude"] and observation["observed_on"]
            species_level = index.by_id[new_taxon].rank in ("species", "subspecies")
            observation["quality_grade"] = "casual" if not placed else "research" if species_level else "needs_id"
    return changes


def _report(dest, snapshot, previous, published, tables: _Tables, index: TaxonIndex, sizes, images, deleted, changes) -> SampleBucketReport:
    photo_counts = Counter(p["observation_uuid"] for p in tables.photos)

    def by_rank(rank: str) -> list[str]:
        return [o["observation_uuid"] for o in tables.observations if index.by_id[int(o["taxon_id"])].rank == rank]

    return SampleBucketReport(
        dest=dest,
        snapshot_date=snapshot,
        previous_snapshot_date=previous,
        is_latest=published.is_latest,
        tarball=published.tarball,
        row_counts={table: len(rows) for table, rows in tables.as_dict().items()},
        species_ids=index.observed_species,
        sizes=tuple(sizes),
        images_written=images,
        missing_image_photo_ids=deleted,
        observations_without_coordinates=[o["observation_uuid"] for o in tables.observations if not o["latitude"]],
        multi_photo_observations=sorted(obs for obs, n in photo_counts.items() if n > 1),
        genus_level_observations=by_rank("genus"),
        subspecies_observations=by_rank("subspecies"),
        inactive_taxon_observations=[o["observation_uuid"] for o in tables.observations if not index.by_id[int(o["taxon_id"])].active],
        inactive_taxon_ids=index.inactive_ids(),
        subspecies_taxon_ids=index.subspecies_ids(),
        homonym_genera=index.homonym_genera(),
        species_missing_main_ranks=index.species_missing_main_ranks(),
        licenses=dict(sorted(Counter(p["license"] for p in tables.photos).items())),
        extensions=dict(sorted(Counter(p["extension"] for p in tables.photos).items())),
        quality_grades=dict(sorted(Counter(o["quality_grade"] for o in tables.observations).items())),
        new_observations=changes.get("new_observations", []),
        new_photo_ids=changes.get("new_photo_ids", []),
        removed_observations=changes.get("removed_observations", []),
        removed_photo_ids=changes.get("removed_photo_ids", []),
        reidentified_observations=changes.get("reidentified_observations", {}),
        license_changes=changes.get("license_changes", {}),
    )
