"""Tensor parallelism for Hugging Face decoders (Llama, Mistral, Qwen2, ...) with neuronx-distributed's layers.

`parallelize(model)` swaps, in place, the projections of every decoder layer for NxD's parallel layers, the way
NxD's Llama training example builds them:
  - q/k/v and gate/up: `ColumnParallelLinear` split by output features (whole heads on each rank), no gather;
  - o and down: `RowParallelLinear` split by input features (one all-reduce per attention and per MLP block);
  - token embeddings: `ParallelEmbedding` split by vocabulary; the LM head: split by vocabulary, logits gathered.
It walks the whole module, so the generator and the n-layers compressor (a copy of the first layers) are both
split. peft's LoRA layers are split with their base layer: B follows a column layer's output split, A a row
layer's input split; the other factor (r x d) is replicated, and receives the same gradient on every rank
because the parallel layers all-reduce the activations' gradients. Hugging Face's attention reshapes with
`view(..., -1, head_dim)` and so runs on the local heads unchanged.

Weights are copied from the dense model each process builds first: simple and exact, at the cost of holding
the dense model on the host while building (the engine lets only a few processes of a node build at a time).

`unsharded(model)` gathers the trainable split layers and the embeddings back into dense modules, for export
with the model's own `save_pretrained`. Every tensor-parallel rank must enter it (it runs collectives).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

COLUMN = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
ROW = {"o_proj", "down_proj"}


@dataclass
class Split:
    """How a parallel module divides its dense counterpart (kept on the module, read by `unsharded`)."""

    kind: str   # "linear", "embedding" or "head"
    dim: int    # the weight dimension that is split
    size: int   # its dense length (the vocabulary is padded up to a multiple of the tensor-parallel size)
    padding_idx: int | None = None


class VocabHead(nn.Module):
    """A column-parallel LM head over a vocabulary padded to a multiple of the TP size; returns the real logits."""

    def __init__(self, inner: nn.Module, vocab_size: int):
        super().__init__()
        self.inner, self.vocab_size = inner, vocab_size

    @property
    def weight(self) -> nn.Parameter:
        return self.inner.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[..., : self.vocab_size]


def _nxd():
    from neuronx_distributed.parallel_layers import layers, mappings, parallel_state

    return layers, mappings, parallel_state


def check_heads(model: nn.Module, tp: int) -> None:
    """Every attention module must split into whole query and key/value heads."""
    for name, module in model.named_modules():
        if not all(hasattr(module, a) for a in ("q_proj", "k_proj", "head_dim")):
            continue
        q, k, head_dim = module.q_proj, module.k_proj, module.head_dim
        q, k = getattr(q, "base_layer", q), getattr(k, "base_layer", k)
        heads, kv_heads = q.weight.shape[0] // head_dim, k.weight.shape[0] // head_dim
        if heads % tp or kv_heads % tp:
            raise ValueError(f"{name}: tensor_parallel_size={tp} must divide both the {heads} attention heads and "
                             f"the {kv_heads} key/value heads (replicating key/value heads is not supported)")


class _Builder:
    def __init__(self):
        self.layers, _, state = _nxd()
        self.tp = state.get_tensor_model_parallel_size()
        self.rank = state.get_tensor_model_parallel_rank()
        self.shared: dict[int, nn.Parameter] = {}  # dense weight id -> its split (tied embeddings stay tied)

    def shard(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        return tensor.detach().chunk(self.tp, dim)[self.rank]

    def fill(self, param: nn.Parameter, dense: torch.Tensor, dim: int, trainable: bool) -> None:
        with torch.no_grad():
            param.copy_(self.shard(dense, dim))
        param.requires_grad_(trainable)

    def linear(self, dense: nn.Linear, column: bool, where: str) -> nn.Module:
        out_features, in_features = dense.weight.shape
        dim = 0 if column else 1
        if dense.weight.shape[dim] % self.tp:
            raise ValueError(f"{where}: {dense.weight.shape[dim]} {'output' if column else 'input'} features do "
                             f"not split over tensor_parallel_size={self.tp}")
        bias, dtype = dense.bias is not None, dense.weight.dtype
        if column:
            new = self.layers.ColumnParallelLinear(in_features, out_features, bias=bias, gather_output=False,
                                                   dtype=dtype)
        else:
            new = self.layers.RowParallelLinear(in_features, out_features, bias=bias, input_is_parallel=True,
                                                dtype=dtype)
        trainable = dense.weight.requires_grad
        self.fill(new.weight, dense.weight, dim, trainable)
        if bias:  # a column layer's bias is split with its outputs; a row layer's is added after the all-reduce
            with torch.no_grad():
                new.bias.copy_(self.shard(dense.bias, 0) if column else dense.bias.detach())
            new.bias.requires_grad_(dense.bias.requires_grad)
        new.scaledown_split = Split("linear", dim, dense.weight.shape[dim])
        return new

    def padded(self, weight: torch.Tensor) -> torch.Tensor:
        """The vocabulary padded with zero rows to a multiple of the tensor-parallel size."""
        pad = -weight.shape[0] % self.tp
        return torch.cat([weight.detach(), weight.new_zeros(pad, weight.shape[1])]) if pad else weight

    def embedding(self, dense: nn.Embedding) -> nn.Module:
        vocab, width = dense.weight.shape
        rows = self.padded(dense.weight).shape[0]
        new = self.layers.ParallelEmbedding(rows, width, padding_idx=dense.padding_idx, dtype=dense.weight.dtype)
        self._tie_or_fill(new, dense.weight)
        new.scaledown_split = Split("embedding", 0, vocab, dense.padding_idx)
        return new

    def head(self, dense: nn.Linear) -> nn.Module:
        vocab, width = dense.weight.shape
        rows = self.padded(dense.weight).shape[0]
        inner = self.layers.ColumnParallelLinear(width, rows, bias=False, gather_output=True,
                                                 dtype=dense.weight.dtype)
        self._tie_or_fill(inner, dense.weight)
        new = VocabHead(inner, vocab) if rows != vocab else inner
        new.scaledown_split = Split("head", 0, vocab)
        return new

    def _tie_or_fill(self, module: nn.Module, dense_weight: nn.Parameter) -> None:
        if id(dense_weight) in self.shared:
            module.weight = self.shared[id(dense_weight)]
        else:
            self.fill(module.weight, self.padded(dense_weight), 0, dense_weight.requires_grad)
            self.shared[id(dense_weight)] = module.weight

    def convert(self, name: str, child: nn.Module, where: str) -> nn.Module | None:
        """The parallel replacement of `child`, or None (a peft LoRA layer is split in place)."""
        if name in COLUMN or name in ROW:
            column = name in COLUMN
            if hasattr(child, "base_layer") and hasattr(child, "lora_A"):  # peft LoRA around a Linear
                child.base_layer = self.linear(child.base_layer, column, where)
                split = child.lora_B if column else child.lora_A
                for adapter in list(split):
                    split[adapter] = self.linear(split[adapter], column, f"{where}.{adapter}")
                return None
            if isinstance(child, nn.Linear):
                return self.linear(child, column, where)
        if name == "embed_tokens" and isinstance(child, nn.Embedding):
            return self.embedding(child)
        if name == "lm_head" and isinstance(child, nn.Linear):
            return self.head(child)
        return None


def parallelize(model: nn.Module) -> nn.Module:
    """Split `model` in place over the tensor-parallel group (NxD's parallel state must be initialised)."""
    builder = _Builder()
    check_heads(model, builder.tp)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            new = builder.convert(name, child, f"{parent_name}.{name}".lstrip("."))
            if new is not None:
                setattr(parent, name, new)
    return model


def _gather(tensor: torch.Tensor, dim: int, mappings) -> torch.Tensor:
    """All ranks' splits of `tensor`, concatenated along `dim` (NxD gathers along the last dimension)."""
    if dim == tensor.dim() - 1:
        return mappings.gather_from_tensor_model_parallel_region(tensor.detach().contiguous())
    moved = tensor.detach().transpose(dim, -1).contiguous()
    return mappings.gather_from_tensor_model_parallel_region(moved).transpose(dim, -1)


def _dense(module: nn.Module, split: Split, mappings, done: dict[int, nn.Parameter]) -> nn.Module:
    weight = module.weight
    if id(weight) not in done:
        full = _gather(weight, split.dim, mappings).narrow(split.dim, 0, split.size).contiguous()
        done[id(weight)] = nn.Parameter(full, requires_grad=False)
    out, inp = done[id(weight)].shape
    if split.kind == "embedding":
        dense = nn.Embedding(out, inp, padding_idx=split.padding_idx, device="meta")
    else:
        bias = getattr(module, "bias", None)
        dense = nn.Linear(inp, out, bias=bias is not None, device="meta")
        if bias is not None:
            full_bias = _gather(bias, -1, mappings) if split.kind == "linear" and split.dim == 0 else bias.detach()
            dense.bias = nn.Parameter(full_bias, requires_grad=False)
    dense.weight = done[id(weight)]
    return dense


@contextmanager
def unsharded(model: nn.Module):
    """Inside: dense copies of the trainable split layers, the embeddings and the LM head (for export)."""
    _, mappings, _ = _nxd()
    done: dict[int, nn.Parameter] = {}
    swaps = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            split = getattr(child, "scaledown_split", None)
            if split is None:
                continue
            if split.kind != "linear" or any(p.requires_grad for p in child.parameters()):
                swaps.append((parent, name, child, _dense(child, split, mappings, done)))
    for parent, name, _, dense in swaps:
        setattr(parent, name, dense)
    try:
        yield model
    finally:
        for parent, name, child, _ in swaps:
            setattr(parent, name, child)
