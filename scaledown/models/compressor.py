"""Compressors: read (query, document, memory tokens) and return the hidden states at the memory tokens.

Inputs are left-padded, so the memory tokens (and `<RR>`) are always the last positions of every row; position
ids are counted from the attention mask, so a padded row sees the same positions as the row run alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the attended tokens of each row (padding gets 0, it is masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_backbone(causal_lm: PreTrainedModel) -> nn.Module:
    """The decoder stack (embeddings + layers + final norm) under a causal LM's head, e.g. `LlamaModel`."""
    return getattr(causal_lm, causal_lm.base_model_prefix)


class NLayersCompressor(nn.Module):
    """A separate, fully trainable copy of the generator's embeddings and first N decoder layers.

    The final norm is replaced by the identity: the generator's layer N+1 expects un-normalised hidden states,
    and the memory embeddings are spliced in where the generator's own first-layer inputs would be.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @classmethod
    def empty(cls, generator_config, num_layers: int, dtype: torch.dtype) -> NLayersCompressor:
        """The architecture only (random init): for loading saved weights."""
        config = copy.deepcopy(generator_config)
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
        backbone = AutoModel.from_config(config, dtype=dtype)
        backbone.norm = nn.Identity()
        return cls(backbone)

    @classmethod
    def from_generator(cls, causal_lm: PreTrainedModel, num_layers: int) -> NLayersCompressor:
        """Copy the generator's embeddings (already resized for memory tokens) and first `num_layers` layers."""
        total = causal_lm.config.num_hidden_layers
        if not 1 <= num_layers < total:
            raise ValueError(f"compressor_layers={num_layers} must be in [1, {total - 1}] for a generator with "
                             f"{total} layers")
        compressor = cls.empty(causal_lm.config, num_layers, causal_lm.dtype)
        source = decoder_backbone(causal_lm).state_dict()
        target = compressor.backbone.state_dict()
        missing = [k for k in target if k not in source]
        if missing:
            raise ValueError(f"cannot copy generator layers into the compressor: missing {missing[:5]}")
        compressor.backbone.load_state_dict({k: source[k].detach().clone() for k in target})
        return compressor

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    def forward(self, input_ids, attention_mask, tail: int) -> torch.Tensor:
        """Hidden states of the last `tail` positions: [rows, tail, hidden]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        return out.last_hidden_state[:, -tail:]


class EncoderCompressor(nn.Module):
    """An encoder or small LM plus a Linear -> ReLU -> Linear projection to the generator's hidden size."""

    def __init__(self, backbone: nn.Module, projection_hidden: int, output_size: int):
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.projection = nn.Sequential(nn.Linear(width, projection_hidden), nn.ReLU(),
                                        nn.Linear(projection_hidden, output_size))
        self.projection.to(next(backbone.parameters()).dtype)

    @classmethod
    def load(cls, name_or_path: str, projection_hidden: int, output_size: int, dtype: torch.dtype,
             trust_remote_code: bool = False) -> EncoderCompressor:
        backbone = AutoModel.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(backbone, projection_hidden, output_size)

    @classmethod
    def empty(cls, backbone_config: dict, projection_hidden: int, output_size: int,
              dtype: torch.dtype) -> EncoderCompressor:
        fields = dict(backbone_config)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        return cls(AutoModel.from_config(config, dtype=dtype), projection_hidden, output_size)

    @property
    def hidden_size(self) -> int:
        return self.projection[-1].out_features

    def forward(self, input_ids, attention_mask, tail: int) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask))
        # Project only the memory positions: the projection is wide (8096 in the paper).
        return self.projection(out.last_hidden_state[:, -tail:])
