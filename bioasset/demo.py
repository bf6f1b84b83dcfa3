"""``bioasset demo``: the whole chain on the embedded defaults, in ``BIOASSET_HOME``."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from bioasset import config
from bioasset.instance import ensure_dagster_home
from bioasset.inat_format import LATEST_TARBALL


@dataclass
class DemoSummary:
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def record(self, name: str, started: float, detail: str) -> None:
        elapsed = time.perf_counter() - started
        self.steps.append((name, elapsed, detail))
        print(f"==> {name}: {detail} ({elapsed:.1f} s)", flush=True)


def build_sample_bucket(summary: DemoSummary, *, seed: int, rebuild: bool) -> None:
    from bioasset.sample_bucket import generate_sample_bucket

    started = time.perf_counter()
    bucket = config.sample_bucket_dir()
    if (bucket / LATEST_TARBALL).exists() and not rebuild:
        summary.record("sample bucket", started, f"reusing {bucket}")
        return
    report = generate_sample_bucket(bucket, seed=seed)
    summary.record("sample bucket", started, f"{bucket}: {report.describe()}")


def load_definitions(summary: DemoSummary):
    from dagster import Definitions

    started = time.perf_counter()
    from bioasset.definitions import defs

    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    asset_count = len(repo.asset_graph.get_all_asset_keys())
    summary.record("definitions", started, f"{asset_count} assets, {len(repo.job_names)} jobs, validated")
    return defs


def print_next_steps() -> None:
    print(
        f"""
Everything lives under {config.bioasset_home()}
  Dagster UI:  .venv/bin/bioasset ui dagster   (then open http://127.0.0.1:3000)
  MLflow UI:   .venv/bin/bioasset ui mlflow    (then open http://127.0.0.1:5000)
""",
        flush=True,
    )


def run_demo(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    summary = DemoSummary()
    build_sample_bucket(summary, seed=args.seed, rebuild=args.rebuild)
    load_definitions(summary)
    print_next_steps()
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole chain on the local sample bucket")
    parser.add_argument("--seed", type=int, default=0, help="sample-bucket seed")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the sample bucket even if present")
    parser.set_defaults(func=run_demo)
