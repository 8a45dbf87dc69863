#!/usr/bin/env bash
# The test suite on a fresh clone or an existing checkout: set up .venv when it is missing, then pytest.
# Extra arguments go to pytest (e.g. `bash launchers/test.sh tests/test_config.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import scaledown, deepspeed, pytest, jsonargparse" 2>/dev/null; then
    bash launchers/setup.sh
fi
exec .venv/bin/python -m pytest -q "$@"
