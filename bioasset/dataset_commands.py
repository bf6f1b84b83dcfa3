"""``bioasset datasets``: list, show, diff, export and verify the versions in the dataset registry."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bioasset import config
from bioasset.manifest_schema import SPLITS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    datasets = subparsers.add_parser(
        "datasets",
        help="dataset versions in the registry: list, show, diff, export, verify",
        description="Query the dataset registry (versions frozen by the dataset_version asset) and export versions.",
    )
    commands = datasets.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    commands.required = True

    listing = commands.add_parser("list", help="every version of every dataset", description="List every dataset version, newest last; '*' marks each dataset's latest.")
    _common_options(listing)
    listing.set_defaults(func=list_command)

    show = commands.add_parser(
        "show", help="one version: catalog row, classes, licenses, card",
        description="Show a version's catalog row, its per-class counts per split, its license breakdown and its card files.",
    )
    show.add_argument("ref", metavar="NAME[@VERSION]", help="a dataset, optionally @ a version (a unique prefix will do); default the latest")
    _common_options(show)
    show.set_defaults(func=show_command)

    diff = commands.add_parser(
        "diff", help="what changed between two versions",
        description="Photos added, removed, relabelled and moved between splits from NAME@A to NAME@B, per class and in total.",
    )
    diff.add_argument("old", metavar="NAME@A")
    diff.add_argument("new", metavar="NAME@B")
    _common_options(diff)
    diff.set_defaults(func=diff_command)

    export = commands.add_parser(
        "export", help="write a version as ImageFolder or WebDataset",
        description=(
            "Export a version to a new folder DEST: images (ImageFolder tree or WebDataset shards), classes.csv, "
            "attribution.csv and attribution.md, croissant.json and the dataset card."
        ),
    )
    export.add_argument("ref", metavar="NAME[@VERSION]")
    export.add_argument("dest", metavar="DEST", help="a folder that does not exist yet")
    export.add_argument("--format", required=True, choices=("imagefolder", "webdataset"))
    export.add_argument(
        "--nest-taxonomy", action="store_true",
        help="ImageFolder only: nest class folders as kingdom/phylum/.../class, as iNaturalist download tools do",
    )
    export.add_argument("--shard-size", type=int, default=1000, help="WebDataset images per shard (default 1000)")
    export.add_argument("--image-store", help="URL of the image store that image_path is relative to (default: BIOASSET_HOME/images)")
    _common_options(export)
    export.set_defaults(func=export_command)

    verify = commands.add_parser(
        "verify", help="check a version's images against their sha256; --repair downloads them again",
        description=(
            "Read every image of a version from the image store and compare it with the sha256 the version recorded. "
            "Exit status 0 when every image is intact, 1 when some are missing, changed or unreadable. With --repair, "
            "changed files are moved to _quarantine/ and the problem images are downloaded again from their source "
            "(with the resize the version's size folder names); an image whose source is unchanged comes back with the "
            "version's exact bytes. Do not repair while taxon_images runs for the same classes."
        ),
    )
    verify.add_argument("ref", metavar="NAME[@VERSION]")
    verify.add_argument("--repair", action="store_true", help="set changed files aside and download the problem images again")
    verify.add_argument("--image-store", help="URL of the image store that image_path is relative to (default: BIOASSET_HOME/images)")
    _common_options(verify)
    verify.set_defaults(func=verify_command)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", help="the warehouse folder (default: BIOASSET_HOME/warehouse)")
    parser.add_argument("--json", action="store_true", help="print JSON")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    from bioasset.registry import catalog

    return _run("list", lambda: _print_list(catalog(_warehouse(args)), args.json))


def show_command(args: argparse.Namespace) -> int:
    return _run("show", lambda: _show(args))


def diff_command(args: argparse.Namespace) -> int:
    return _run("diff", lambda: _diff(args))


def export_command(args: argparse.Namespace) -> int:
    return _run("export", lambda: _export(args))


def verify_command(args: argparse.Namespace) -> int:
    return _run("verify", lambda: _verify(args))


def _run(command: str, action: Any) -> int:
    """Run ``action``; a registry, export or verify error is printed as one message and exit
    status 1. An action may return its own exit status."""
    from bioasset.export import ExportError
    from bioasset.registry import RegistryError
    from bioasset.version_verify import VerifyError

    try:
        status = action()
    except (RegistryError, ExportError, VerifyError) as error:
        print(f"bioasset datasets {command}: {error}", file=sys.stderr)
        return 1
    return status or 0


def _warehouse(args: argparse.Namespace):
    from bioasset.registry import as_warehouse

    return as_warehouse(args.warehouse or config.warehouse_dir())


def _resolve(args: argparse.Namespace, ref: str):
    from bioasset.registry import parse_version_ref, resolve_version

    return resolve_version(_warehouse(args), *parse_version_ref(ref))


def _print_list(versions: list, as_json: bool) -> None:
    latest = {v.name: v.version for v in versions}  # catalog() orders by name, then sequence
    if as_json:
        print(json.dumps([{**v.to_dict(), "latest": latest[v.name] == v.version} for v in versions], indent=2))
        return
    if not versions:
        print("No dataset versions yet. Materialize the dataset_version asset of a dataset to freeze one.")
        return
    rows = [
        {
            "": "*" if latest[v.name] == v.version else "",
            "name": v.name, "version": v.version, "#": v.sequence, "created (UTC)": f"{v.created:%Y-%m-%d %H:%M}",
            "snapshot": v.snapshot or "", "classes": v.class_count, "images": v.images,
            **{split: v.images_per_split[split] for split in SPLITS},
            "+added": v.added, "-removed": v.removed, "relabelled": v.relabelled,
            "relicensed": "" if v.relicensed is None else v.relicensed, "parent": v.parent_version or "",
        }
        for v in versions
    ]
    print(format_table(rows))


def _show(args: argparse.Namespace) -> None:
    from bioasset.dataset_card import card_summary
    from bioasset.registry import catalog, class_split_counts, license_counts, manifest_path

    warehouse = _warehouse(args)
    version = _resolve(args, args.ref)
    manifest = manifest_path(warehouse, version)
    classes, licenses = class_split_counts(manifest), license_counts(manifest)
    card = {key: str(path) for key, path in card_summary(warehouse, version).paths.items() if path.exists()}
    is_latest = catalog(warehouse, version.name)[-1].version == version.version
    if args.json:
        report = {"version": version.to_dict(), "latest": is_latest, "manifest": str(manifest), "classes": classes, "licenses": licenses, "card": card}
        print(json.dumps(report, indent=2, default=str))
        return
    print(f"{version.ref}  (#{version.sequence}{', latest' if is_latest else ''})")
    for key, value in version.to_dict().items():
        if key not in ("name", "version"):
            print(f"  {key:<15} {'' if value is None else value}")
    print(f"  {'manifest':<15} {manifest}")
    print(f"\nImages per class and split ({len(classes)} classes):")
    print(format_table([{"class": c["label_name"], "taxon id": c["label_id"], **{s: c[s] for s in SPLITS}, "total": c["total"]} for c in classes]))
    print("\nLicenses:")
    print(format_table([{"license": r["license"], "images": r["images"], "share %": r["percent"]} for r in licenses]))
    print("\nCard:")
    for key, path in card.items() or [("", "(no card files)")]:
        print(f"  {key:<23} {path}")


def _diff(args: argparse.Namespace) -> None:
    from bioasset.registry import diff_versions

    old, new = _resolve(args, args.old), _resolve(args, args.new)
    diff = diff_versions(_warehouse(args), old, new)
    if args.json:
        print(json.dumps({"old": old.ref, "new": new.ref, **diff.to_dict()}, indent=2))
        return
    print(f"{old.ref} -> {new.ref}")
    print(
        f"  {diff.added} added, {diff.removed} removed, {diff.relabelled} relabelled, "
        f"{diff.resplit} moved between splits, {diff.image_changed} with other image bytes, {diff.relicensed} relicensed"
    )
    changed = [c for c in diff.classes if c.changed]
    if not changed:
        print("  no class changed")
        return
    print()
    print(format_table([
        {"class": c.label_name, "taxon id": c.label_id, "before": c.before, "after": c.after, "+added": c.added,
         "-removed": c.removed, "relabelled in": c.relabelled_in, "relabelled out": c.relabelled_out,
         "relicensed": c.relicensed}
        for c in changed
    ]))


def _export(args: argparse.Namespace) -> None:
    from bioasset.export import export_version

    version = _resolve(args, args.ref)
    report = export_version(
        _warehouse(args), version, args.dest, format=args.format, image_store=args.image_store or config.image_store_url(),
        nest_taxonomy=args.nest_taxonomy, shard_size=args.shard_size,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    splits = ", ".join(f"{n} {s}" for s, n in report.images_per_split.items())
    print(f"Exported {version.ref} as {report.format} to {report.dest}: {report.images} images ({splits}), "
          f"{report.bytes:,} bytes in {report.elapsed_s:.1f} s")
    print(f"  files: {', '.join(report.files)}")


def _verify(args: argparse.Namespace) -> int:
    from bioasset.version_verify import SHOWN_PROBLEMS, verify_version

    version = _resolve(args, args.ref)
    report = verify_version(
        _warehouse(args), version, args.image_store or config.image_store_url(), repair=args.repair,
        source_options={"endpoint_url": config.s3_endpoint_url()},
        log=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.intact else 1
    counts = report.counts()
    print(f"{version.ref} in {report.store_url}: {report.checked} images checked in {report.elapsed_s:.1f} s, "
          f"{report.ok} intact, {counts['missing']} missing, {counts['changed']} changed, {counts['unreadable']} unreadable")
    if report.repaired:
        repairs = report.repair_counts()
        print(f"  repair: {repairs['restored']} restored, {repairs['different']} now different at the source, "
              f"{repairs['not_restored']} not restored")
    if report.problems:
        print()
        print(format_table([
            {"photo": p.photo_id, "class": p.taxon_key, "image": p.image_path, "problem": p.problem.value,
             **({"repair": p.repair.value if p.repair else ""} if report.repaired else {}), "detail": p.repair_detail or p.detail}
            for p in report.problems[:SHOWN_PROBLEMS]
        ]))
        if len(report.problems) > SHOWN_PROBLEMS:
            print(f"  ... and {len(report.problems) - SHOWN_PROBLEMS} more (--json lists all)")
    advice = report.advice()
    if advice:
        print(f"\n{advice}", file=sys.stderr)
    return 0 if report.intact else 1


# ---------------------------------------------------------------------------------------------
# Text tables
# ---------------------------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of equal keys as aligned text columns; numbers right-aligned."""
    if not rows:
        return "  (none)"
    columns = list(rows[0])
    cells = [[("" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], (int, float)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(values) for values in cells)])
