#!/usr/bin/env bash
# The test command: installs what is missing, then lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests also install the optional 0.5B draft model: the speculative-decoding test runs it for real.
PERSONA_LLM_DRAFT=1 bash scripts/install.sh
. .venv/bin/activate
ruff check persona_llm tests bench
mypy
python -m pytest -q -p no:cacheprovider --durations=30
