"""Compressors: read (query, document, memory tokens) and return the hidden states at the memory tokens.

Inputs are left-padded, so the memory tokens (and `<RR>`) are always the last positions of every row; position
ids are counted from the attention mask, so a padded row sees the same positions as the row run alone.

`COMPRESSORS` maps `model.compressor` to its class. A class says everything the rest of the code needs to know
about its kind: how to build it from a config (`create`) or an export (`restore`), what an export records
about it (`export_meta`), its model config (`source_config`: the context check) and what it needs of the
generator (`check`), its trainable parameter count
before any weight loads (`count_trainable`: the memory estimate), whether tensor parallelism splits it
(`split_by_tensor_parallel`) and whether it reads `[CLS] query [SEP] document [SEP]` pairs (`encoder_pairs`).
A new kind: a class here, its line in `COMPRESSORS`, and its name and paper LR in `config.COMPRESSOR_KINDS`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel


def grow(model, vocab_size: int, mean_resizing: bool = True) -> None:
    """Make room for the added tokens; never shrink (many checkpoints pad the vocabulary past the tokenizer).
    The new rows are drawn from a fixed seed: the generator's stay frozen and are left out of checkpoints, so a
    resume must rebuild them identically whatever the caller's random state."""
    if vocab_size > model.get_input_embeddings().weight.shape[0]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.resize_token_embeddings(vocab_size, mean_resizing=mean_resizing)


def _params(module: nn.Module) -> int:
    return sum({id(p): p.numel() for p in module.parameters()}.values())  # tied weights once


class AddedRowsEmbedding(nn.Module):
    """A token embedding whose rows before `first` are frozen (a buffer: no gradient, no optimizer state) and
    whose rows from `first` on (the added tokens) train (model.compressor_embeddings=added)."""

    def __init__(self, table: nn.Embedding, first: int):
        super().__init__()
        weight = table.weight.detach()
        self.register_buffer("frozen", weight[:first].clone())
        self.rows = nn.Parameter(weight[first:].clone())

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.frozen, self.rows.to(self.frozen.dtype)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        first = self.frozen.shape[0]
        added = input_ids >= first
        base = nn.functional.embedding(input_ids.masked_fill(added, 0), self.frozen)
        rows = nn.functional.embedding((input_ids - first).clamp(min=0), self.rows).to(base.dtype)
        return torch.where(added[..., None], rows, base)


