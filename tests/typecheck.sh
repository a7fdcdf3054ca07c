#!/usr/bin/env bash
# Type-check the probes and the monitoring core with mypy.
# The repository keeps app/, probes/ and widgets/ at its top while the package is numatop_llm
# (see pyproject's package-dir): mypy gets the installed layout as a tree of symlinks.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT
mkdir -p "$TREE/numatop_llm"
for f in "$REPO"/app/*; do ln -s "$f" "$TREE/numatop_llm/"; done
ln -s "$REPO/probes" "$TREE/numatop_llm/probes"
ln -s "$REPO/widgets" "$TREE/numatop_llm/widgets"
cd "$TREE"
"$PY" -m mypy --config-file "$REPO/pyproject.toml" --cache-dir "$REPO/.mypy_cache" \
  -p numatop_llm.probes -p numatop_llm.monitor -p numatop_llm.units
