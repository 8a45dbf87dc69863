"""What the hardware multiplies fast: the precision `engine.autocast=auto` picks and the CPU peak probe measures."""

from __future__ import annotations

import functools

import torch


@functools.cache  # a fact of the machine, asked at every forward pass under engine.autocast=auto
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX). Without either (an AVX2-only
    CPU) torch runs bf16 products in a reference loop, ~20x slower than fp32 (measured: a SmolLM2 training step
    155-183 s under bf16 autocast against 8 s in fp32 on an AVX2 EPYC)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_fast_dtype() -> torch.dtype:
    """The dtype this CPU multiplies matrices fastest in: bf16 with native bf16, else fp32."""
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def autocast_dtype(setting: str, device: torch.device) -> str:
    """engine.autocast resolved on `device`: `auto` is bfloat16 where bf16 matrix products are fast (CUDA with
    bf16, XLA, a CPU with native bf16) and off elsewhere (fp32); any other setting stays as given."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else ""
    if device.type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else ""
    return "bfloat16" if device.type == "xla" else ""
