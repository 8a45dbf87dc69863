#!/usr/bin/env bash
# Create .venv in the repo root and install ScaleDown with the DeepSpeed and test extras.
# CPU machines get the CPU build of torch (2.13.0); set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    $PIP install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
$PIP install -q -e ".[gpu,data,dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, deepspeed, transformers, peft; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
