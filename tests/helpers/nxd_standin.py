"""A TEST STAND-IN for neuronx-distributed's tensor-parallel layers, on torch.distributed (gloo) and CPU.

The Neuron SDK cannot be installed here. This stand-in has the constructor arguments, weight shapes and
forward semantics of NxD's `ColumnParallelLinear`, `RowParallelLinear` and `ParallelEmbedding` (vocabulary
split) and of the mappings they use, with the whole world as the tensor-parallel group. It lets the tests check
OUR logic (which weights go to which rank, heads, LoRA factors, padding, gathering for export) against the dense
model; it says nothing about NxD itself, which has never run in these tests.
"""

from __future__ import annotations

import sys
import types

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def tp_size() -> int:  # the whole world is the tensor-parallel group
    return dist.get_world_size() if dist.is_initialized() else 1


def tp_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class _CopyToRegion(torch.autograd.Function):  # forward: identity; backward: sum the input gradients
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if tp_size() > 1:
            dist.all_reduce(grad)
        return grad


class _ReduceFromRegion(torch.autograd.Function):  # forward: sum the partial outputs; backward: identity
    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        if tp_size() > 1:
            dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GatherFromRegion(torch.autograd.Function):  # forward: concatenate the last dimension; backward: split it
    @staticmethod
    def forward(ctx, x):
        if tp_size() == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(tp_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx, grad):
        return grad.chunk(tp_size(), dim=-1)[tp_rank()].contiguous()


def _mark(param: nn.Parameter, dim: int) -> nn.Parameter:
    param.tensor_model_parallel, param.partition_dim, param.partition_stride = True, dim, 1
    return param


class ColumnParallelLinear(nn.Module):
    def __init__(self, input_size, output_size, bias=True, gather_output=True, dtype=torch.float32, device=None,
                 **unused):
        super().__init__()
        self.input_size, self.output_size, self.gather_output = input_size, output_size, gather_output
        per_rank = output_size // tp_size()
        self.weight = _mark(nn.Parameter(torch.randn(per_rank, input_size, dtype=dtype) * 0.02), 0)
        self.bias = nn.Parameter(torch.zeros(output_size if gather_output else per_rank, dtype=dtype)) if bias \
            else None

    def forward(self, x):
        out = F.linear(_CopyToRegion.apply(x), self.weight)
        if self.gather_output:
            out = _GatherFromRegion.apply(out)
        return out + self.bias if self.bias is not None else out


class RowParallelLinear(nn.Module):
    def __init__(self, input_size, output_size, bias=True, input_is_parallel=False, dtype=torch.float32,
                 device=None, **unused):
        super().__init__()
        assert input_is_parallel, "the stand-in implements input_is_parallel=True only"
        self.input_size, self.output_size = input_size, output_size
        self.weight = _mark(nn.Parameter(torch.randn(output_size, input_size // tp_size(), dtype=dtype) * 0.02), 1)
        self.bias = nn.Parameter(torch.zeros(output_size, dtype=dtype)) if bias else None

    def forward(self, x):
        out = _ReduceFromRegion.apply(F.linear(x, self.weight))
        return out + self.bias if self.bias is not None else out


class ParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=torch.float32, device=None,
                 **unused):
        super().__init__()
        per_rank = num_embeddings // tp_size()
        self.start, self.end = tp_rank() * per_rank, (tp_rank() + 1) * per_rank
        local = padding_idx is not None and self.start <= padding_idx < self.end
        self.padding_idx = padding_idx - self.start if local else None
        self.weight = _mark(nn.Parameter(torch.randn(per_rank, embedding_dim, dtype=dtype)), 0)

    def forward(self, ids):
        inside = (ids >= self.start) & (ids < self.end)
        local = F.embedding((ids - self.start) * inside, self.weight, self.padding_idx)
        return _ReduceFromRegion.apply(local * inside.unsqueeze(-1).to(local.dtype))


def install(modules: dict | None = None) -> None:
    """Register the stand-in as `neuronx_distributed.parallel_layers.{layers,mappings,parallel_state}`."""
    modules = sys.modules if modules is None else modules

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        modules[name] = mod
        return mod

    layers = module("neuronx_distributed.parallel_layers.layers", ColumnParallelLinear=ColumnParallelLinear,
                    RowParallelLinear=RowParallelLinear, ParallelEmbedding=ParallelEmbedding)
    mappings = module("neuronx_distributed.parallel_layers.mappings",
                      gather_from_tensor_model_parallel_region=_GatherFromRegion.apply)
    # Looked up at call time, so a test may patch this module's tp_size / tp_rank.
    state = module("neuronx_distributed.parallel_layers.parallel_state",
                   get_tensor_model_parallel_size=lambda: tp_size(), get_tensor_model_parallel_rank=lambda: tp_rank())
    parallel = module("neuronx_distributed.parallel_layers", layers=layers, mappings=mappings,
                      parallel_state=state)
    module("neuronx_distributed", parallel_layers=parallel)
