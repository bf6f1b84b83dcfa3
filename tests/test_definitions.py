"""The code location loads and passes Dagster's own validation; the CLI is wired."""

import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from bioasset.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate_loadable():
    from bioasset.definitions import defs

    Definitions.validate_loadable(defs)


def test_dagster_definitions_validate_command(tmp_path):
    """`dagster definitions validate` from the repo root, as a user would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**_clean_env(), "DAGSTER_HOME": str(tmp_path), "BIOASSET_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in (result.stdout + result.stderr)


def test_loading_the_code_location_leaves_torch_mlflow_and_matplotlib_unimported():
    """Every run, sensor tick and UI reload loads the code location: the heavy libraries wait until
    an asset needs them (importing them took 5 of the 6.4 s the load used to take)."""
    heavy = ("torch", "torchvision", "mlflow", "matplotlib", "cv2")
    code = f"import sys, bioasset.definitions; print([name for name in {heavy!r} if name in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_clean_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_taxon_images_sensor_runs_are_single_process():
    from bioasset.definitions import defs

    for name in ("taxon_images_job", "taxon_images_batch_job"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process"
    sensor = defs.resolve_sensor_def("taxon_images_sensor")
    assert sorted(target.job_name for target in sensor.targets) == ["taxon_images_batch_job", "taxon_images_job"]


def test_automatic_freezes_leave_out_the_check_that_reads_every_image():
    from dagster import AssetCheckKey, AssetKey

    from bioasset.definitions import defs

    graph = defs.resolve_asset_graph()
    match_check = AssetCheckKey(AssetKey("dataset_version"), "images_match_version")
    assert match_check in graph.asset_check_keys
    selection = defs.resolve_sensor_def("dataset_version_sensor").asset_selection
    assert selection.resolve(graph) == {AssetKey("dataset_version")}
    assert match_check not in selection.resolve_checks(graph)


def test_cli_lists_every_command(capsys):
    help_text = build_parser().format_help()
    for command in ("datasets", "demo", "images", "predict", "sample-bucket", "snapshots", "ui"):
        assert command in help_text


def _clean_env():
    import os

    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIOASSET_HOME")}


def test_classes_of_unfinished_download_runs_count_as_in_flight():
    from dagster import DagsterRunStatus, instance_for_test

    from bioasset.definitions import defs
    from bioasset.jobs.taxon_images_batch import batch_run_config
    from bioasset.sensors.dataset_sensors import classes_in_flight

    with instance_for_test() as instance:
        def run(job: str, status: DagsterRunStatus, **options):
            return instance.create_run_for_job(defs.resolve_job_def(job), status=status, **options)

        run("taxon_images_job", DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": "1-queued"})
        run("taxon_images_job", DagsterRunStatus.STARTED, tags={"dagster/partition": "2-running"})
        run("taxon_images_job", DagsterRunStatus.SUCCESS, tags={"dagster/partition": "3-done"})
        batch = batch_run_config(["4-batched", "5-batched"])
        run("taxon_images_batch_job", DagsterRunStatus.STARTED, run_config=batch)
        finished = batch_run_config(["6-finished"])
        run("taxon_images_batch_job", DagsterRunStatus.FAILURE, run_config=finished)
        run("ingest_snapshot_job", DagsterRunStatus.STARTED, tags={"dagster/partition": "2026-10-27"})

        assert classes_in_flight(instance) == {"1-queued", "2-running", "4-batched", "5-batched"}
