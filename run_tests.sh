#!/usr/bin/env bash
# ./run_tests.sh [extra pytest args]: lint, notebook hygiene, unit tests and every notebook
# through nbmake with the smoke profile, in one pytest run.
set -euo pipefail
cd "$(dirname "$0")"
source tools/setup.sh

echo "[lint] ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "[hygiene] notebooks committed without outputs"
"$PY" -m nbstripout --verify --extra-keys "metadata.papermill cell.metadata.papermill" notebooks/*.ipynb

jobs=$("$PY" -c "import os; print(min(2, os.cpu_count() or 1))")
echo "[tests] unit tests + notebooks (nbmake, GROKPROBE_PROFILE=smoke), -n $jobs"
GROKPROBE_PROFILE=smoke MPLBACKEND=agg "$PY" -m pytest tests notebooks --nbmake --nbmake-timeout=900 \
  -n "$jobs" --dist loadfile -q "$@"
