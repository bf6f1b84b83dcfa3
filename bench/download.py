"""Download benchmark: bioasset's download engine against img2dataset, on the same loopback URLs.

    .venv/bin/python bench/download.py [--images 3000] [--repeats 3] [--latency-ms 20]
                                       [--bioasset 16 --bioasset 64/4 --bioasset 2x16] [--img2dataset 1x16 --img2dataset 2x16]
                                       [--search]

What one run does:

1. Draws (once, cached under ``bench/work/download/``) a sample bucket with
   ``bioasset.sample_bucket.generate_sample_bucket``: iNaturalist "medium" JPEGs, longest side 500.
2. Creates (once) a separate virtualenv with img2dataset in ``bench/work/img2dataset-venv``
   (``python3 -m venv`` + ``pip install img2dataset``); never the project's virtualenv.
3. Serves the bucket from its own process with ``tests/http_faults.py`` (loopback HTTP/1.1,
   ``--latency-ms`` added to every response).
4. For each repeat: each tool configuration once on 20 images (its fixed start-up cost); then for
   each case (resize to shorter side 256 at JPEG quality 90; no resize), every configuration on the
   same URL list, one after the other, the order reversed on odd repeats. Each run is a subprocess:
   wall time of the whole command, CPU (user+sys) of its process tree from
   ``getrusage(RUSAGE_CHILDREN)``, the server's CPU, and how busy the rest of the machine was.
5. Incremental update: after each full run of the first bioasset configuration, reruns it into the
   same store with a URL list 1% longer; compares the rerun with the full run.
6. Writes ``bench/results/download.json`` and the ``## Download`` section of ``docs/benchmarks.md``.

``--search`` first tries a grid of img2dataset configurations (processes x threads) on the resize
case and adds the fastest to the compared ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work"
DEFAULT_RESULTS = REPO / "bench" / "results" / "download.json"
DEFAULT_DOCS = REPO / "docs" / "benchmarks.md"
IMG2DATASET_VENV = WORK / "img2dataset-venv"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
N_SPECIES = 15  # the sample bucket's catalogue species
#: bioasset configurations compared by default, [PROCESSESx]CONCURRENCY[/DECODE_THREADS]: the engine's
#: defaults (16 requests in flight, one decode thread per usable CPU); more requests in flight and two
#: decode threads per CPU, which win a bigger share of CPUs that other jobs also want; and two processes
#: (two taxa partitions at once, as Dagster runs them), matched to img2dataset's two processes.
DEFAULT_BIOASSET_CONFIGS = ("16", "64/4", "2x16", "2x32")
#: img2dataset configurations compared by default, PROCESSESxTHREADS: 1x16 is matched to bioasset's
#: defaults (one process, 16 requests in flight); 2x16 was the fastest ``--search`` found here.
DEFAULT_IMG2DATASET_CONFIGS = ("1x16", "2x16")
SEARCH_GRID = ("1x8", "1x16", "1x32", "1x64", "2x8", "2x16", "2x32", "4x8", "4x16")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Images in the start-up runs, which measure each tool's fixed cost per command.
STARTUP_IMAGES = 20
#: img2dataset's albumentations otherwise asks PyPI for a newer version at every start.
TOOL_ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}


# --------------------------------------------------------------------------------------------
# the bucket, the img2dataset virtualenv, versions and machine facts


def new_images_for(images: int) -> int:
    return max(1, round(images * 0.01))


def ensure_bucket(work: Path, images: int, seed: int) -> tuple[Path, list[str], float | None]:
    """A sample bucket with at least ``images * 1.01`` medium images; the photo keys, sorted by id."""
    needed = images + new_images_for(images)
    per_species = math.ceil(needed / N_SPECIES / 0.95)  # about 2% of photos are "deleted upstream"
    bucket = work / f"bucket-seed{seed}-{N_SPECIES}x{per_species}"
    generated_s = None
    if not (bucket / ".complete").is_file():
        from bioasset.sample_bucket import generate_sample_bucket

        shutil.rmtree(bucket, ignore_errors=True)
        print(f"drawing a sample bucket of about {N_SPECIES * per_species} photos in {bucket} …", flush=True)
        started = time.perf_counter()
        generate_sample_bucket(bucket, seed=seed, n_species=N_SPECIES, photos_per_species=per_species,
                               sizes=("medium",))
        generated_s = time.perf_counter() - started
        (bucket / ".complete").write_text(f"{generated_s:.1f} s\n")
    else:  # drawn by an earlier run: report how long that took
        generated_s = float((bucket / ".complete").read_text().split()[0])
    keys = sorted(
        (f"photos/{path.parent.name}/{path.name}" for path in (bucket / "photos").glob("*/medium.*")),
        key=lambda key: int(key.split("/")[1]),
    )
    if len(keys) < needed:
        raise SystemExit(f"{bucket} has {len(keys)} images, fewer than the {needed} needed: delete it and rerun")
    return bucket, keys[:needed], generated_s


def ensure_img2dataset(spec: str) -> Path:
    """The img2dataset command in its own virtualenv, installed on first use."""
    command = IMG2DATASET_VENV / "bin" / "img2dataset"
    if not command.is_file():
        print(f"installing {spec} into {IMG2DATASET_VENV} …", flush=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(IMG2DATASET_VENV)], check=True)
        subprocess.run([str(IMG2DATASET_VENV / "bin" / "pip"), "install", "-q", spec], check=True)
    return command


def img2dataset_versions() -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m, platform\n"
        "out = {'python': platform.python_version()}\n"
        "for n in ['img2dataset', 'opencv-python-headless', 'opencv-python', 'albumentations', 'numpy', 'pyarrow']:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(IMG2DATASET_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


def bioasset_versions() -> dict[str, object]:
    import importlib.metadata as metadata

    from PIL import features

    versions: dict[str, object] = {"python": platform.python_version()}
    for name in ("bioasset", "aiohttp", "uvloop", "pillow", "simplejpeg", "opencv-python-headless", "fsspec"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    versions["libjpeg"] = f"{features.version('jpg')} (turbo: {features.check_feature('libjpeg_turbo')})"
    git = ["git", "-C", str(REPO)]
    versions["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--", "bioasset/download"], capture_output=True,
                             text=True).stdout.strip()
    versions["bioasset_download_uncommitted_changes"] = changed.splitlines()
    return versions


def machine_info() -> dict[str, object]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (every CPU together)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


# --------------------------------------------------------------------------------------------
# the server and one measured command


class Server:
    """tests/http_faults.py serving the bucket folder, in its own process."""

    def __init__(self, directory: Path, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [str(PROJECT_PYTHON), str(REPO / "tests" / "http_faults.py"), "--directory", str(directory),
             "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self.stop()
            raise SystemExit(f"the HTTP server did not start (it said {self.base_url!r})")

    def cpu_s(self) -> float:
        """user+sys CPU seconds the server has used so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measured(command: list[str], server: Server, log: Path) -> dict[str, object]:
    """Run ``command`` to completion: its wall time, its process tree's CPU time, the server's CPU
    time, and how many CPUs the rest of the machine (other jobs) kept busy meanwhile."""
    server_before, machine_before = server.cpu_s(), machine_busy_s()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=TOOL_ENV)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu, machine_busy = server.cpu_s() - server_before, machine_busy_s() - machine_before
    log.write_text(f"$ {' '.join(command)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}), see {log}:\n{result.stderr[-3000:]}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"wall_s": wall, "cpu_user_s": user, "cpu_sys_s": system, "cpu_s": user + system,
            "server_cpu_s": server_cpu, "other_jobs_cpus": max(0.0, machine_busy - user - system - server_cpu) / wall,
            "stdout": result.stdout}


