"""ScaleDown: a distributed trainer for OSCAR-style query-dependent soft compression in RAG.

`from scaledown import ScaleDownConfig, ScaleDownModel` is the original ScaleDown code's interface
(scaledown/compat.py), imported on first use so that `import scaledown` stays light.
"""


def __getattr__(name):
    if name in ("ScaleDownConfig", "ScaleDownModel", "ScaleDownDataset", "ScaleDownTrainer", "TwoStageNLayersTrainer",
                "TwoStageModernBERTTrainer"):
        from scaledown import compat

        return getattr(compat, name)
    raise AttributeError(f"module 'scaledown' has no attribute {name!r}")
