#!/usr/bin/env bash
# The README's test command: sets up .venv on first use (or when requirements change), then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config -x` or `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
exec python -m pytest "$@"
