#!/usr/bin/env bash
# The whole test suite from a fresh clone: set up, lint, type-check, test.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter]); fails on an upward import
scripts/ensure_chromium.sh  # Debian's headless Chromium for the page test
export HF_HUB_OFFLINE=1  # tests build their own tiny checkpoints; never reach for a hub
# A throwaway PostgreSQL on loopback for the catalog / full-text tests (skipped if none can run).
scripts/with_postgres.sh .venv/bin/python -m pytest "$@"
