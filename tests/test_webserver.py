"""A real client: the Dagster webserver on a loopback port reports the code location loaded."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation { repositories { name jobs { name } assetNodes { assetKey { path } } } }
        }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_webserver_loads_code_location(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BIOASSET_HOME")}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster"), BIOASSET_HOME=str(tmp_path / "home"))
    (tmp_path / "dagster").mkdir()
    log = open(tmp_path / "webserver.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, _tail(log)
            try:
                if requests.get(f"{base}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "webserver did not come up:\n" + _tail(log)
            time.sleep(0.5)

        # The location may still be loading right after the server answers: poll until it settles.
        while True:
            response = requests.post(f"{base}/graphql", json={"query": WORKSPACE_QUERY}, timeout=30)
            response.raise_for_status()
            workspace = response.json()["data"]["workspaceOrError"]
            assert workspace["__typename"] == "Workspace", workspace
            entries = workspace["locationEntries"]
            location = entries[0]["locationOrLoadError"] if entries else None
            if location is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)

        assert [e["name"] for e in entries] == ["bioasset.definitions"], entries
        assert location["__typename"] == "RepositoryLocation", location
        jobs = {job["name"] for repo in location["repositories"] for job in repo["jobs"]}
        assert "ingest_snapshot_job" in jobs
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-4000:]
