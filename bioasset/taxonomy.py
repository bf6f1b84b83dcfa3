"""The taxonomy: every taxon with its kingdom … species (+ subspecies) and its path.

Plain Python over DuckDB (no Dagster). Ranks are matched on the ``rank`` string, as
iNaturalist's own Darwin Core export does: a genus placed directly under an order simply has a
null family. ``rank_level`` is kept as a float (33.5 and 34.5 exist) but never used for matching.

A taxon's *path* is its ancestry followed by its own id (``48460/1/47120/…/X``). The subtree of X
is every taxon whose path is X's path or starts with X's path and ``/``. Paths hold only digits and
``/``, and ``'0'`` is the character right after ``'/'``, so the subtree is exactly the string range
``path >= P AND path < P || '0'``: one range that Parquet min/max statistics prune when the table is
sorted by path.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import duckdb

from bioasset.inat_format import RANKS_WITH_SUBSPECIES
from bioasset.warehouse import Warehouse, require_table, sql_string

_PATH = re.compile(r"^\d+(/\d+)*$")

#: Columns of the ``taxonomy`` table, in order (``{rank}_id`` and ``{rank}`` for each main rank).
TAXONOMY_COLUMNS = (
    ["taxon_id", "name", "rank", "rank_level", "active", "parent_id", "ancestry", "path", "depth"]
    + [c for rank in RANKS_WITH_SUBSPECIES for c in (f"{rank}_id", rank)]
    + ["unresolved_ancestors"]
)


class TaxonomyError(Exception):
    pass


class UnknownTaxonError(TaxonomyError):
    pass


class AmbiguousTaxonError(TaxonomyError):
    pass


@dataclass
class TaxonomyBuild:
    path: Path
    rows: int
    inactive: int
    unresolved_taxa: int  # taxa with at least one ancestry id that is not a taxon
    unresolved_examples: list[tuple[int, str]]
    duplicate_taxon_ids: int
    taxa_per_rank: list[tuple[str, int]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


def taxonomy_query(taxa: str) -> str:
    """SQL of the taxonomy over the relation ``taxa`` (a table name or a ``read_parquet(…)`` call).

    Two steps keep it fast and within the memory limit on 1.5M taxa: integer ids of the main-rank
    ancestors first (one unnest of every path, one integer GROUP BY), then each rank's names through
    a join with only the taxa of that rank.
    """
    path = "CASE WHEN NULLIF(ancestry, '') IS NULL THEN taxon_id::VARCHAR ELSE ancestry || '/' || taxon_id::VARCHAR END"
    rank_index = "CASE rank " + " ".join(f"WHEN {sql_string(r)} THEN {i}" for i, r in enumerate(RANKS_WITH_SUBSPECIES)) + " END"
    rank_ids = ", ".join(
        f"max_by(a.taxon_id, s.depth) FILTER (WHERE a.rank_index = {i}) AS {r}_id" for i, r in enumerate(RANKS_WITH_SUBSPECIES)
    )
    rank_columns = ", ".join(f'ids.{r}_id, n_{r}.name AS "{r}"' for r in RANKS_WITH_SUBSPECIES)
    name_joins = "\n    ".join(
        f"LEFT JOIN (SELECT taxon_id, name FROM {taxa} WHERE rank = {sql_string(r)}) n_{r} ON n_{r}.taxon_id = ids.{r}_id"
        for r in RANKS_WITH_SUBSPECIES
    )
    return f"""
    WITH ids AS NOT MATERIALIZED (
        SELECT s.taxon_id, {rank_ids},
               count(*) FILTER (WHERE a.taxon_id IS NULL) AS unresolved_ancestors
        FROM (SELECT taxon_id, TRY_CAST(unnest(ids) AS INTEGER) AS ancestor_id, generate_subscripts(ids, 1) AS depth
              FROM (SELECT taxon_id, string_split({path}, '/') AS ids FROM {taxa})) s
        LEFT JOIN (SELECT taxon_id, {rank_index} AS rank_index FROM {taxa}) a ON a.taxon_id = s.ancestor_id
        GROUP BY s.taxon_id
    )
    SELECT t.taxon_id, t.name, t.rank, t.rank_level, t.active,
           TRY_CAST(string_split(t.ancestry, '/')[-1] AS INTEGER) AS parent_id,
           t.ancestry, t.path, len(string_split(t.path, '/')) AS depth,
           {rank_columns},
           ids.unresolved_ancestors
    FROM (SELECT taxon_id, name, rank, rank_level, active, NULLIF(ancestry, '') AS ancestry, {path} AS path FROM {taxa}) t
    JOIN ids USING (taxon_id)
    {name_joins}
    ORDER BY t.path
    """


def build_taxonomy(warehouse: Warehouse, taxa_path: Path, dest: Path) -> TaxonomyBuild:
    """Write the ``taxonomy`` table (sorted by path) from the ``taxa`` Parquet file."""
    started = time.perf_counter()
    taxa = require_table(taxa_path)
    with warehouse.connect() as con:
        rows = warehouse.copy_to_parquet(con, taxonomy_query(taxa), dest)
        taxonomy = f"read_parquet({sql_string(str(dest))})"
        inactive, unresolved = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT active), count(*) FILTER (WHERE unresolved_ancestors > 0) FROM {taxonomy}"
        ).fetchall()[0]
        examples = con.execute(
            f"SELECT taxon_id, ancestry FROM {taxonomy} WHERE unresolved_ancestors > 0 ORDER BY taxon_id LIMIT 10"
        ).fetchall()
        duplicates = con.execute(f"SELECT count(*) - count(DISTINCT taxon_id) FROM {taxa}").fetchall()[0][0]
        per_rank = con.execute(
            f"SELECT coalesce(rank, '(none)'), count(*) FROM {taxonomy} GROUP BY ALL ORDER BY 2 DESC, 1"
        ).fetchall()
    return TaxonomyBuild(
        path=dest,
        rows=rows,
        inactive=int(inactive),
        unresolved_taxa=int(unresolved),
        unresolved_examples=[(int(i), str(a)) for i, a in examples],
        duplicate_taxon_ids=int(duplicates),
        taxa_per_rank=[(str(r), int(n)) for r, n in per_rank],
        elapsed_s=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Subtrees
# ---------------------------------------------------------------------------------------------


def subtree_predicate(path: str, column: str = "taxon_path") -> str:
    """SQL predicate: ``column`` lies in the subtree whose root has taxon path ``path``.

    Equivalent to ``column = P OR column LIKE P || '/%'``, written as one string range so that
    Parquet row groups sorted by path are pruned by their min/max statistics.
    """
    if not _PATH.match(path or ""):
        raise TaxonomyError(f"{path!r} is not a taxon path (ids joined by '/'). Fix: pass the `path` column of taxonomy.")
    return f"({column} >= '{path}' AND {column} < '{path}0')"


def subtree_predicates(paths: Iterable[str], column: str = "taxon_path") -> str:
    """OR of :func:`subtree_predicate` over several subtree roots (``false`` for none)."""
    parts = [subtree_predicate(p, column) for p in sorted(set(paths))]
    return "(" + " OR ".join(parts) + ")" if parts else "false"


def taxon_paths(con: duckdb.DuckDBPyConnection, taxon_ids: int | Iterable[int], *, taxonomy: str = "taxonomy") -> dict[int, str]:
    """taxon id -> path, for each id; raises :class:`UnknownTaxonError` naming the ids not found."""
    ids = [int(taxon_ids)] if isinstance(taxon_ids, int) else [int(i) for i in taxon_ids]
    found = dict(
        con.execute(f"SELECT taxon_id, path FROM {taxonomy} WHERE taxon_id IN (SELECT unnest($ids))", {"ids": ids}).fetchall()
    )
    missing = [i for i in ids if i not in found]
    if missing:
        raise UnknownTaxonError(
            f"Taxon id(s) {missing} are not in {taxonomy}. Fix: check the ids on inaturalist.org/taxa, or ingest a "
            "newer snapshot if the taxa are new."
        )
    return {int(k): str(v) for k, v in found.items()}


def subtree_taxonomy_query(con: duckdb.DuckDBPyConnection, taxon_ids: int | Iterable[int], *, taxonomy: str = "taxonomy") -> str:
    """SQL selecting the taxa in the subtrees of ``taxon_ids`` (each taxon included)."""
    paths = taxon_paths(con, taxon_ids, taxonomy=taxonomy).values()
    return f"SELECT * FROM {taxonomy} WHERE {subtree_predicates(paths, 'path')}"


def find_taxa(
    con: duckdb.DuckDBPyConnection, name: str, *, rank: str | None = None, within: int | None = None, taxonomy: str = "taxonomy"
) -> list[dict]:
    """Every taxon called ``name`` (optionally of ``rank``, optionally inside the subtree of ``within``).

    Names are not unique: *Morus* and *Pieris* are genera of both plants and animals.
    """
    where = ["lower(name) = lower($name)"]
    params: dict = {"name": name}
    if rank:
        where.append("rank = $rank")
        params["rank"] = rank
    if within is not None:
        where.append(subtree_predicate(taxon_paths(con, within, taxonomy=taxonomy)[int(within)], "path"))
    cursor = con.execute(
        f"SELECT taxon_id, name, rank, active, kingdom, phylum, \"class\", \"order\", family, path FROM {taxonomy} "
        f"WHERE {' AND '.join(where)} ORDER BY NOT active, taxon_id",
        params,
    )
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def resolve_taxon(
    con: duckdb.DuckDBPyConnection, name: str, *, rank: str | None = None, within: int | None = None, taxonomy: str = "taxonomy"
) -> int:
    """The one active taxon called ``name``; raises naming the candidates when there are none or several."""
    matches = [t for t in find_taxa(con, name, rank=rank, within=within, taxonomy=taxonomy) if t["active"]]
    if len(matches) == 1:
        return int(matches[0]["taxon_id"])
    scope = f" of rank {rank}" if rank else ""
    scope += f" within taxon {within}" if within is not None else ""
    if not matches:
        raise UnknownTaxonError(f"No active taxon named {name!r}{scope} in {taxonomy}. Fix: check the spelling or use a taxon id.")
    listing = "; ".join(f"{t['taxon_id']} ({t['rank']}, {t['kingdom']} > {t['phylum']} > {t['class']} > {t['order']})" for t in matches)
    raise AmbiguousTaxonError(
        f"{len(matches)} active taxa are named {name!r}{scope}: {listing}. "
        "Fix: use the taxon id, or narrow it with rank= or within= (e.g. the kingdom's id)."
    )
