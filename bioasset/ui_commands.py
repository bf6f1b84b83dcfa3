"""``bioasset ui dagster|mlflow``: open the web UIs on the embedded defaults."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bioasset import config
from bioasset.instance import ensure_dagster_home

REPO_ROOT = Path(__file__).resolve().parents[1]


def dagster_ui_command(host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """``dagster dev`` (webserver + daemon, which the sensors need) on this code location."""
    return [sys.executable, "-m", "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", host, "-p", str(port)]


def mlflow_ui_command(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", config.mlflow_tracking_uri(),
        "--default-artifact-root", config.mlflow_artifact_root(),
        "--host", host, "--port", str(port),
    ]


def _run(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    if args.which == "dagster":
        command = dagster_ui_command(args.host, args.port or 3000)
    else:
        config.mlflow_dir().mkdir(parents=True, exist_ok=True)
        command = mlflow_ui_command(args.host, args.port or 5000)
    print("$ " + " ".join(command), flush=True)
    os.chdir(REPO_ROOT)
    os.execv(command[0], command)
    return 0  # not reached


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ui", help="open the Dagster or MLflow web UI on the embedded defaults")
    parser.add_argument("which", choices=["dagster", "mlflow"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: 3000 for dagster, 5000 for mlflow")
    parser.set_defaults(func=_run)
