# Sourced by run_all.sh and run_tests.sh. Sets PY to a Python that has grokprobe (from THIS
# checkout) and everything the scripts need; installs what is missing, once.
#
#   - an active virtualenv or conda env is used as it is (installed into if something is missing);
#   - otherwise ./.venv is created and used;
#   - torch: 2.13.0 (CPU wheel) when no NVIDIA GPU is visible, else the default CUDA build;
#     GROKPROBE_TORCH="torch==X" overrides the spec.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_grokprobe_ready() {
  "$1" - "$ROOT" <<'PY' 2>/dev/null
import importlib.util, pathlib, sys
root = pathlib.Path(sys.argv[1]).resolve()
mods = ["torch", "numpy", "matplotlib", "sklearn", "papermill", "nbconvert", "nbformat", "ipykernel",
        "pytest", "nbmake", "xdist", "ruff", "nbstripout"]
missing = [m for m in mods if importlib.util.find_spec(m) is None]
import grokprobe  # an install from another checkout would test the wrong code
ok = not missing and pathlib.Path(grokprobe.__file__).resolve().is_relative_to(root / "lib")
sys.exit(0 if ok else 1)
PY
}

_in_env() {
  "$1" -c 'import os, sys; sys.exit(0 if (sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX")) else 1)'
}

if [ -x "$ROOT/.venv/bin/python" ]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="${PYTHON:-python3}"
fi

if ! _grokprobe_ready "$PY"; then
  if [ "$PY" != "$ROOT/.venv/bin/python" ] && ! _in_env "$PY"; then
    echo "[setup] creating $ROOT/.venv"
    "$PY" -m venv "$ROOT/.venv"
    PY="$ROOT/.venv/bin/python"
  fi
  echo "[setup] installing into $("$PY" -c 'import sys; print(sys.prefix)')"
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if [ -n "${GROKPROBE_TORCH:-}" ]; then
      spec="$GROKPROBE_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      spec="torch"
    else
      spec="torch==2.13.0"  # CPU machines: the CPU wheel (a plain 'torch' pulls a multi-GB CUDA build)
    fi
    echo "[setup] pip install $spec"
    "$PY" -m pip install -q "$spec"
  fi
  echo "[setup] pip install -e .[dev]"
  "$PY" -m pip install -q -e "$ROOT[dev]"
  _grokprobe_ready "$PY" || { echo "[setup] installation incomplete: see the pip output above" >&2; exit 1; }
fi
export PY
