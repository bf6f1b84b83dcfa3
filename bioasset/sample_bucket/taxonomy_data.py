"""The taxa of the sample bucket: a small real iNaturalist tree, and synthetic species under it.

The catalogue uses real iNaturalist taxon ids and names. Ids marked ``# checked`` were checked
against iNaturalist API responses (ancestor_ids) quoted in public code; the others are given as
best we know them. The tree holds every shape of taxon row that downstream code must handle:

- ranks between the main ranks (epifamily, subgenus, tribe, zoosection, and zoosubsection, whose
  rank_level is 33.5);
- a species whose ancestry skips a main rank (Lycorma has no family here);
- subspecies, inactive taxa, and a subgenus with the same name as its genus (Apis);
- genus homonyms across kingdoms: Morus (mulberry, Plantae; gannets, Aves) and Pieris
  (Ericaceae, Plantae; whites, Lepidoptera).

Larger samples and the scale mode add synthetic species (ids from ``SYNTHETIC_ID_START``) with
Latin-looking names, under the real orders and families.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from bioasset.inat_format import INSECTA_TAXON_ID, LIFE_TAXON_ID, MAIN_RANKS
from bioasset.sample_bucket.errors import SampleBucketError

#: iNaturalist's Taxon::RANK_LEVELS.
RANK_LEVELS: dict[str, float] = {
    "stateofmatter": 100, "kingdom": 70, "subkingdom": 67, "phylum": 60, "subphylum": 57,
    "superclass": 53, "class": 50, "subclass": 47, "infraclass": 45, "subterclass": 44,
    "superorder": 43, "order": 40, "suborder": 37, "infraorder": 35, "parvorder": 34.5,
    "zoosection": 34, "zoosubsection": 33.5, "superfamily": 33, "epifamily": 32, "family": 30,
    "subfamily": 27, "supertribe": 26, "tribe": 25, "subtribe": 24, "genus": 20, "subgenus": 15,
    "section": 13, "subsection": 12, "complex": 11, "species": 10, "hybrid": 10,
    "subspecies": 5, "variety": 5, "form": 5,
}

SYNTHETIC_ID_START = 90_000_000


@dataclass(frozen=True)
class Taxon:
    taxon_id: int
    parent_id: int | None
    rank: str
    name: str
    ancestry: str
    active: bool = True

    @property
    def rank_level(self) -> float:
        return RANK_LEVELS[self.rank]

    @property
    def ancestor_ids(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.ancestry.split("/")) if self.ancestry else ()

    @property
    def slug(self) -> str:
        """``{id}-{name}``, lowercase with dashes, e.g. ``47355-popillia-japonica``."""
        return f"{self.taxon_id}-{re.sub(r'[^a-z0-9]+', '-', self.name.lower()).strip('-')}"


# (taxon_id, parent_id, rank, name[, active]) in tree order: parents before children.
_CATALOGUE_ROWS: tuple[tuple, ...] = (
    (LIFE_TAXON_ID, None, "stateofmatter", "Life"),  # checked
    (1, 48460, "kingdom", "Animalia"),  # checked
    (47120, 1, "phylum", "Arthropoda"),  # checked
    (372739, 47120, "subphylum", "Hexapoda"),  # checked
    (INSECTA_TAXON_ID, 372739, "class", "Insecta"),  # checked
    (184884, 47158, "subclass", "Pterygota"),  # checked
    # Hymenoptera: the honey bee and a bumble bee.
    (47201, 184884, "order", "Hymenoptera"),  # checked
    (124417, 47201, "suborder", "Apocrita"),  # checked
    (326777, 124417, "infraorder", "Aculeata"),  # checked
    (47222, 326777, "superfamily", "Apoidea"),  # checked
    (630955, 47222, "epifamily", "Anthophila"),  # checked
    (47221, 630955, "family", "Apidae"),  # checked
    (199939, 47221, "subfamily", "Apinae"),  # checked
    (538904, 199939, "tribe", "Apini"),  # checked
    (47220, 538904, "genus", "Apis"),  # checked
    (578086, 47220, "subgenus", "Apis"),  # checked; same name as its genus
    (47219, 578086, "species", "Apis mellifera"),  # checked
    (237562, 47219, "subspecies", "Apis mellifera ligustica"),
    (237563, 47219, "subspecies", "Apis mellifera mellifera"),
    (1316041, 578086, "species", "Apis mellifica", False),  # an old spelling, inactive
    (538883, 199939, "tribe", "Bombini"),  # checked
    (52775, 538883, "genus", "Bombus"),  # checked
    (538900, 52775, "subgenus", "Pyrobombus"),  # checked
    (118970, 538900, "species", "Bombus impatiens"),  # checked
    # Lepidoptera: monarch, red admiral, painted lady, cabbage white.
    (47157, 184884, "order", "Lepidoptera"),  # checked
    (47224, 47157, "superfamily", "Papilionoidea"),  # checked
    (47922, 47224, "family", "Nymphalidae"),  # checked
    (61244, 47922, "subfamily", "Danainae"),  # checked
    (134169, 61244, "tribe", "Danaini"),  # checked
    (522900, 134169, "subtribe", "Danaina"),  # checked
    (48663, 522900, "genus", "Danaus"),  # checked
    (48662, 48663, "species", "Danaus plexippus"),  # checked
    (235550, 48662, "subspecies", "Danaus plexippus plexippus"),
    (202067, 47922, "subfamily", "Nymphalinae"),  # checked
    (202066, 202067, "tribe", "Nymphalini"),  # checked
    (48507, 202066, "genus", "Vanessa"),  # checked
    (49133, 48507, "species", "Vanessa atalanta"),  # checked
    (48548, 48507, "species", "Vanessa cardui"),
    (1205428, 202066, "genus", "Pyrameis", False),  # an old genus of Vanessa, inactive
    (52747, 47224, "family", "Pieridae"),
    (53746, 52747, "subfamily", "Pierinae"),
    (55401, 53746, "genus", "Pieris"),
    (55626, 55401, "species", "Pieris rapae"),  # checked
    # Coleoptera: Japanese beetle and two lady beetles.
    (47208, 184884, "order", "Coleoptera"),  # checked
    (71130, 47208, "suborder", "Polyphaga"),
    (47730, 71130, "superfamily", "Scarabaeoidea"),
    (47731, 47730, "family", "Scarabaeidae"),
    (47732, 47731, "subfamily", "Rutelinae"),
    (47354, 47732, "genus", "Popillia"),
    (47355, 47354, "species", "Popillia japonica"),
    (1007329, 71130, "superfamily", "Coccinelloidea"),
    (48486, 1007329, "family", "Coccinellidae"),
    (48485, 48486, "genus", "Coccinella"),
    (48484, 48485, "species", "Coccinella septempunctata"),
    (48434, 48486, "genus", "Harmonia"),
    (48435, 48434, "species", "Harmonia axyridis"),
    # Hemiptera: brown marmorated stink bug, spotted lanternfly.
    (47744, 184884, "order", "Hemiptera"),
    (61267, 47744, "suborder", "Heteroptera"),
    (61268, 61267, "superfamily", "Pentatomoidea"),
    (81769, 61268, "family", "Pentatomidae"),
    (81922, 81769, "genus", "Halyomorpha"),
    (81923, 81922, "species", "Halyomorpha halys"),
    (125816, 47744, "suborder", "Auchenorrhyncha"),
    (50190, 125816, "superfamily", "Fulgoroidea"),
    # Lycorma sits under its superfamily: the family rank is skipped on purpose, as iNat
    # ancestries sometimes do, so that taxonomy code meets a null family.
    (324725, 50190, "genus", "Lycorma"),
    (324726, 324725, "species", "Lycorma delicatula"),  # checked
    # Diptera: a blow fly, under a zoosection (34) and a zoosubsection (33.5).
    (47822, 184884, "order", "Diptera"),
    (47823, 47822, "suborder", "Brachycera"),
    (372810, 47823, "zoosection", "Schizophora"),
    (372811, 372810, "zoosubsection", "Calyptratae"),
    (356157, 372811, "superfamily", "Oestroidea"),
    (49500, 356157, "family", "Calliphoridae"),
    (49501, 49500, "genus", "Lucilia"),
    (61300, 49501, "species", "Lucilia sericata"),
    # Aves: the gannet genus Morus.
    (2, 1, "phylum", "Chordata"),  # checked
    (355675, 2, "subphylum", "Vertebrata"),  # checked
    (3, 355675, "class", "Aves"),  # checked
    (573797, 3, "order", "Suliformes"),
    (4326, 573797, "family", "Sulidae"),
    (4337, 4326, "genus", "Morus"),
    (4338, 4337, "species", "Morus bassanus"),
    # Plantae: the mulberry genus Morus and the shrub genus Pieris.
    (47126, 48460, "kingdom", "Plantae"),  # checked
    (211194, 47126, "phylum", "Tracheophyta"),  # checked
    (47125, 211194, "subphylum", "Angiospermae"),  # checked
    (47124, 47125, "class", "Magnoliopsida"),  # checked
    (47153, 47124, "order", "Rosales"),
    (51343, 47153, "family", "Moraceae"),
    (54640, 51343, "genus", "Morus"),
    (54641, 54640, "species", "Morus alba"),
    (47588, 47124, "order", "Ericales"),
    (48894, 47588, "family", "Ericaceae"),
    (55829, 48894, "genus", "Pieris"),
    (82798, 55829, "species", "Pieris japonica"),
)

#: The species that get observations, in the order ``n_species`` takes them: insects first
#: (the demo's dataset is rooted at Insecta), then the homonym non-insects.
CATALOGUE_SPECIES_IDS: tuple[int, ...] = (
    47355,  # Popillia japonica
    48484,  # Coccinella septempunctata
    48435,  # Harmonia axyridis
    47219,  # Apis mellifera
    118970,  # Bombus impatiens
    48662,  # Danaus plexippus
    49133,  # Vanessa atalanta
    48548,  # Vanessa cardui
    55626,  # Pieris rapae
    81923,  # Halyomorpha halys
    324726,  # Lycorma delicatula
    61300,  # Lucilia sericata
    4338,  # Morus bassanus
    54641,  # Morus alba
    82798,  # Pieris japonica
)


def _build(rows) -> dict[int, Taxon]:
    taxa: dict[int, Taxon] = {}
    for row in rows:
        taxon_id, parent_id, rank, name = row[:4]
        active = row[4] if len(row) > 4 else True
        if taxon_id in taxa:
            raise ValueError(f"taxon id {taxon_id} ({name}) appears twice in the sample catalogue")
        if parent_id is None:
            ancestry = ""
        else:
            parent = taxa[parent_id]
            ancestry = f"{parent.ancestry}/{parent_id}" if parent.ancestry else str(parent_id)
        taxa[taxon_id] = Taxon(taxon_id, parent_id, rank, name, ancestry, active)
    return taxa


@cache
def catalogue() -> dict[int, Taxon]:
    """The real-id catalogue, by taxon id, in tree order."""
    return _build(_CATALOGUE_ROWS)


# --- synthetic taxa --------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ra", "te", "no", "vi", "su", "pha", "tho", "ly", "cer", "don",
              "bra", "gi", "phe", "ro", "xa", "mel", "tri", "ops", "cu", "le", "an", "dro", "si")
_GENUS_ENDINGS = ("us", "a", "ia", "opsis", "ella", "on", "ina", "ides")
_EPITHET_ENDINGS = ("ensis", "us", "a", "ii", "ata", "icus", "oides", "alis")

#: Real parents of synthetic families, weighted by how many families each gets.
_SYNTHETIC_FAMILY_PARENTS = {47208: 8, 47157: 8, 47201: 5, 47744: 4, 47822: 4, 573797: 1, 47153: 1, 47588: 1}

#: The real family that the scale mode fills to about 1% of photos (a subtree to benchmark).
ONE_PERCENT_FAMILY_ID = 47731  # Scarabaeidae


def _latin_word(rng: np.random.Generator, endings: tuple[str, ...]) -> str:
    syllables = rng.choice(len(_SYLLABLES), size=int(rng.integers(2, 4)))
    return "".join(_SYLLABLES[i] for i in syllables) + endings[int(rng.integers(len(endings)))]


@dataclass(frozen=True)
class SyntheticTree:
    """Synthetic taxa under the catalogue: ``taxa`` in tree order, ``species_ids`` in the
    order that samples take them."""

    taxa: tuple[Taxon, ...]
    species_ids: tuple[int, ...]


@cache
def synthetic_tree(n_families: int = 32, seed: int = 0) -> SyntheticTree:
    """Families under real orders, genera under them (a few straight under an order, skipping
    the family), and species: about 15 species per family. Also genera under the real
    ``ONE_PERCENT_FAMILY_ID``. Deterministic for ``(n_families, seed)``."""
    rng = np.random.default_rng([seed, 7])
    real = catalogue()
    rows: list[tuple] = []
    species_ids: list[int] = []
    next_id = SYNTHETIC_ID_START
    parents = [pid for pid, weight in _SYNTHETIC_FAMILY_PARENTS.items() for _ in range(weight)]
    # (parent of the family, family id or None for a new synthetic family)
    families: list[tuple[int, int | None]] = [(parents[i % len(parents)], None) for i in range(n_families)]
    families.append((real[ONE_PERCENT_FAMILY_ID].parent_id, ONE_PERCENT_FAMILY_ID))
    for family_parent_id, family_id in families:
        is_new_family = family_id is None
        if is_new_family:
            family_id = next_id
            next_id += 1
            rows.append((family_id, family_parent_id, "family", _latin_word(rng, ("idae",)).capitalize()))
        for _ in range(int(rng.integers(3, 8))):
            genus_id = next_id
            next_id += 1
            # About one genus in 25 hangs straight under the order: its family is unknown.
            skip_family = is_new_family and rng.random() < 0.04
            genus_name = _latin_word(rng, _GENUS_ENDINGS).capitalize()
            rows.append((genus_id, family_parent_id if skip_family else family_id, "genus", genus_name))
            for _ in range(int(rng.integers(1, 6))):
                species_id = next_id
                next_id += 1
                species_name = f"{genus_name} {_latin_word(rng, _EPITHET_ENDINGS)}"
                rows.append((species_id, genus_id, "species", species_name))
                species_ids.append(species_id)
                if rng.random() < 0.03:
                    rows.append((next_id, species_id, "subspecies", f"{species_name} {_latin_word(rng, _EPITHET_ENDINGS)}"))
                    next_id += 1
    seeded = _build(list(_CATALOGUE_ROWS) + rows)
    synthetic = tuple(taxon for taxon_id, taxon in seeded.items() if taxon_id >= SYNTHETIC_ID_START)
    order = rng.permutation(len(species_ids))
    return SyntheticTree(synthetic, tuple(species_ids[i] for i in order))


# --- what a sample holds ---------------------------------------------------------------------


def _tree_for(n_synthetic_species: int, seed: int) -> SyntheticTree:
    """A synthetic tree big enough for ``n_synthetic_species`` (families hold about 15)."""
    return synthetic_tree(n_families=max(32, n_synthetic_species // 10 + 1), seed=seed)


def sample_species(n_species: int = len(CATALOGUE_SPECIES_IDS), *, seed: int = 0) -> list[Taxon]:
    """The species that a sample bucket with ``n_species`` classes gives observations, in order:
    the catalogue species first, then synthetic ones."""
    if n_species < 1:
        raise SampleBucketError(f"n_species={n_species}: a sample needs at least one species; pass 1 or more")
    real = catalogue()
    species = [real[taxon_id] for taxon_id in CATALOGUE_SPECIES_IDS[:n_species]]
    extra = n_species - len(species)
    if extra > 0:
        tree = _tree_for(extra, seed)
        if extra > len(tree.species_ids):
            raise SampleBucketError(
                f"n_species={n_species}: the synthetic tree holds only {len(tree.species_ids)} species beyond the "
                f"{len(CATALOGUE_SPECIES_IDS)} real ones; pass at most {len(CATALOGUE_SPECIES_IDS) + len(tree.species_ids)}"
            )
        by_id = {taxon.taxon_id: taxon for taxon in tree.taxa}
        species += [by_id[taxon_id] for taxon_id in tree.species_ids[:extra]]
    return species


def sample_taxa(n_species: int = len(CATALOGUE_SPECIES_IDS), *, seed: int = 0) -> list[Taxon]:
    """The rows of taxa.csv for a sample: the whole catalogue (as the real export holds taxa with
    no observations too), plus synthetic species beyond the catalogue with their ancestors."""
    taxa = dict(catalogue())
    species = sample_species(n_species, seed=seed)
    synthetic = [taxon for taxon in species if taxon.taxon_id >= SYNTHETIC_ID_START]
    if synthetic:
        tree = _tree_for(len(synthetic), seed)
        by_id = {taxon.taxon_id: taxon for taxon in tree.taxa}
        for taxon in synthetic:
            for taxon_id in (*taxon.ancestor_ids, taxon.taxon_id):
                if taxon_id in by_id:
                    taxa[taxon_id] = by_id[taxon_id]
        chosen = {taxon.taxon_id for taxon in synthetic}
        for taxon in tree.taxa:  # subspecies of the chosen synthetic species
            if taxon.rank == "subspecies" and taxon.parent_id in chosen:
                taxa[taxon.taxon_id] = taxon
    return sorted(taxa.values(), key=lambda taxon: taxon.taxon_id)


def root_taxon(species: list[Taxon], taxa: list[Taxon]) -> Taxon:
    """The deepest taxon whose subtree holds every one of ``species`` (Pterygota for the
    catalogue's insects, Life for the whole catalogue)."""
    by_id = {taxon.taxon_id: taxon for taxon in taxa}
    paths = [(*taxon.ancestor_ids, taxon.taxon_id) for taxon in species]
    common = paths[0]
    for path in paths[1:]:
        length = 0
        while length < min(len(common), len(path)) and common[length] == path[length]:
            length += 1
        common = common[:length]
    return by_id[common[-1]]


def missing_main_ranks(taxon: Taxon, taxa_by_id: dict[int, Taxon]) -> list[str]:
    """The main ranks above ``taxon`` (kingdom down to its own rank) that its ancestry lacks."""
    present = {taxa_by_id[ancestor].rank for ancestor in taxon.ancestor_ids if ancestor in taxa_by_id}
    expected = MAIN_RANKS[: MAIN_RANKS.index(taxon.rank)] if taxon.rank in MAIN_RANKS else MAIN_RANKS
    return [rank for rank in expected if rank not in present]
