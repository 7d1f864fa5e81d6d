#!/usr/bin/env bash
# Set up (.venv, dev dependencies) and run every check: ruff, mypy, the test suite.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" -r requirements-dev.txt -e .
echo "[initwise] ruff"; ruff check src tests benchmarks
echo "[initwise] mypy"; mypy
echo "[initwise] pytest"; python -m pytest -q "$@"
