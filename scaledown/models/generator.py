"""The generator: a Hugging Face causal LM with LoRA, reading compressed documents spliced into its prompt."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    """`attn_implementation: sdpa_fp32`: scaled-dot-product attention computed in fp32 inside a bf16 model.
    On a CPU the bf16 attention backward is slower than fp32's (no AMX path for it), while the matrix products
    around it gain from bf16 (benchmarks/cpu_precision.py measures both)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


def sdpa_mask_no_empty_rows(*args, **kwargs):
    """transformers' SDPA mask, with every query row that attends to nothing opened to all keys.

    Left padding (the compressor's and the generator's rows) leaves each padding position of a causal mask with
    no key to attend to. The CUDA SDPA kernels in bf16 then return NaN gradients for those rows, which reach the
    weights through K and V (measured on an H200: loss NaN from the second step, in bf16 only; fp32 and eager
    were finite). A padding position's output is never read, so what it attends to does not matter."""
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    if mask is None or mask.dtype != torch.bool:
        return mask
    return mask | ~mask.any(-1, keepdim=True)


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register("sdpa_fp32", sdpa_fp32)
    for name in ("sdpa", "sdpa_fp32"):
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask_no_empty_rows)


_register_attention()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, pad_with_bos: bool = False):
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding is always masked out, so any id works; Mistral and Llama ship without a pad token. The reference
        # format pads with BOS, as NAVER's code does.
        fallback = tokenizer.bos_token if pad_with_bos else tokenizer.eos_token
        tokenizer.pad_token = fallback or tokenizer.unk_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: str, attn_implementation: str = "sdpa",
                   trust_remote_code: bool = False, quantization: str = "none", **kwargs) -> PreTrainedModel:
    """A causal LM in `dtype`; with `quantization` (nf4, int8) its linear layers quantized by bitsandbytes as
    they load, on this rank's device (a GPU's under torchrun, else the CPU)."""
    if quantization != "none":
        from transformers import BitsAndBytesConfig

        from scaledown.models.generation import local_device

        if quantization == "nf4":
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=DTYPES[dtype])
        else:
            q = BitsAndBytesConfig(load_in_8bit=True)
        kwargs = {"quantization_config": q, "device_map": {"": local_device()}, **kwargs}
    return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=DTYPES[dtype],
                                                attn_implementation=attn_implementation,
                                                trust_remote_code=trust_remote_code, **kwargs)


def add_lora(model: PreTrainedModel, r: int, alpha: int, dropout: float, target_modules: str) -> PeftModel:
    """Freeze the base weights and add LoRA matrices (peft's format, so adapters load with `PeftModel`)."""
    targets = target_modules if target_modules == "all-linear" else [t.strip() for t in target_modules.split(",")]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def splice(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, slot_ids: torch.Tensor,
           memory: torch.Tensor) -> torch.Tensor:
    """Overwrite the embeddings of the slot tokens (`<MEM>`; `<MEM0..l-1>` in the reference format), in order,
    with `memory` [B, k, l, d].

    Row b's slots take memory[b] flattened document by document: the collator guarantees exactly k*l slots per
    row, so masked_scatter's row-major fill puts every embedding at its slot.
    """
    mask = torch.isin(input_ids, slot_ids.to(input_ids.device)).unsqueeze(-1)
    return inputs_embeds.masked_scatter(mask, memory.to(inputs_embeds.dtype))
