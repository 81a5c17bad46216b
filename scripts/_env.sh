# Shared by scripts/test.sh and scripts/demo.sh: create or refresh .venv, set caches.
# Source it from the repository root. Reinstalls only when requirements.txt or pyproject.toml change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[env] installing requirements (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  echo "$want" > "$STAMP"
else
  echo "[env] .venv is up to date"
fi
# The package must be this checkout's: after the checkout moved, or with a .venv another worktree installed into,
# scripts run from elsewhere (subprocesses, the launcher) would silently import that other tree's code.
installed="$(cd / && "$VENV/bin/python" -c 'import importlib.util as u, os; s = u.find_spec("nextgpt")
print(os.path.realpath(s.origin) if s and s.origin else "")' 2>/dev/null || true)"
if [ "$installed" != "$(cd "$ROOT" && pwd -P)/nextgpt/__init__.py" ]; then
  echo "[env] installing nextgpt from $ROOT (the environment's was: ${installed:-none})"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
fi
# DeepSpeed JIT-compiles C++ ops; keep them in the checkout so they survive between runs (per venv).
export TORCH_EXTENSIONS_DIR="$ROOT/.cache/torch_extensions"
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
export PATH="$VENV/bin:$PATH"
