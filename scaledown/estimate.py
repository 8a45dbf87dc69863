"""Model-state memory per GPU and per host before a run starts, and the first configuration that fits:
`scaledown estimate --config configs/small_gpu.yaml --gpus-per-node 1 --gpu-memory 16 --host-memory 12`.

The counts come from the configured architecture built on the meta device (no weights are read): the frozen
generator, and the trainable parts (the compressor, LoRA and the rerank head). The bytes
per parameter are DeepSpeed's (its `estimate_zero{2,3}_model_states_mem_needs`): trainable parameters carry
16-bit weights + 16-bit grads + fp32 master weights, grads and Adam moments; frozen ones only their weights, which
only ZeRO-3 shards, and which `model.quantization` stores in 4 or 8 bits (the generator's linear layers only).
With the frozen part at 0 these formulas are DeepSpeed's own (tests/test_compat.py checks).
Activations come on top (gradient checkpointing keeps them to about one layer's worth per micro-batch).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
from torch import nn

GIB = 1024 ** 3


# Bytes per quantized weight: NF4 with double quantization (4 bits, an 8-bit absmax per 64 weights and an fp32
# constant per 256 blocks), LLM.int8() (8 bits and an fp32 scale per row, negligible).
QUANTIZED_BYTES = {"nf4": 0.5 + 1 / 64 + 4 / (64 * 256), "int8": 1.0}


@dataclass
class Counts:
    frozen: int
    trainable: int
    largest_layer: int
    """Parameters of the largest single module: ZeRO-3 gathers one such module at a time."""
    weight_bytes: int
    frozen_bytes: float | None = None
    """Bytes of the frozen weights (default: frozen x weight_bytes; less with a quantized generator)."""
    quantization: str = "none"

    def __post_init__(self):
        if self.frozen_bytes is None:
            self.frozen_bytes = float(self.frozen * self.weight_bytes)


def _params(module: nn.Module) -> int:
    return sum({id(p): p.numel() for p in module.parameters()}.values())  # tied weights once


def _largest(module: nn.Module) -> int:
    return max(sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules())


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def read_config(name: str, trust_remote_code: bool):
    """A model's config: a local folder or the hub's cache first; the hub itself only when it answers (offline, a
    hub id not in the cache fails at once instead of after the hub client's retries)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=True)
    except OSError:
        if not hub_reachable():
            raise OSError(f"{name} is neither a local folder nor in the hub cache, and the hub is not reachable "
                          "from here") from None
    return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)


def count(cfg) -> Counts:
    """Parameter counts of the run `cfg` describes, from the configs of its models only."""
    from transformers import AutoModelForCausalLM

    from scaledown.models.compressor import COMPRESSORS

    m = cfg.model
    try:
        config = read_config(m.generator, m.trust_remote_code)
    except OSError as err:
        first = str(err).strip().splitlines()[0]
        raise SystemExit(f"model.generator={m.generator}: cannot read its config.json ({first}); the estimate needs "
                         "the model's config (a local folder, or a hub id with the hub reachable)") from None
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, trust_remote_code=m.trust_remote_code)
    targets = None if m.lora_target_modules == "all-linear" else [t.strip() for t in m.lora_target_modules.split(",")]
    head = lm.get_output_embeddings()
    lora = sum(m.lora_r * (mod.in_features + mod.out_features) for name, mod in lm.named_modules()
               if isinstance(mod, nn.Linear) and mod is not head
               and (targets is None or any(name.endswith(t) for t in targets)))
    hidden = config.hidden_size
    trainable = lora + (hidden + 1 if m.rerank else 0)  # the generator's few added embedding rows stay frozen
    compressor = COMPRESSORS[m.compressor].count_trainable(m, lm)
    weight_bytes = 4 if m.dtype == "float32" else 2
    frozen = _params(lm)
    frozen_bytes = float(frozen * weight_bytes)
    if m.quantization != "none":  # bitsandbytes quantizes the linear layers' weights but the LM head
        quantized = sum(mod.weight.numel() for mod in lm.modules() if isinstance(mod, nn.Linear) and mod is not head)
        frozen_bytes -= quantized * (weight_bytes - QUANTIZED_BYTES[m.quantization])
    if cfg.data.memory_cache:  # two-stage training: the compressor's weights stay, frozen
        frozen, frozen_bytes = frozen + compressor, frozen_bytes + compressor * weight_bytes
    else:
        trainable += compressor
    return Counts(frozen, trainable, _largest(lm), weight_bytes, frozen_bytes, m.quantization)


