"""The original ScaleDown code's import path for its trainer: `from scaledown.training import ScaleDownTrainer`
(scaledown/compat.py; the loop itself is scaledown/train.py)."""

from scaledown.compat import ScaleDownTrainer, TwoStageModernBERTTrainer, TwoStageNLayersTrainer

__all__ = ["ScaleDownTrainer", "TwoStageModernBERTTrainer", "TwoStageNLayersTrainer"]