class Outputs:
    """A new output folder for every run; all of them are deleted only when the benchmark ends.

    Deleting one run's output just before the next run writes its own bills the next run for the
    deletion: on this machine's ext4 (mounted without a journal) a file created soon after many
    deletions in the same block group costs 0.3-0.7 ms of kernel CPU, because the inode allocator
    skips recently deleted inodes one by one (``recently_deleted`` in fs/ext4/ialloc.c), against
    about 0.05 ms otherwise. That is more than the write itself, and it is larger for the tool that
    runs after a bigger deletion (img2dataset writes two files per image)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = 0
        self.previous = root.with_name(f"{root.name}-previous-{os.getpid()}")
        if root.exists():  # a previous benchmark's outputs: moved aside now, deleted at the end
            root.rename(self.previous)

    def new(self, tag: str) -> Path:
        self.runs += 1
        return self.root / f"{self.runs:03d}-{tag}"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.previous, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the cases and the tools


class Case:
    def __init__(self, name: str, shorter_side: int | None, jpeg_quality: int) -> None:
        self.name = name
        self.shorter_side = shorter_side
        self.jpeg_quality = jpeg_quality

    def describe(self) -> str:
        if self.shorter_side:
            return f"resize to shorter side {self.shorter_side}, JPEG quality {self.jpeg_quality}"
        return "no resize (bytes stored as downloaded, after a decode check)"


class Bioasset:
    """bioasset's engine: ``processes`` processes (default 1), each one ``download_images`` call with
    ``concurrency`` requests in flight over its share of the URLs and its own journal, as Dagster runs
    that many ``taxon_images`` partitions at once (``dagster.yaml`` allows 2 concurrent runs)."""

    def __init__(self, spec: str) -> None:
        match = re.fullmatch(r"(?:([1-9]\d*)x)?([1-9]\d*)(?:/([1-9]\d*))?", spec)
        if not match:
            raise SystemExit(f"--bioasset {spec!r}: use [PROCESSESx]CONCURRENCY[/DECODE_THREADS], e.g. 16, 64/4 or 2x16")
        self.processes = int(match[1]) if match[1] else 1
        self.concurrency = int(match[2])
        self.decode_threads = int(match[3]) if match[3] else None  # None: the engine's default
        self.spec = spec.replace("/", "-").replace("x", "p")  # in tags and folder names, apart from img2dataset's PxT
        self.name = (f"bioasset {self.processes}x c{self.concurrency}" if self.processes > 1 else f"bioasset c{self.concurrency}") + (
            f" d{self.decode_threads}" if self.decode_threads else "")

    def command(self, urls: Path, output: Path, case: Case) -> list[str]:
        return [str(PROJECT_PYTHON), str(Path(__file__).resolve()), "_run-bioasset", "--urls", str(urls),
                "--store", str(output), "--resize", str(case.shorter_side or 0), "--quality",
                str(case.jpeg_quality), "--concurrency", str(self.concurrency),
                *(["--decode-threads", str(self.decode_threads)] if self.decode_threads else []),
                *(["--processes", str(self.processes)] if self.processes > 1 else [])]

    def run(self, server: Server, urls: Path, output: Path, case: Case, log: Path) -> dict[str, object]:
        result = measured(self.command(urls, output, case), server, log)
        report = json.loads(str(result.pop("stdout")).strip().splitlines()[-1])
        result.update(report)
        result["images"] = report["counts"]["fetched"]
        # The engine's own clock: the download_images call(s), without interpreter start-up and imports.
        result["engine_s"] = report["call_s"]
        return result

    def describe(self) -> dict[str, object]:
        return {"tool": "bioasset", "processes": self.processes, "concurrency": self.concurrency,
                "decode_threads": self.decode_threads or len(os.sched_getaffinity(0)),
                "command": self.command(Path("URLS"), Path("STORE"), Case("resize", 256, 90))[1:]}


class Img2dataset:
    """img2dataset with ``processes`` download processes of ``threads`` threads each."""

    executable = IMG2DATASET_VENV / "bin" / "img2dataset"

    def __init__(self, spec: str, images: int) -> None:
        match = re.fullmatch(r"(\d+)x(\d+)(?:/(\d+))?", spec)
        if not match:
            raise SystemExit(f"--img2dataset {spec!r}: use PROCESSESxTHREADS[/SHARD_SIZE], e.g. 2x16")
        self.processes, self.threads = int(match[1]), int(match[2])
        # img2dataset hands each process whole shards: 2 shards per process keeps every process
        # busy to the end while per-shard set-up stays small.
        self.shard_size = int(match[3]) if match[3] else math.ceil(images / (2 * self.processes))
        self.spec = f"{self.processes}x{self.threads}"
        self.name = f"img2dataset {self.spec}"

    def for_images(self, images: int) -> Img2dataset:
        return Img2dataset(self.spec, images)

    def command(self, urls: Path, output: Path, case: Case) -> list[str]:
        arguments = [
            str(self.executable), "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(output),
            "--output_format", "files", "--processes_count", str(self.processes),
            "--thread_count", str(self.threads), "--number_sample_per_shard", str(self.shard_size),
            "--encode_format", "jpg", "--encode_quality", str(case.jpeg_quality),
            "--extract_exif", "False",  # bioasset does not parse EXIF either; parsing it only slows img2dataset
            "--timeout", "30", "--retries", "0",
        ]
        if case.shorter_side:
            arguments += ["--resize_mode", "keep_ratio", "--image_size", str(case.shorter_side),
                          "--resize_only_if_bigger", "True"]
        else:
            # Decode every image (as bioasset verifies each) but store the bytes as they came.
            arguments += ["--resize_mode", "no", "--skip_reencode", "True"]
        return arguments

    def run(self, server: Server, urls: Path, output: Path, case: Case, log: Path) -> dict[str, object]:
        shutil.rmtree(output, ignore_errors=True)  # its "overwrite" mode deletes its own _tmp folder
        result = measured(self.command(urls, output, case), server, log)
        result.pop("stdout")
        stats = [json.loads(path.read_text()) for path in output.glob("*_stats.json")]
        result["images"] = sum(s["successes"] for s in stats)
        result["failed"] = sum(s["failed_to_download"] + s["failed_to_resize"] for s in stats)
        # img2dataset's own clock: first shard start to last shard end, without start-up and shut-down.
        result["engine_s"] = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
        result["errors"] = sorted({error for s in stats for error in s["status_dict"] if error != "success"})[:5]
        return result

    def describe(self) -> dict[str, object]:
        return {"tool": "img2dataset", "processes_count": self.processes, "thread_count": self.threads,
                "number_sample_per_shard": self.shard_size,
                "command": self.command(Path("URLS"), Path("OUT"), Case("resize", 256, 90))[1:],
                "no_resize_flags": ["--resize_mode", "no", "--skip_reencode", "True"]}


def image_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg") and path.is_file()]


def output_facts(folder: Path) -> dict[str, object]:
    """Bytes and a sample of pixel sizes of the stored images: both tools must write the same thing."""
    from PIL import Image

    files = sorted(image_files(folder))
    shorter = set()
    for path in files[:: max(1, len(files) // 20)][:20]:
        with Image.open(path) as image:
            shorter.add(min(image.size))
    return {"image_files": len(files), "image_bytes": sum(path.stat().st_size for path in files),
            "sample_shorter_sides": sorted(shorter)}


def finished(run: dict[str, object], expected: int, label: str) -> dict[str, object]:
    images = int(run["images"])  # type: ignore[call-overload]
    if images != expected:
        raise SystemExit(f"{label}: stored {images} images, expected {expected}: {run}")
    run["images_per_s"] = images / float(run["wall_s"])  # type: ignore[arg-type]
    run["steady_images_per_s"] = images / float(run["engine_s"])  # type: ignore[arg-type]
    run["cpu_ms_per_image"] = 1000 * float(run["cpu_s"]) / images  # type: ignore[arg-type]
    run["server_cpu_ms_per_image"] = 1000 * float(run["server_cpu_s"]) / images  # type: ignore[arg-type]
    return run


# --------------------------------------------------------------------------------------------
# the benchmark


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run-bioasset"]:
        return run_bioasset_in_process(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="images per full run (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (default 3)")
    parser.add_argument("--latency-ms", type=float, default=20.0,
                        help="delay the server adds to every response (default 20, about S3's first byte)")
    parser.add_argument("--shorter-side", type=int, default=256, help="resize case: target shorter side")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of resized images (both tools)")
    parser.add_argument("--bioasset", action="append", metavar="C[/D]",
                        help="a bioasset configuration: requests in flight, optionally /decode threads (repeatable; default "
                             f"{' and '.join(DEFAULT_BIOASSET_CONFIGS)}; the first also runs the incremental update)")
    parser.add_argument("--img2dataset", action="append", metavar="PxT[/SHARD]",
                        help="an img2dataset configuration: processes x threads, optional shard size "
                             f"(repeatable; default {' and '.join(DEFAULT_IMG2DATASET_CONFIGS)})")
    parser.add_argument("--search", action="store_true",
                        help=f"first try img2dataset configurations {', '.join(SEARCH_GRID)}; add the fastest")
    parser.add_argument("--cases", default="resize,no-resize", help="resize, no-resize, or both (default)")
    parser.add_argument("--incremental-images", type=int, default=0, metavar="N",
                        help="also time the 1%% incremental update after a full bioasset run of N images "
                             "(each repeat and case; default: off)")
    parser.add_argument("--img2dataset-spec", default="img2dataset", help="pip requirement for its virtualenv")
    parser.add_argument("--seed", type=int, default=0, help="sample bucket seed")
    parser.add_argument("--work", type=Path, default=WORK / "download", help="scratch folder (git-ignored)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="Markdown file whose ## Download section "
                        "is rewritten")
    parser.add_argument("--no-docs", action="store_true", help="leave the Markdown file alone")
    args = parser.parse_args(argv)

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    started = time.perf_counter()
    machine = machine_info()
    bucket, keys, generated_s = ensure_bucket(work, max(args.images, args.incremental_images), args.seed)
    ensure_img2dataset(args.img2dataset_spec)
    new_images = new_images_for(args.images)
    cases = [case for case in (Case("resize", args.shorter_side, args.jpeg_quality),
                               Case("no-resize", None, args.jpeg_quality)) if case.name in args.cases.split(",")]
    if not cases:
        raise SystemExit(f"--cases {args.cases!r}: use resize, no-resize or both")
    bioassets = [Bioasset(spec) for spec in (args.bioasset or DEFAULT_BIOASSET_CONFIGS)]
    img2datasets = [Img2dataset(spec, args.images) for spec in (args.img2dataset or DEFAULT_IMG2DATASET_CONFIGS)]
    outputs = Outputs(work / "out")

    server = Server(bucket, args.latency_ms)
    try:
        def url_list(name: str, count: int) -> Path:
            path = work / f"urls-{name}.txt"
            path.write_text("".join(f"{server.base_url}/{key}\n" for key in keys[:count]))
            return path

        full_urls, plus_urls = url_list("full", args.images), url_list("plus-1pct", args.images + new_images)
        if args.incremental_images:
            large_new = new_images_for(args.incremental_images)
            large_urls = url_list("large", args.incremental_images)
            large_plus_urls = url_list("large-plus-1pct", args.incremental_images + large_new)
        startup_urls, warm_urls = url_list("startup", STARTUP_IMAGES), url_list("warm", 200)
        print("warming up (compiles .pyc files, fills the page cache) …", flush=True)
        for tool in (bioassets[0], img2datasets[0].for_images(200)):
            tool.run(server, warm_urls, outputs.new(f"warm-{tool.spec}"), cases[0], logs / f"warm-{tool.spec}.log")

        search: list[dict[str, object]] = []
        if args.search:
            search = search_img2dataset(server, full_urls, outputs, cases[0], args.images, logs)
            best = max(search, key=lambda row: row["steady_images_per_s"])  # type: ignore[arg-type, return-value]
            if best["spec"] not in {tool.spec for tool in img2datasets}:
                img2datasets.append(Img2dataset(str(best["spec"]), args.images))

        tools: list[Bioasset | Img2dataset] = [*bioassets, *img2datasets]
        runs: list[dict[str, object]] = []
        incremental: list[dict[str, object]] = []
        startups: list[dict[str, object]] = []
        for repeat in range(args.repeats):
            order = tools if repeat % 2 == 0 else tools[::-1]
            for tool in order:
                small = tool.for_images(STARTUP_IMAGES) if isinstance(tool, Img2dataset) else tool
                run = small.run(server, startup_urls, outputs.new(f"r{repeat}-startup-{tool.spec}"), cases[0],
                                logs / f"r{repeat}-startup-{tool.spec}.log")
                startups.append({"config": tool.name, "repeat": repeat, "images": run["images"],
                                 "wall_s": run["wall_s"], "cpu_s": run["cpu_s"]})
            for case in cases:
                for tool in order:
                    tag = f"r{repeat}-{case.name}-{tool.spec}"
                    output = outputs.new(tag)
                    run = finished(tool.run(server, full_urls, output, case, logs / f"{tag}.log"), args.images, tag)
                    run.update(output_facts(output))
                    run.update({"case": case.name, "config": tool.name, "repeat": repeat,
                                "load_average_1min": round(os.getloadavg()[0], 2)})
                    note = ""
                    if tool is bioassets[0]:
                        row = incremental_update(tool, server, run, plus_urls, output, case, args.images, new_images,
                                                 logs / f"{tag}-plus1pct.log")
                        incremental.append({"repeat": repeat, **row})
                        note = f"; +1% rerun {row['ratio_wall']:.1%} of the full run ({row['ratio_call']:.1%} in the call)"
                    runs.append(run)
                    print(f"{tag}: {run['images_per_s']:.0f} images/s end to end, {run['steady_images_per_s']:.0f} "
                          f"steady, {run['cpu_ms_per_image']:.2f} CPU ms/image, other jobs kept "
                          f"{run['other_jobs_cpus']:.1f} CPUs busy{note}", flush=True)
                if args.incremental_images:
                    tag = f"r{repeat}-{case.name}-{bioassets[0].spec}-large"
                    output = outputs.new(tag)
                    run = finished(bioassets[0].run(server, large_urls, output, case, logs / f"{tag}.log"),
                                   args.incremental_images, tag)
                    row = incremental_update(bioassets[0], server, run, large_plus_urls, output, case,
                                             args.incremental_images, large_new, logs / f"{tag}-plus1pct.log")
                    incremental.append({"repeat": repeat, **row})
                    print(f"{tag}: {run['images_per_s']:.0f} images/s end to end; +1% rerun {row['ratio_wall']:.1%} "
                          f"of the full run ({row['ratio_call']:.1%} in the call)", flush=True)
    finally:
        server.stop()
        outputs.remove()

    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = summarize(args, machine, cases, bioassets, img2datasets, runs, incremental, startups, search,
                        generated_s, new_images, time.perf_counter() - started)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results}")
    if not args.no_docs:
        write_docs(args.docs, results)
        print(f"wrote the ## Download section of {args.docs}")
    print(json.dumps({key: results[key] for key in ("medians", "ratios", "incremental_medians", "targets")}, indent=1))


def incremental_update(tool: Bioasset, server: Server, full: dict[str, object], plus_urls: Path, output: Path,
                       case: Case, images: int, new_images: int, log: Path) -> dict[str, object]:
    """Rerun ``tool`` into the store of the full run ``full`` with 1% more URLs; compare the two."""
    rerun = tool.run(server, plus_urls, output, case, log)
    counts = rerun["counts"]
    if counts["fetched"] != new_images or counts["skipped"] != images:  # type: ignore[index]
        raise SystemExit(f"{log.stem}: the incremental rerun did not skip and fetch as expected: {rerun}")
    return {
        "case": case.name, "images": images, "new_images": new_images,
        "full_wall_s": full["wall_s"], "rerun_wall_s": rerun["wall_s"],
        "ratio_wall": float(rerun["wall_s"]) / float(full["wall_s"]),  # type: ignore[arg-type]
        "full_call_s": full["call_s"], "rerun_call_s": rerun["call_s"],
        "ratio_call": float(rerun["call_s"]) / float(full["call_s"]),  # type: ignore[arg-type]
        "rerun_cpu_s": rerun["cpu_s"],
    }


def search_img2dataset(server: Server, urls: Path, outputs: Outputs, case: Case, images: int,
                       logs: Path) -> list[dict[str, object]]:
    rows = []
    for spec in SEARCH_GRID:
        tool = Img2dataset(spec, images)
        run = finished(tool.run(server, urls, outputs.new(f"search-{spec}"), case, logs / f"search-{spec}.log"),
                       images, f"search {spec}")
        rows.append({"spec": spec, "config": tool.name, **{k: v for k, v in tool.describe().items() if k != "command"},
                     **{key: round(float(run[key]), 3) for key in  # type: ignore[arg-type]
                        ("wall_s", "engine_s", "images_per_s", "steady_images_per_s", "cpu_ms_per_image",
                         "other_jobs_cpus")}})
        print(f"search {tool.name}: {run['images_per_s']:.0f} images/s end to end, "
              f"{run['steady_images_per_s']:.0f} steady, {run['cpu_ms_per_image']:.2f} CPU ms/image", flush=True)
    return rows


def median_of(rows: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(row[key]) for row in rows)  # type: ignore[arg-type]


def rounded(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
            for row in rows]


def summarize(args, machine, cases, bioassets, img2datasets, runs, incremental, startups, search, generated_s,
              new_images, elapsed_s) -> dict[str, object]:
    tools = [*bioassets, *img2datasets]
    cpus = machine["usable_cpus"]
    startup_medians = {
        tool.name: {key: round(median_of([row for row in startups if row["config"] == tool.name], key), 3)
                    for key in ("wall_s", "cpu_s")}
        for tool in tools
    }
    medians: dict[str, dict[str, dict[str, float]]] = {}
    ratios: dict[str, dict[str, dict[str, object]]] = {}
    for case in cases:
        table = medians[case.name] = {}
        for tool in tools:
            rows = [run for run in runs if run["case"] == case.name and run["config"] == tool.name]
            row = table[tool.name] = {
                key: round(median_of(rows, key), 4)
                for key in ("images_per_s", "steady_images_per_s", "wall_s", "engine_s", "cpu_s", "cpu_ms_per_image",
                            "server_cpu_ms_per_image", "other_jobs_cpus")
            }
            # CPU per image without the fixed start-up cost (the same command on STARTUP_IMAGES images).
            row["net_cpu_ms_per_image"] = round(
                1000 * (row["cpu_s"] - startup_medians[tool.name]["cpu_s"]) / (args.images - STARTUP_IMAGES), 4)
            # What the CPU time allows on a machine with nothing else running: every usable CPU busy
            # with this tool and the server. An upper bound, not a measurement.
            row["cpu_bound_images_per_s"] = round(
                1000 * cpus / (row["net_cpu_ms_per_image"] + row["server_cpu_ms_per_image"]), 1)
            # CPUs the tool kept busy while it downloaded (its start-up left out).
            row["cpus_used"] = round((row["cpu_s"] - startup_medians[tool.name]["cpu_s"]) / row["engine_s"], 3)
            row["image_bytes"] = int(median_of(rows, "image_bytes"))

        def compare(ours: str, theirs: str) -> dict[str, object]:
            a, b = table[ours], table[theirs]
            return {"bioasset": ours, "img2dataset": theirs, **{
                key: round(a[key] / b[key], 3)
                for key in ("images_per_s", "steady_images_per_s", "cpu_bound_images_per_s")},
                "cpu_per_image": round(a["cpu_ms_per_image"] / b["cpu_ms_per_image"], 3),
                "net_cpu_per_image": round(a["net_cpu_ms_per_image"] / b["net_cpu_ms_per_image"], 3)}

        best_ours = max(bioassets, key=lambda tool: table[tool.name]["steady_images_per_s"]).name
        best_theirs = max(img2datasets, key=lambda tool: table[tool.name]["steady_images_per_s"]).name
        ratios[case.name] = {"matched": compare(bioassets[0].name, img2datasets[0].name),
                             "best vs best": compare(best_ours, best_theirs)}
    sizes = sorted({int(row["images"]) for row in incremental})
    incremental_medians = {
        f"{case.name}, {size} images": {
            "case": case.name, "images": size, **{
                key: round(median_of([row for row in incremental if row["case"] == case.name
                                      and row["images"] == size], key), 4)
                for key in ("full_wall_s", "rerun_wall_s", "ratio_wall", "full_call_s", "rerun_call_s", "ratio_call")}
        }
        for case in cases
        for size in sizes
    }

    def worst(kind: str, key: str) -> float:
        return min(float(ratios[case.name][kind][key]) for case in cases)  # type: ignore[arg-type]

    speed = worst("best vs best", "steady_images_per_s")
    default_size = [row for row in incremental_medians.values() if row["images"] == args.images]
    worst_wall = max(row["ratio_wall"] for row in default_size)
    worst_call = max(row["ratio_call"] for row in default_size)
    large = [row for row in incremental_medians.values() if row["images"] != args.images]
    return {
        "benchmark": "download",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["bench/download.py", *sys.argv[1:]]),
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "versions": {"bioasset": bioasset_versions(), "img2dataset": img2dataset_versions()},
        "parameters": {
            "images": args.images, "new_images_incremental": new_images, "repeats": args.repeats,
            "incremental_images": args.incremental_images or None,
            "latency_ms": args.latency_ms, "seed": args.seed, "startup_images": STARTUP_IMAGES,
            "source_images": "sample-bucket medium JPEGs (longest side 500) from "
                             "bioasset.sample_bucket.generate_sample_bucket",
            "server": "tests/http_faults.py in its own process (ThreadingHTTPServer, HTTP/1.1 keep-alive)",
            "bucket_generated_s": generated_s,
            "cases": {case.name: case.describe() for case in cases},
        },
        "configurations": {tool.name: tool.describe() for tool in tools},
        "img2dataset_search": search,
        "runs": rounded(runs),
        "incremental": rounded(incremental),
        "startup_runs": rounded(startups),
        "startup_medians": startup_medians,
        "medians": medians,
        "ratios": ratios,
        "incremental_medians": incremental_medians,
        "targets": {
            "images_per_s_vs_img2dataset": {
                "target": 1.5, "measure": "steady images/s, fastest bioasset vs fastest img2dataset, worst case",
                "measured": speed, "met": speed >= 1.5,
                "end_to_end": worst("best vs best", "images_per_s"),
                "cpu_bound": worst("best vs best", "cpu_bound_images_per_s"),
                "matched_steady": worst("matched", "steady_images_per_s"),
            },
            "incremental_1pct": {
                "target": 0.05, "measure": "wall time of the rerun / the full run, whole command, worst case",
                "measured": worst_wall, "met": worst_wall <= 0.05,
                "download_images_call": worst_call, "call_met": worst_call <= 0.05,
                **({f"whole_command_at_{args.incremental_images}_images": max(row["ratio_wall"] for row in large)}
                   if large else {}),
            },
        },
    }


# --------------------------------------------------------------------------------------------
# docs/benchmarks.md


DOCS_INTRO = """# Benchmarks