def per_gpu(c: Counts, stage: int, offload: str, gpus: int) -> float:
    """Bytes of model states on each of `gpus` data-parallel GPUs (offload: none, optimizer, or
    optimizer+params, the last for ZeRO-3 only)."""
    b, t, f = c.weight_bytes, c.trainable, c.frozen_bytes
    if stage == 3:
        gathered = 2 * c.largest_layer * b  # DeepSpeed: 4 bytes x largest layer (one 16-bit layer, twice)
        if offload == "optimizer+params":
            return gathered
        states = 0 if offload == "optimizer" else 16 * t
        return gathered + (f + t * b + states) / gpus
    weights = f + t * b
    if offload == "optimizer":  # ZeRO-1/2 offload keeps the 16-bit weights on the GPU, the rest on the CPU
        return weights
    grads = t * b if stage < 2 else t * b / gpus
    states = 16 * t if stage == 0 else 16 * t / gpus
    return weights + grads + states


def per_node_cpu(c: Counts, stage: int, offload: str, gpus_per_node: int, nodes: int) -> float:
    """Host bytes per node for offloaded states (DeepSpeed's formulas, its 1.5x buffer factor included)."""
    if offload == "none":
        return 0.0
    t, gpus = c.trainable, gpus_per_node * nodes
    if stage == 3:
        per_param = 18 if offload == "optimizer+params" else 16
        return (t * per_param + (c.frozen_bytes if offload == "optimizer+params" else 0)) / nodes * 1.5
    return t * max(4 * gpus, 16) * 1.5


CHOICES = [(0, "none"), (1, "none"), (2, "none"), (2, "optimizer"), (3, "none"), (3, "optimizer"),
           (3, "optimizer+params")]
# The DeepSpeed config of each choice.
DS_CONFIGS = {(0, "none"): "zero0.json", (1, "none"): "zero1.json", (2, "none"): "zero2.json",
              (2, "optimizer"): "zero2_offload.json", (3, "none"): "zero3.json",
              (3, "optimizer"): "zero3_offload_optimizer.json",
              (3, "optimizer+params"): "zero3_offload.json"}
HEADROOM = 0.8  # of a GPU or host: activations, the CUDA context, fragmentation, the process itself


def rows(c: Counts, gpus_per_node: int, nodes: int) -> list[tuple[int, str, float, float]]:
    """(ZeRO stage, offload, GPU GiB per GPU, host GiB per node) of each choice that can hold the model (ZeRO-3
    cannot partition quantized weights)."""
    gpus = gpus_per_node * nodes
    return [(stage, offload, per_gpu(c, stage, offload, gpus) / GIB,
             per_node_cpu(c, stage, offload, gpus_per_node, nodes) / GIB)
            for stage, offload in CHOICES if not (stage == 3 and c.quantization != "none")]


def fits(gpu: float, cpu: float, gpu_gib: float | None, host_gib: float | None) -> bool:
    return (gpu_gib is None or gpu < HEADROOM * gpu_gib) and (host_gib is None or cpu < HEADROOM * host_gib)


