"""The fixed cost of Dagster runs: what an incremental update pays once per run.

    ./scripts/demo                                   # a BIOASSET_HOME with a snapshot, a dataset and its images
    .venv/bin/python bench/dagster_runs.py [--home .bioasset] [--repeats 3] [--baseline REV]

``taxon_images_sensor`` requests one run per class whose photo set changed (batch runs past a few
classes), so an update that adds a few photos to many classes pays a run's fixed cost once per run.
Measured here, on a copy of the home (its Dagster instance is not touched):

1. loading the code location, ``python -c "import bioasset.definitions"``, as every run, every
   step process and every code-server reload does: wall and CPU time, peak RSS, and which heavy
   libraries it imported;
2. one ``taxon_images`` run for a class whose images are all in the store already (so the step
   itself is a journal check and the rest is fixed cost):
   - ``dagster job execute -j taxon_images_job``: what the sensor requests (in-process executor);
   - ``dagster asset materialize --select taxon_images``: the asset job the UI launches (the default
     multiprocess executor: one more process, which loads the code location again).

With ``--baseline REV`` the same is measured for ``bioasset`` as it was at git revision REV
(``git archive`` into bench/work, first on ``PYTHONPATH``), in the same run.

3. an update that touches every class of the home (all already in the store), the two ways
   the sensor can ask for it: one ``taxon_images_job`` run per class, one after another, against
   one ``taxon_images_batch_job`` run for all of them (current code only).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "dagster-runs"
RESULTS = REPO / "bench" / "results" / "dagster_runs.json"
DAGSTER = Path(sys.executable).with_name("dagster")
HEAVY_MODULES = ("torch", "torchvision", "mlflow", "matplotlib", "cv2")


#: Runs argv[1:] and then prints the peak RSS of its process tree (the largest process), which the
#: benchmark's own RUSAGE_CHILDREN cannot give per command: that is a maximum over all its children.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def measured(command: list[str], env: dict[str, str]) -> dict[str, object]:
    """Wall time, CPU time (the process tree) and peak RSS (its largest process) of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # From a folder with no bioasset in it: the current directory comes first on sys.path (for
    # `python -c`, and dagster adds it for -m), and would shadow a --baseline copy.
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *command], env=env, capture_output=True,
                            text=True, cwd=WORK)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    stdout, _, rss_line = result.stdout.rstrip("\n").rpartition("\n")
    return {"wall_s": round(wall, 3),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3),
            "max_rss_mib": round(int(rss_line.split()[-1]) / 1024, 1), "stdout": stdout}