bioasset's speed and memory goals are measured here, by scripts in `bench/`, never by timed tests.
Each section says what its benchmark measures, how to rerun it, and what the last run found; the
raw numbers of that run are in `bench/results/*.json`.
"""


def write_docs(path: Path, results: dict) -> None:
    """Rewrite the ``## Download`` section (up to the next ``## `` heading); leave the rest alone."""
    section = docs_section(results)
    text = path.read_text() if path.is_file() else DOCS_INTRO
    match = re.search(r"^## Download\n.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match:
        rest = text[match.end():]
        text = text[: match.start()] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def docs_section(results: dict) -> str:
    parameters, machine, versions = results["parameters"], results["machine"], results["versions"]
    medians, ratios, startup = results["medians"], results["ratios"], results["startup_medians"]
    incremental, targets = results["incremental_medians"], results["targets"]
    other_jobs = statistics.median(run["other_jobs_cpus"] for run in results["runs"])
    i2d = versions["img2dataset"]
    lines = [
        "## Download",
        "",
        "`bench/download.py` downloads one URL list with bioasset's engine (`bioasset.download.download_images`) "
        "and with [img2dataset](https://github.com/rom1504/img2dataset), from a loopback HTTP server "
        "(`tests/http_faults.py`, in its own process, with a delay added to every response) that serves "
        "sample-bucket photos at iNaturalist's medium size (longest side 500). Each tool runs as a subprocess.",
        "",
        "```",
        ".venv/bin/python bench/download.py --incremental-images 10000   # the published run: 3000 images, 3 repeats, 20 ms latency; about 10 minutes",
        ".venv/bin/python bench/download.py --search    # first try a grid of img2dataset configurations",
        ".venv/bin/python bench/download.py --images 10000 --repeats 5 --latency-ms 50",
        "```",
        "",
        "- **images/s end to end**: images stored / wall time of the whole command.",
        "- **images/s steady**: the same without interpreter and process start-up and shut-down, by each tool's "
        "own clock: the `download_images` call; img2dataset's first shard start to last shard end.",
        "- **CPU ms/image**: user+sys time of the tool's whole process tree (`getrusage(RUSAGE_CHILDREN)`) per "
        f"image; **net** subtracts the same command on {parameters['startup_images']} images (start-up).",
        "- **CPU-bound images/s**: what that CPU time allows if the tool and the server had every CPU to "
        f"themselves: {machine['usable_cpus']} x 1000 / (net CPU ms/image + server CPU ms/image). An upper bound "
        "for a machine with nothing else running, not a measurement.",
        "- **CPUs used**: the tool's net CPU time / its steady time: how much of the machine it got while "
        "downloading. **other jobs**: CPUs kept busy by other processes on the machine during the run "
        "(`/proc/stat`).",
        "",
        f"Last run: {results['created']}; {parameters['images']} images; {parameters['latency_ms']:g} ms added per "
        f"response; medians of {parameters['repeats']} repeats, the tools interleaved. Machine: "
        f"{machine['usable_cpus']} CPUs ({machine['cpu_model'] or 'unknown model'}), shared: other jobs kept a median "
        f"{other_jobs:.1f} CPUs busy during the runs (load average {machine['load_average_at_start'][0]} at the "
        f"start, {machine['load_average_at_end'][0]} at the end). bioasset: Python {versions['bioasset']['python']}, "
        f"Pillow {versions['bioasset'].get('pillow', '?')} (libjpeg-turbo {versions['bioasset']['libjpeg'].split()[0]}), "
        f"simplejpeg {versions['bioasset'].get('simplejpeg', '?')}, OpenCV "
        f"{versions['bioasset'].get('opencv-python-headless', '?')}, aiohttp {versions['bioasset'].get('aiohttp', '?')}, "
        f"uvloop {versions['bioasset'].get('uvloop', '?')}. img2dataset {i2d.get('img2dataset', '?')} (OpenCV "
        f"{i2d.get('opencv-python-headless', i2d.get('opencv-python', '?'))}, albumentations "
        f"{i2d.get('albumentations', '?')}) in its own virtualenv.",
        "",
    ]
    for case, description in parameters["cases"].items():
        lines += [f"### {description[0].upper() + description[1:]}", "",
                  "| tool | images/s end to end | images/s steady | CPU-bound images/s | CPU ms/image | net CPU "
                  "ms/image | server CPU ms/image | start-up wall s / CPU s | CPUs used | other jobs (CPUs) "
                  "| stored MB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, row in medians[case].items():
            lines.append(
                f"| {name} | {row['images_per_s']:.0f} | {row['steady_images_per_s']:.0f} "
                f"| {row['cpu_bound_images_per_s']:.0f} | {row['cpu_ms_per_image']:.2f} "
                f"| {row['net_cpu_ms_per_image']:.2f} | {row['server_cpu_ms_per_image']:.2f} "
                f"| {startup[name]['wall_s']:.1f} / {startup[name]['cpu_s']:.1f} | {row['cpus_used']:.2f} "
                f"| {row['other_jobs_cpus']:.1f} "
                f"| {row['image_bytes'] / 1e6:.1f} |")
        lines.append("")
        for kind, ratio in ratios[case].items():
            lines.append(
                f"- {kind} ({ratio['bioasset']} / {ratio['img2dataset']}): {ratio['steady_images_per_s']:.2f}x the "
                f"steady images/s, {ratio['images_per_s']:.2f}x end to end, {ratio['cpu_bound_images_per_s']:.2f}x "
                f"CPU-bound; {ratio['net_cpu_per_image']:.2f}x the net CPU per image.")
        lines.append("")
    lines += [
        "### Incremental update: 1% new photos",
        "",
        "After each full run, bioasset (first configuration) reruns into the same store with 1% more URLs: "
        "images already verified are skipped (journal plus one `stat` each) and only the new ones are fetched. "
        "The whole command includes about 0.3 s of interpreter start-up and imports (aiohttp, Pillow, numpy, "
        "fsspec; OpenCV and simplejpeg once an image is resized), the same for any size, so its ratio falls as runs "
        "grow.",
        "",
        "| case | images | full run s | rerun s | rerun / full | `download_images` full s | rerun s | rerun / full |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in incremental.values():
        lines.append(f"| {row['case']} | {row['images']} | {row['full_wall_s']:.2f} | {row['rerun_wall_s']:.2f} "
                     f"| {row['ratio_wall']:.1%} | {row['full_call_s']:.2f} | {row['rerun_call_s']:.3f} "
                     f"| {row['ratio_call']:.1%} |")
    speed, inc = targets["images_per_s_vs_img2dataset"], targets["incremental_1pct"]
    lines += [
        "",
        "### Targets",
        "",
        f"- At least 1.5x img2dataset's images/s (steady, fastest configuration of each, worst case): "
        f"{speed['measured']:.2f}x, {'met' if speed['met'] else 'not met'}; end to end {speed['end_to_end']:.2f}x; "
        f"CPU-bound {speed['cpu_bound']:.2f}x; matched configurations {speed['matched_steady']:.2f}x steady.",
        f"- A 1% incremental update costs at most 5% of the full run (whole command, worst case): "
        f"{inc['measured']:.1%}, {'met' if inc['met'] else 'not met'}; the `download_images` call alone: "
        f"{inc['download_images_call']:.1%}, {'met' if inc['call_met'] else 'not met'}"
        + "".join(f"; whole command at {key.split('_')[-2]} images: {value:.1%}"
                  for key, value in inc.items() if key.startswith("whole_command_at_")) + ".",
        "",
        *DOCS_NOTES,
    ]
    return "\n".join(lines) + "\n"


DOCS_NOTES = [
    "### Configurations",
    "",
    "- Same URL list, server and output for both tools: JPEGs with shorter side 256 at quality 90 (bioasset "
    "`resize_shorter_side=256, jpeg_quality=90`; img2dataset `--resize_mode keep_ratio --image_size 256 "
    "--resize_only_if_bigger True --encode_quality 90`), or, without resize, the bytes as downloaded after a "
    "full decode check (img2dataset `--resize_mode no --skip_reencode True`). Both write one file per image to "
    "local disk (img2dataset `--output_format files`, which adds a `.json` per image and a Parquet per shard; "
    "bioasset adds its journal) and both hash every image with SHA-256. The resized images have the same pixel "
    "sizes. bioasset decodes with simplejpeg (libjpeg-turbo), filters with OpenCV (a Gaussian prefilter and "
    "bilinear sampling, together the smoothing of antialiased bilinear) and encodes with Pillow; img2dataset "
    "decodes, resizes (INTER_AREA) and encodes with OpenCV.",
    "- `bioasset cN dM`: one process; one asyncio event loop with N requests in flight (aiohttp, keep-alive) "
    "and M decode/resize threads (without `dM`: one per usable CPU, the engine's default; N=16 is its default "
    "too). The first bioasset row is matched to the first img2dataset row; `c64 d4` keeps more work queued "
    "for more threads, which win a bigger share of a machine that other jobs also load.",
    "- `bioasset Px cN`: P such processes at once, each one `download_images` call over every P-th URL with "
    "its own journal, into the same store: how Dagster runs P `taxon_images` partitions at once (`dagster.yaml` "
    "allows 2 concurrent runs). Its steady time is first call start to last call end, as img2dataset's is "
    "first shard start to last shard end. Compared with `img2dataset 2x16`, the same number of processes.",
    "- `img2dataset PxT`: P download processes of T threads each (urllib, one connection per request); each "
    "process decodes and resizes on one thread. `--extract_exif False` (bioasset does not parse EXIF), "
    "`--retries 0`, `--timeout 30`, two shards per process. `1x16` is matched to `bioasset c16` (one process, "
    "16 requests in flight); `--search` tries 1-4 processes of 8-64 threads.",
    "- On a shared machine the measured images/s depend on how much of the CPUs each tool gets (*CPUs used*) "
    "next to the other jobs; the CPU-time columns do not.",
    "- Every run writes into a new folder, and all are deleted when the benchmark ends: on this machine's ext4 "
    "(no journal) a file created soon after many deletions nearby costs 0.3-0.7 ms of kernel CPU instead of "
    "about 0.05 ms, so deleting the previous run's output first would bill each run for it, by run order.",
]


# --------------------------------------------------------------------------------------------
# the bioasset side, run in a subprocess of the benchmark


def run_bioasset_in_process(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="download.py _run-bioasset")
    parser.add_argument("--urls", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--resize", type=int, default=0)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--decode-threads", type=int, default=None)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--journal", default="default")
    args = parser.parse_args(argv)
    if args.processes > 1:
        return run_bioasset_processes(args)
    sys.path.insert(0, str(REPO))
    from bioasset.download import DownloadItem, download_images

    items = []
    for url in args.urls.read_text().split():
        photo_id, file_name = url.rsplit("/", 2)[-2:]
        size, extension = file_name.split(".")
        items.append(DownloadItem(int(photo_id), url, size, extension))
    started_at, started = time.time(), time.perf_counter()
    report = download_images(items, args.store, concurrency=args.concurrency, decode_threads=args.decode_threads,
                             resize_shorter_side=args.resize or None, jpeg_quality=args.quality, journal=args.journal)
    call_s = time.perf_counter() - started
    print(json.dumps({"call_s": call_s, "started_at": started_at, "ended_at": started_at + call_s,
                      "report_elapsed_s": report.elapsed_s, "counts": report.counts,
                      "bytes_downloaded": report.bytes_downloaded, "bytes_stored": report.bytes_stored}))


def run_bioasset_processes(args: argparse.Namespace) -> None:
    """``--processes P``: P runs of this command, each on every P-th URL with its own journal, at once
    (as P ``taxon_images`` partitions in parallel runs); their steady time is first call start to last
    call end, like img2dataset's first shard start to last shard end."""
    urls = args.urls.read_text().split()
    children = []
    for index in range(args.processes):
        part = args.urls.with_name(f"{args.urls.stem}.part{index}{args.urls.suffix}")
        part.write_text("\n".join(urls[index:: args.processes]) + "\n")
        command = [sys.executable, str(Path(__file__).resolve()), "_run-bioasset", "--urls", str(part),
                   "--store", str(args.store), "--resize", str(args.resize), "--quality", str(args.quality),
                   "--concurrency", str(args.concurrency), "--journal", f"part{index}",
                   *(["--decode-threads", str(args.decode_threads)] if args.decode_threads else [])]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    reports = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"a bioasset process exited with {child.returncode}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    started_at, ended_at = min(r["started_at"] for r in reports), max(r["ended_at"] for r in reports)
    counts = {outcome: sum(r["counts"][outcome] for r in reports) for outcome in reports[0]["counts"]}
    print(json.dumps({"call_s": ended_at - started_at, "started_at": started_at, "ended_at": ended_at,
                      "report_elapsed_s": max(r["report_elapsed_s"] for r in reports), "counts": counts,
                      "bytes_downloaded": sum(r["bytes_downloaded"] for r in reports),
                      "bytes_stored": sum(r["bytes_stored"] for r in reports)}))

if __name__ == "__main__":
    main()
