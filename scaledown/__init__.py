"""ScaleDown: a distributed trainer for OSCAR-style query-dependent soft compression in RAG.

`from scaledown import ScaleDownConfig, ScaleDownModel` is the original ScaleDown code's interface
(scaledown/compat.py), imported on first use so that `import scaledown` stays light.
"""

import logging

# bitsandbytes (0.50, imported by peft whenever it is installed) warns at import, on CPUs with avx512_bf16, that an
# optional kernel from the Hugging Face hub did not load; it then uses its own. Not a problem of the run.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def __getattr__(name):
    if name in ("ScaleDownConfig", "ScaleDownModel", "ScaleDownDataset", "ScaleDownTrainer", "TwoStageNLayersTrainer",
                "TwoStageModernBERTTrainer"):
        from scaledown import compat

        return getattr(compat, name)
    raise AttributeError(f"module 'scaledown' has no attribute {name!r}")
