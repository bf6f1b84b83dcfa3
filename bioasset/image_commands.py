"""``bioasset images gc``: delete stored images that no current manifest and no frozen version uses.

A photo that left the snapshot, changed taxon or license, or fell out of a dataset leaves the
manifest at once, but its file stays in the image store (a frozen version may still need it, and
a photo that comes back is not downloaded again). ``gc`` lists the files of
``{store}/{source}/{size}/{photo_id}.{ext}`` that are referenced by no current manifest (at its
dataset's stored size) and by no frozen dataset version, and deletes them with ``--yes``
(``--dry-run``, the default, only shows them). Bookkeeping folders (``_journal``,
``_quarantine``) and files outside that layout are never touched.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import duckdb

from bioasset import config
from bioasset.download import ImageStore
from bioasset.registry import catalog
from bioasset.registry import manifest_path as version_manifest_path
from bioasset.selection import current_manifests, read_manifest_info
from bioasset.storage import join
from bioasset.warehouse import Warehouse, sql_string

DELETE_BATCH = 1000
SHOWN_PATHS = 20


class ImageGcError(RuntimeError):
    pass


@dataclass
class GcPlan:
    """What ``gc`` found: store files (relative to the store root) with their sizes."""

    store_url: str
    manifests: int
    versions: int
    referenced: int  # images some manifest or version uses
    kept: int  # store files that are referenced
    unreferenced: list[tuple[str, int]] = field(default_factory=list)
    other_files: int = 0  # files outside the {source}/{size}/{name} layout, left alone

    @property
    def unreferenced_bytes(self) -> int:
        return sum(size for _, size in self.unreferenced)


def referenced_images(warehouse: Warehouse) -> tuple[set[str], int, int]:
    """Store paths (relative to the root) that current manifests and frozen versions use, and how
    many manifests and versions there are."""
    parts = []
    manifests = current_manifests(warehouse)
    for path in manifests.values():
        info = read_manifest_info(path)
        # The engine's layout: {source}/{stored size}/{photo_id}.{lower-case extension}.
        prefix = sql_string(f"{info.source}/{info.stored_size}/")
        parts.append(f"SELECT {prefix} || photo_id::VARCHAR || '.' || lower(extension) AS path FROM read_parquet({sql_string(str(path))})")
    versions = catalog(warehouse)
    for version in versions:
        parts.append(
            f"SELECT image_path AS path FROM read_parquet({sql_string(str(version_manifest_path(warehouse, version)))}) "
            "WHERE image_path IS NOT NULL"
        )
    if not parts:
        return set(), 0, 0
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT DISTINCT path FROM ({' UNION ALL '.join(parts)})").fetchall()
    return {row[0] for row in rows}, len(manifests), len(versions)


def plan_gc(warehouse: Warehouse, store: ImageStore) -> GcPlan:
    """Compare the store's files with what is referenced; deletes nothing."""
    referenced, manifests, versions = referenced_images(warehouse)
    if manifests == 0 and versions == 0:
        raise ImageGcError(
            f"No dataset manifest and no frozen dataset version under {warehouse.root}, so every image would go. "
            "Fix: check --warehouse (it must be the warehouse whose datasets use this store); gc refuses to empty a store."
        )
    root = store.root.rstrip("/")
    plan = GcPlan(store.url, manifests, versions, len(referenced), 0)
    for path, info in sorted(store.fs.find(root, detail=True).items()):
        relative = path[len(root) + 1 :]
        if relative.startswith("_") or relative.count("/") != 2:
            plan.other_files += 1
        elif relative in referenced:
            plan.kept += 1
        else:
            plan.unreferenced.append((relative, int(info.get("size") or 0)))
    return plan


def delete_unreferenced(store: ImageStore, plan: GcPlan) -> int:
    """Delete the plan's unreferenced files; returns how many."""
    paths = [join(store.root, relative) for relative, _ in plan.unreferenced]
    for start in range(0, len(paths), DELETE_BATCH):
        store.fs.rm(paths[start : start + DELETE_BATCH])
    return len(paths)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    images = subparsers.add_parser("images", help="Maintain the image store.", description="Maintain the image store.")
    commands = images.add_subparsers(dest="images_command", metavar="COMMAND")
    commands.required = True
    gc = commands.add_parser(
        "gc",
        help="Delete stored images that no current manifest and no frozen dataset version uses.",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument("--warehouse", default=None, help="warehouse folder (default: BIOASSET_HOME/warehouse)")
    gc.add_argument("--image-store", default=None, help="image store URL (default: BIOASSET_HOME/images)")
    gc.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint of an s3:// image store")
    mode = gc.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show what would be deleted (the default)")
    mode.add_argument("--yes", action="store_true", help="delete the unreferenced images")
    gc.set_defaults(func=run_gc)


def run_gc(args: argparse.Namespace) -> int:
    warehouse = Warehouse(args.warehouse or config.warehouse_dir())
    store = ImageStore(args.image_store or config.image_store_url(), endpoint_url=args.endpoint_url)
    try:
        plan = plan_gc(warehouse, store)
    except ImageGcError as error:
        print(f"error: {error}")
        return 2
    print(
        f"Image store {plan.store_url}: {plan.kept} images in use by {plan.manifests} manifests and {plan.versions} "
        f"dataset versions; {len(plan.unreferenced)} unreferenced ({plan.unreferenced_bytes / 1e6:.1f} MB); "
        f"{plan.other_files} other files left alone."
    )
    for relative, size in plan.unreferenced[:SHOWN_PATHS]:
        print(f"  {relative}  ({size} bytes)")
    if len(plan.unreferenced) > SHOWN_PATHS:
        print(f"  ... and {len(plan.unreferenced) - SHOWN_PATHS} more")
    if not plan.unreferenced:
        return 0
    if not args.yes:
        print("Dry run: nothing deleted. Run again with --yes to delete them.")
        return 0
    deleted = delete_unreferenced(store, plan)
    print(f"Deleted {deleted} images ({plan.unreferenced_bytes / 1e6:.1f} MB).")
    return 0
