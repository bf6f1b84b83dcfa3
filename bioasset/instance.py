"""The embedded Dagster instance under ``BIOASSET_HOME/dagster``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bioasset import config

#: The repository's instance settings (present in a source checkout / editable install).
REPO_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def ensure_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at the embedded instance folder and give it our ``dagster.yaml``.

    An explicit ``DAGSTER_HOME`` wins (a deployment's own instance); otherwise the instance lives
    in ``BIOASSET_HOME/dagster`` so that the CLI, ``dagster dev`` and the demo share one history.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or config.dagster_home())
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if REPO_DAGSTER_YAML.exists() and not target.exists():
        shutil.copyfile(REPO_DAGSTER_YAML, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
