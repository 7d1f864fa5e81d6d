#!/usr/bin/env bash
# Set up (.venv, runtime + report dependencies) and run the main job on built-in data.
# Options are passed on: bash scripts/demo.sh --jobs 2, bash scripts/demo.sh --preset he2015.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" -e '.[report]'
rc=0
python -m initwise compare "$@" || rc=$?
echo "[initwise] to type 'initwise ...' yourself: source .venv/bin/activate" >&2
exit "$rc"
