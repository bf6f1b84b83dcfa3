"""Questions about a taxa table that the generator asks: which species an observation's taxon
stands for, a species' subspecies and inactive synonyms, the species a genus-level
observation turns out to be."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property

from bioasset.sample_bucket.taxonomy_data import Taxon, missing_main_ranks


def taxon_from_row(row: Mapping[str, str]) -> Taxon:
    """A Taxon from a taxa.csv row (fields as written)."""
    ancestry = row["ancestry"]
    parent = int(ancestry.rsplit("/", 1)[-1]) if ancestry else None
    return Taxon(int(row["taxon_id"]), parent, row["rank"], row["name"], ancestry, row["active"] == "true")


class TaxonIndex:
    """A taxa table, with the species that have observations (``observed_species``)."""

    def __init__(self, taxa: Iterable[Taxon], observed_species: Iterable[int]):
        self.by_id = {taxon.taxon_id: taxon for taxon in taxa}
        self.observed_species = sorted(set(observed_species))

    def genus_of(self, taxon_id: int) -> int | None:
        taxon = self.by_id[taxon_id]
        for ancestor in (taxon_id, *reversed(taxon.ancestor_ids)):
            if self.by_id.get(ancestor) and self.by_id[ancestor].rank == "genus":
                return ancestor
        return None

    @cached_property
    def _representatives(self) -> dict[int, int]:
        """Genus -> the observed species that its genus-level observations really show: the
        lowest id. The generator only files an observation under a genus (or an inactive
        synonym in that genus) when it shows this species, so that a later snapshot can
        re-identify it to the species its photos show."""
        out: dict[int, int] = {}
        for species_id in self.observed_species:
            genus = self.genus_of(species_id)
            if genus is not None:
                out.setdefault(genus, species_id)
        return out

    def representative_genus(self, species_id: int) -> int | None:
        """The genus of ``species_id`` if the species is that genus' representative."""
        genus = self.genus_of(species_id)
        return genus if genus is not None and self._representatives.get(genus) == species_id else None

    def subspecies_of(self, species_id: int) -> list[int]:
        return sorted(t.taxon_id for t in self.by_id.values() if t.rank == "subspecies" and t.parent_id == species_id and t.active)

    def inactive_synonyms_of(self, species_id: int) -> list[int]:
        """Inactive species in the genus that ``species_id`` represents."""
        genus = self.representative_genus(species_id)
        if genus is None:
            return []
        return sorted(
            t.taxon_id for t in self.by_id.values() if t.rank == "species" and not t.active and self.genus_of(t.taxon_id) == genus
        )

    def species_shown(self, taxon_id: int) -> int | None:
        """The observed species whose look the photos of an observation of ``taxon_id`` show:
        the species itself, the parent of a subspecies, the representative of a genus or of an
        inactive synonym's genus. None for a taxon no observed species stands behind."""
        taxon = self.by_id.get(taxon_id)
        if taxon is None:
            return None
        if taxon.rank == "subspecies":
            return self.species_shown(taxon.parent_id) if taxon.parent_id is not None else None
        if taxon.rank == "species" and taxon.active:
            return taxon_id if taxon_id in self._observed_set else None
        genus = self.genus_of(taxon_id)
        return self._representatives.get(genus) if genus is not None else None

    @cached_property
    def _observed_set(self) -> set[int]:
        return set(self.observed_species)

    def inactive_ids(self) -> list[int]:
        return sorted(t.taxon_id for t in self.by_id.values() if not t.active)

    def subspecies_ids(self) -> list[int]:
        return sorted(t.taxon_id for t in self.by_id.values() if t.rank == "subspecies")

    def homonym_genera(self) -> dict[str, list[int]]:
        """Genus names that more than one taxon carries (Morus, Pieris), with their ids."""
        names: dict[str, list[int]] = {}
        for taxon in self.by_id.values():
            if taxon.rank == "genus":
                names.setdefault(taxon.name, []).append(taxon.taxon_id)
        return {name: sorted(ids) for name, ids in sorted(names.items()) if len(ids) > 1}

    def species_missing_main_ranks(self) -> list[int]:
        """Species whose ancestry lacks a main rank (such as a family)."""
        return sorted(t.taxon_id for t in self.by_id.values() if t.rank == "species" and missing_main_ranks(t, self.by_id))
