#!/usr/bin/env bash
# The README's test command: set up what the tests need, lint, check the import
# layers, then run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
echo "== ruff"
.venv/bin/ruff check spoolgate tests bench
echo "== import layers"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/python -m pytest "$@"
