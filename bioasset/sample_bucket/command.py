"""``bioasset sample-bucket PATH``: write a sample of ``s3://inaturalist-open-data`` into PATH."""

from __future__ import annotations

import argparse
import sys
from datetime import date

from bioasset import config
from bioasset.inat_format import IMAGE_SIZES
from bioasset.sample_bucket.generate import (
    DEFAULT_N_SPECIES,
    DEFAULT_PHOTOS_PER_SPECIES,
    DEFAULT_SIZES,
    DEFAULT_SNAPSHOT_DATE,
    generate_sample_bucket,
)
from bioasset.sample_bucket.errors import SampleBucketError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write it YYYY-MM-DD") from error


def _sizes(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "none":
        return ()
    sizes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [size for size in sizes if size not in IMAGE_SIZES]
    if unknown or not sizes:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are a comma-separated list of {', '.join(IMAGE_SIZES)}, or none")
    return sizes


def run(args: argparse.Namespace) -> int:
    try:
        if args.scale_millions is not None:
            from bioasset.sample_bucket.scale import generate_scale_snapshot

            if args.next:
                raise SampleBucketError("--scale-millions and --next do not combine: derive later snapshots of image samples only")
            report = generate_scale_snapshot(args.path, millions=args.scale_millions, seed=args.seed,
                                             snapshot_date=args.snapshot_date or DEFAULT_SNAPSHOT_DATE)
        else:
            report = generate_sample_bucket(
                args.path, seed=args.seed, n_species=args.species, photos_per_species=args.photos_per_species,
                snapshot_date=args.snapshot_date, sizes=args.sizes, next_from=args.next, workers=args.workers,
            )
    except SampleBucketError as error:
        print(f"bioasset sample-bucket: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.path}: {report.describe()}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-bucket",
        help="write a sample of s3://inaturalist-open-data into a folder",
        description=(
            "Write a folder laid out like s3://inaturalist-open-data: metadata tarballs, root *.csv.gz and "
            "photos/{id}/{size}.{ext}, with real taxon ids and every shape of row the real export has. "
            "Deterministic for its options."
        ),
    )
    parser.add_argument("path", nargs="?", default=str(config.sample_bucket_dir()),
                        help="the folder to write (default: $BIOASSET_HOME/sample-bucket)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--species", type=int, default=DEFAULT_N_SPECIES,
                        help=f"species with observations (default {DEFAULT_N_SPECIES}: the real catalogue; more adds synthetic ones)")
    parser.add_argument("--photos-per-species", type=int, default=DEFAULT_PHOTOS_PER_SPECIES,
                        help=f"photos per species (default {DEFAULT_PHOTOS_PER_SPECIES}); with --next, about a tenth as many new ones")
    parser.add_argument("--snapshot-date", type=_date,
                        help=f"date of the snapshot, YYYY-MM-DD (default {DEFAULT_SNAPSHOT_DATE}, or a month after --next)")
    parser.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES,
                        help=f"image sizes to write, comma-separated (default {','.join(DEFAULT_SIZES)}; also original,large), or none")
    parser.add_argument("--next", metavar="FROM",
                        help="derive a later snapshot from an earlier one in PATH: its date (YYYY-MM-DD) or its dated tarball")
    parser.add_argument("--scale-millions", type=float, metavar="N",
                        help="metadata only: a snapshot of N million photos and no images, for benchmarks")
    parser.add_argument("--workers", type=int, help="processes that draw images (default: the CPU count)")
    parser.set_defaults(func=run)