def train_added_rows_only(compressor: nn.Module, first: int) -> None:
    """Freeze the compressor's token-embedding rows before `first` (the added tokens' first id)."""
    compressor.backbone.set_input_embeddings(AddedRowsEmbedding(compressor.backbone.get_input_embeddings(), first))


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

    encoder_pairs = False
    split_by_tensor_parallel = True  # its layers are the generator's: split the same way

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @classmethod
    def create(cls, config, lm, tokenizer, memory: list[str], prompt: list[str]):
        """(compressor, its tokenizer) for a new model: the generator's tokenizer, grown by the compressor rows'
        `memory` tokens and the generator prompt's tokens."""
        tokenizer.add_special_tokens({"additional_special_tokens": list(dict.fromkeys(memory + prompt))})
        grow(lm, len(tokenizer))
        return cls.from_generator(lm, config.compressor_layers), tokenizer

    @classmethod
    def restore(cls, config, lm, tokenizer, path, meta: dict):
        """(compressor, its tokenizer) shaped as the export at `path` (weights loaded by the caller)."""
        return cls.empty(lm.config, config.compressor_layers, lm.dtype), tokenizer

    def export_meta(self) -> dict:
        return {}

    @staticmethod
    def source_config(config, generator_config):
        """The HF config of what this compressor is made of."""
        return generator_config

    @staticmethod
    def check(config, generator_config) -> None:
        """Before any weight loads: refuse a compressor deeper than the generator, or a quantized generator (whose
        layers this compressor would copy)."""
        from scaledown.config import ConfigError

        if config.quantization != "none":
            raise ConfigError(f"model.quantization={config.quantization}: the n_layers compressor is a trainable "
                              "copy of the generator's first layers, which a quantized generator does not hold in "
                              "full precision; use model.compressor=encoder")
        depth = generator_config.num_hidden_layers
        if not config.compressor_layers < depth:
            raise ConfigError(f"model.compressor_layers={config.compressor_layers}: the generator {config.generator} "
                              f"has {depth} decoder layers; the n_layers compressor copies at most {depth - 1} of them")

    @staticmethod
    def count_trainable(config, meta_lm) -> int:
        """Trainable parameters, from the generator built on the meta device: its embeddings and first N layers."""
        backbone = decoder_backbone(meta_lm)
        table = backbone.embed_tokens.weight.numel() if config.compressor_embeddings == "all" else 0
        return table + sum(_params(layer) for layer in backbone.layers[: config.compressor_layers])

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

    def forward(self, input_ids, attention_mask, tail: int, position_ids=None) -> torch.Tensor:
        """Hidden states of the last `tail` positions: [rows, tail, hidden]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False)
        return out.last_hidden_state[:, -tail:]


class EncoderCompressor(nn.Module):
    """An encoder or small LM plus a Linear -> ReLU -> Linear projection to the generator's hidden size."""

    encoder_pairs = True
    split_by_tensor_parallel = False  # small: replicated on every device

    def __init__(self, backbone: nn.Module, projection_hidden: int, output_size: int):
        super().__init__()
        self.backbone = backbone
        width = backbone.config.hidden_size
        self.projection = nn.Sequential(nn.Linear(width, projection_hidden), nn.ReLU(),
                                        nn.Linear(projection_hidden, output_size))
        self.projection.to(next(backbone.parameters()).dtype)

    @classmethod
    def create(cls, config, lm, tokenizer, memory: list[str], prompt: list[str]):
        """(compressor, its tokenizer) for a new model: the encoder's own tokenizer carries the `memory` tokens,
        the generator's only the prompt's."""
        from scaledown.models.generator import DTYPES, load_tokenizer

        tokenizer.add_special_tokens({"additional_special_tokens": prompt})
        grow(lm, len(tokenizer))
        compressor_tokenizer = load_tokenizer(config.encoder, config.trust_remote_code)
        compressor_tokenizer.add_special_tokens({"additional_special_tokens": memory})
        compressor = cls.load(config.encoder, config.projection_hidden, lm.config.hidden_size, DTYPES[config.dtype],
                              config.trust_remote_code)
        grow(compressor.backbone, len(compressor_tokenizer))
        return compressor, compressor_tokenizer

    @classmethod
    def restore(cls, config, lm, tokenizer, path, meta: dict):
        from scaledown.models.generator import load_tokenizer

        return (cls.empty(meta["encoder_config"], config.projection_hidden, lm.config.hidden_size, lm.dtype),
                load_tokenizer(str(path / "compressor_tokenizer")))

    def export_meta(self) -> dict:
        return {"encoder_config": self.backbone.config.to_dict()}

    @staticmethod
    def source_config(config, generator_config):
        return AutoConfig.from_pretrained(config.encoder, trust_remote_code=config.trust_remote_code)

    @staticmethod
    def check(config, generator_config) -> None:
        """Nothing to check against the generator."""

    @staticmethod
    def count_trainable(config, meta_lm) -> int:
        """The encoder (built on the meta device from its config) and the projection."""
        enc_config = AutoConfig.from_pretrained(config.encoder, trust_remote_code=config.trust_remote_code)
        with torch.device("meta"):
            encoder = AutoModel.from_config(enc_config, trust_remote_code=config.trust_remote_code)
        width, hidden, out = enc_config.hidden_size, config.projection_hidden, meta_lm.config.hidden_size
        return _params(encoder) + width * hidden + hidden + hidden * out + out

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

    def forward(self, input_ids, attention_mask, tail: int, position_ids=None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        # Project only the memory positions: the projection is wide (8096 in the paper).
        return self.projection(out.last_hidden_state[:, -tail:])


COMPRESSORS = {"n_layers": NLayersCompressor, "encoder": EncoderCompressor}
