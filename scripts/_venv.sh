# Sourced by the other scripts: create .venv (once) and install initwise with what it needs.
# torch is pinned to 2.13.0 (the CPU build) through constraints.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[initwise] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q --disable-pip-version-check -c constraints.txt "$@"
