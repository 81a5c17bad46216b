#!/usr/bin/env bash
# The README's test command: sets up .venv on first use (or when requirements change), then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config -x` or `bash scripts/test.sh -m slow`.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  cat <<'HELP'
usage: bash scripts/test.sh [PYTEST ARGUMENTS ...]

Runs the test suite with pytest (on the CPU; tiny models built on the fly). Creates or refreshes .venv from
requirements.txt first (a few minutes the first time). Every argument goes to pytest, e.g.
  bash scripts/test.sh -k resume -x        tests whose name contains "resume", stop at the first failure
  bash scripts/test.sh tests/test_config.py
  bash scripts/test.sh -m "not slow"       without the long multi-process tests
Tests that need the shared sample data (../shared or $NEXTGPT_SHARED) skip when it is absent.
HELP
  exit 0
fi
cd "$(dirname "$0")/.."
source scripts/_env.sh
exec python -m pytest "$@"
