"""The ``bioasset`` command.

Each sub-command lives in its own module, which exposes ``add_parser(subparsers)``; the parser
it adds sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "bioasset.dataset_commands",
    "bioasset.demo",
    "bioasset.image_commands",
    "bioasset.predict_commands",
    "bioasset.sample_bucket.command",
    "bioasset.snapshot_commands",
    "bioasset.ui_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioasset",
        description="Versioned, license-clean image datasets and classifiers from biodiversity open data.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
