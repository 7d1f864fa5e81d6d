#!/usr/bin/env bash
# Regenerate docs/report.png, the picture of the report in the README: the top of
# initwise-report/index.html (run `bash scripts/demo.sh` first) rendered by headless Chromium
# (Debian: apt-get install chromium), then reduced to a small palette PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT="${1:-initwise-report/index.html}"
OUT="${2:-docs/report.png}"
BROWSER="$(command -v chromium || command -v chromium-browser || command -v google-chrome)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$BROWSER" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1100,1500 --screenshot="$TMP/full.png" "file://$(realpath "$REPORT")" \
  >/dev/null 2>&1
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$PY" - "$TMP/full.png" "$OUT" <<'PYEOF'
import sys
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
img = img.resize((img.width * 7 // 10, img.height * 7 // 10), Image.LANCZOS)
# octree keeps the rare series colours (median cut merged the purple LSUV swatch into grey)
img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(sys.argv[2], optimize=True)
print(f"{sys.argv[2]}: {img.width}x{img.height}")
PYEOF