def table(c: Counts, gpus_per_node: int, nodes: int, gpu_gib: float | None, host_gib: float | None = None) -> str:
    quantized = f", generator {c.quantization} ({c.frozen_bytes / GIB:,.2f} GiB frozen)" if c.quantization != "none" \
        else ""
    lines = [f"frozen parameters {c.frozen / 1e6:,.1f}M, trainable {c.trainable / 1e6:,.1f}M, largest layer "
             f"{c.largest_layer / 1e6:,.1f}M, {c.weight_bytes} bytes per weight{quantized}; {gpus_per_node} GPUs "
             f"x {nodes} node(s)", "",
             f"{'ZeRO':<5} {'offload':<17} {'GPU GiB/GPU':>12} {'CPU GiB/node':>13}"
             + ("  fits" if gpu_gib or host_gib else "")]
    for stage, offload, gpu, cpu in rows(c, gpus_per_node, nodes):
        verdict = ("  yes" if fits(gpu, cpu, gpu_gib, host_gib) else "  no") if gpu_gib or host_gib else ""
        lines.append(f"{stage:<5} {offload:<17} {gpu:>12.2f} {cpu:>13.2f}{verdict}")
    checked = " and ".join(f"{HEADROOM:.0%} of the {what}" for what, v in (("GPU", gpu_gib), ("host", host_gib)) if v)
    lines += ["", "Model states only; activations, the CUDA context and fragmentation come on top (\"fits\": within "
              f"{checked or 'the given memory'})."]
    return "\n".join(lines)


def first_fit(cfg, gpus_per_node: int, nodes: int, gpu_gib: float | None,
              host_gib: float | None) -> tuple[list[str], Counts, tuple] | None:
    """The first configuration that fits: the run's own generator storage, then QLoRA's nf4 (where the compressor
    allows it: int8 is both larger and, in bitsandbytes, slower to train); within each, ZeRO stages and offloads in
    CHOICES' order. Returns its flags, counts and table row, or None."""
    from scaledown.config import ConfigError
    from scaledown.models.compressor import COMPRESSORS

    generator_config = read_config(cfg.model.generator, cfg.model.trust_remote_code)
    for quantization in dict.fromkeys([cfg.model.quantization, "nf4"]):
        model = replace(cfg.model, quantization=quantization)
        try:
            COMPRESSORS[model.compressor].check(model, generator_config)
        except ConfigError:
            continue
        c = count(replace(cfg, model=model))
        for stage, offload, gpu, cpu in rows(c, gpus_per_node, nodes):
            if fits(gpu, cpu, gpu_gib, host_gib):
                flags = [f"--model.quantization={quantization}"] if quantization != "none" else []
                flags.append(f"--engine.deepspeed_config=ds_configs/{DS_CONFIGS[(stage, offload)]}")
                return flags, c, (stage, offload, gpu, cpu)
    return None


def main(argv: list[str] | None = None) -> str:
    from scaledown.config import parse_config

    p = argparse.ArgumentParser(prog="scaledown estimate", description=__doc__.split("\n")[0], allow_abbrev=False,
                                epilog="Other arguments are the run config's (--config FILE, --section.field=v).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpu-memory", type=float, default=None,
                   help="GiB per GPU to check against (default: this machine's first GPU, if any)")
    p.add_argument("--host-memory", type=float, default=None,
                   help="GiB of host memory per node to check offloaded states against (default: not checked)")
    args, rest = p.parse_known_args(argv)
    cfg = parse_config(rest)
    gpu_gib = args.gpu_memory
    if gpu_gib is None and torch.cuda.is_available():
        gpu_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    text = table(count(cfg), args.gpus_per_node, args.nodes, gpu_gib, args.host_memory)
    if gpu_gib or args.host_memory:
        found = first_fit(cfg, args.gpus_per_node, args.nodes, gpu_gib, args.host_memory)
        if found is None:
            text += "\n\nNothing fits, not even ZeRO-3 with everything offloaded or a 4-bit generator: more GPUs " \
                    "(--gpus-per-node, --nodes) or a smaller model."
        else:
            flags, c, (stage, offload, gpu, cpu) = found
            text += (f"\n\nFirst fit: ZeRO-{stage}, offload {offload}, generator "
                     f"{'in ' + cfg.model.dtype if c.quantization == 'none' else c.quantization}: {gpu:.2f} GiB per "
                     f"GPU, {cpu:.2f} GiB host per node.\n  add: {' '.join(flags)}")
    print(text)
    return text


if __name__ == "__main__":
    main()
