#!/usr/bin/env bash
# Set up (.venv, runtime + report dependencies) and run the main job on built-in data.
set -euo pipefail
. "$(dirname "$0")/_venv.sh" -e '.[report]'
python -m initwise compare "$@"
