# Sourced by scripts/demo and scripts/test: create or reuse ./.venv and install bioasset into it.
# Needs only Python >= 3.11 and git. Reinstalls when pyproject.toml changes.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "bioasset needs Python >= 3.11, but '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
    echo "Fix: install Python 3.11+ and run again with PYTHON=/path/to/python3.11." >&2
    exit 2
fi

VENV="$REPO_ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.bioasset-installed"
WANT="$(cat pyproject.toml | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    # A fresh install leaves a 6.8 GiB venv (torch ships its CUDA libraries), plus pip's temporary
    # files while it runs (in TMPDIR; 8.2 GiB at the peak here, the test run's files included).
    # Under 7.5 GiB it cannot succeed, and pip's own "No space left on device" comes minutes in,
    # halfway through: say it first. Only for a fresh install: an update of an existing venv needs little.
    NEED_MIB=7680
    FREE_MIB="$(df -Pm "$VENV" 2>/dev/null | awk 'NR==2 {print $4}')" || FREE_MIB=""
    if [ ! -f "$STAMP" ] && [ -n "$FREE_MIB" ] && [ "$FREE_MIB" -lt "$NEED_MIB" ]; then
        echo "bioasset: installing into $VENV needs about 7.5 GiB ($NEED_MIB MiB) free on its filesystem, but only ${FREE_MIB} MiB is free." >&2
        echo "Fix: free disk space there (old clones' .venv folders are 6.8 GiB each), or run from a checkout on a larger disk." >&2
        exit 2
    fi
    echo "==> installing bioasset and its dependencies into $VENV (first run takes a few minutes: torch is large)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    echo "$WANT" > "$STAMP"
fi

export BIOASSET_HOME="${BIOASSET_HOME:-$REPO_ROOT/.bioasset}"
export DAGSTER_HOME="${DAGSTER_HOME:-$BIOASSET_HOME/dagster}"