def code_env(home: Path, rev: str | None) -> dict[str, str]:
    env = {**os.environ, "BIOASSET_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    if rev:
        tree = WORK / f"baseline-{rev}"
        if not (tree / "bioasset").is_dir():
            tree.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "bioasset", "datasets"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        env["PYTHONPATH"] = str(tree)  # before the editable install's finder, so this copy wins
    return env


def first_partition(env: dict[str, str]) -> str:
    code = "from dagster import DagsterInstance; print(sorted(DagsterInstance.get().get_dynamic_partitions('taxa'))[0])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=WORK)
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"no `taxa` partitions in {env['DAGSTER_HOME']}: run ./scripts/demo first\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def all_partitions(env: dict[str, str]) -> list[str]:
    code = "from dagster import DagsterInstance; print(*sorted(DagsterInstance.get().get_dynamic_partitions('taxa')))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=WORK, check=True)
    return result.stdout.split()


def update_every_class(partitions: list[str], env: dict[str, str]) -> dict[str, dict[str, object]]:
    """Wall and CPU time of downloading every class (nothing new in any): a run per class, and one batch run."""
    from bioasset.jobs.taxon_images_batch import batch_run_config  # the current code's: only it has the batch job

    per_class = [measured([str(DAGSTER), "job", "execute", "-m", "bioasset.definitions", "-j", "taxon_images_job",
                           "--tags", json.dumps({"dagster/partition": key})], env) for key in partitions]
    config = WORK / "batch-config.json"
    config.write_text(json.dumps(batch_run_config(partitions)))
    batch = measured([str(DAGSTER), "job", "execute", "-m", "bioasset.definitions", "-j", "taxon_images_batch_job",
                      "-c", str(config)], env)
    return {
        f"{len(partitions)} taxon_images_job runs": {
            "wall_s": round(sum(run["wall_s"] for run in per_class), 3),
            "cpu_s": round(sum(run["cpu_s"] for run in per_class), 3),
            "max_rss_mib": max(run["max_rss_mib"] for run in per_class),
        },
        "1 taxon_images_batch_job run": {key: batch[key] for key in ("wall_s", "cpu_s", "max_rss_mib")},
    }


def commands(partition: str, has_job: bool) -> dict[str, list[str]]:
    load = ("import sys, bioasset.definitions; "
            f"print([name for name in {HEAVY_MODULES!r} if name in sys.modules])")
    runs = {"load the code location": [sys.executable, "-c", load]}
    if has_job:
        runs["taxon_images_job run (sensor)"] = [
            str(DAGSTER), "job", "execute", "-m", "bioasset.definitions", "-j", "taxon_images_job",
            "--tags", json.dumps({"dagster/partition": partition})]
    runs["asset materialize run (UI)"] = [
        str(DAGSTER), "asset", "materialize", "-m", "bioasset.definitions", "--select", "taxon_images",
        "--partition", partition]
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".bioasset", help="a BIOASSET_HOME the demo has filled")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also measure bioasset as it was at this git revision")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if not (args.home / "dagster").is_dir():
        raise SystemExit(f"--home {args.home}: no Dagster instance there; run ./scripts/demo first (it fills ./.bioasset)")
    home = WORK / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("sample-bucket", "training", "mlflow"))
    partition = first_partition(code_env(home, None))
    baseline = None
    if args.baseline:  # a commit id, so that a moving name (HEAD~1) never reuses an older extracted copy
        baseline = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], check=True,
                                  capture_output=True, text=True).stdout.strip()
    codes = [("current", None), *([("baseline", baseline)] if baseline else [])]
    rows: dict[str, dict[str, list[dict[str, object]]]] = {code: {} for code, _ in codes}
    for repeat in range(args.repeats):
        for code, rev in codes if repeat % 2 == 0 else codes[::-1]:  # take turns going first
            env = code_env(home, rev)
            for name, command in commands(partition, has_job=rev is None).items():
                run = measured(command, env)
                stdout = str(run.pop("stdout"))
                if name == "load the code location":
                    run["heavy_modules_loaded"] = ast.literal_eval(stdout.strip().splitlines()[-1])
                rows[code].setdefault(name, []).append(run)
                print(f"{code:8s} {name:32s} {run['wall_s']:6.2f} s wall {run['cpu_s']:6.2f} s CPU "
                      f"{run['max_rss_mib']:7.1f} MiB", flush=True)
    partitions = all_partitions(code_env(home, None))
    updates: dict[str, list[dict[str, object]]] = {}
    for repeat in range(args.repeats):
        for name, run in update_every_class(partitions, code_env(home, None)).items():
            updates.setdefault(name, []).append(run)
            print(f"update   {name:32s} {run['wall_s']:6.2f} s wall {run['cpu_s']:6.2f} s CPU", flush=True)
    rows["update every class"] = updates
    medians = {code: {name: {key: statistics.median(run[key] for run in runs)
                             for key in ("wall_s", "cpu_s", "max_rss_mib")}
                      | {"heavy_modules_loaded": runs[0].get("heavy_modules_loaded")}
                      for name, runs in by_name.items()} for code, by_name in rows.items()}
    results = {
        "benchmark": "dagster_runs",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["bench/dagster_runs.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                    "load_average": os.getloadavg()},
        "git_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
        "baseline": baseline, "partition": partition, "classes": len(partitions), "repeats": args.repeats,
        "medians": medians, "runs": rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    shutil.rmtree(home, ignore_errors=True)


def markdown(results: dict) -> str:
    lines = ["| code | what | wall s | CPU s | peak RSS MiB | heavy modules loaded |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for code, by_name in results["medians"].items():
        label = {"baseline": f"before (`{results['baseline']}`)", "current": "now"}.get(code, code)
        for name, row in by_name.items():
            heavy = row["heavy_modules_loaded"]
            lines.append(f"| {label} | {name} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['max_rss_mib']:.0f} "
                         f"| {', '.join(heavy) if heavy else ('none' if heavy is not None else '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
