#!/usr/bin/env bash
# Install everything the test suite needs, then run every test.
# Used by the README's test command and by CI (.ci/run). Idempotent: a second run only runs tests.
#   bash tests/run.sh           every test (what CI runs)
#   bash tests/run.sh --fast    the fast tier: no real engine, VM, tmux or benchmark (~2 min);
#                               installs only the project venv
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
if [ "${1:-}" = "--fast" ]; then
  FAST=1
  shift
  set -- -m "not (vm or vllm or tmux or slow)" "$@"
fi
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\n== %s\n' "$*"; }

# 1. System packages the tests drive for real (numactl binds, tmux terminals, rsvg-convert PNGs,
#    Prometheus scrapes). The QEMU guest harness installs its own in tests/vm/build.sh.
APT_PKGS=(numactl tmux librsvg2-bin prometheus)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: not root, cannot install ${missing[*]}; tests needing them will say so" >&2
  fi
fi

# 2. The project and its test dependencies, in the project's own virtual environment.
say "project venv (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'

# 3. Real testbeds, cached outside the repo: a vLLM CPU engine with a tiny model, and QEMU guests.
if [ "$FAST" = 0 ] && [ -f tests/testbed/build_vllm.sh ]; then
  say "vLLM CPU testbed"
  bash tests/testbed/build_vllm.sh
fi
if [ "$FAST" = 0 ] && [ -f tests/vm/build.sh ]; then
  say "QEMU multi-NUMA guests"
  bash tests/vm/build.sh
fi

# 4. Lint and every test. pytest's exit code 5 (nothing collected) is a failure here.
say "ruff"
.venv/bin/ruff check .
say "mypy (probes and the monitoring core)"
bash tests/typecheck.sh
say "pytest"
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
