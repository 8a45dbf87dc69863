"""Model-state memory per GPU before a run starts: `scaledown estimate --config configs/small_gpu.yaml`.

The counts come from the configured architecture built on the meta device (no weights are read): the frozen
generator, and the trainable parts (the compressor, LoRA and the rerank head). The bytes
per parameter are DeepSpeed's (its `estimate_zero{2,3}_model_states_mem_needs`): trainable parameters carry
16-bit weights + 16-bit grads + fp32 master weights, grads and Adam moments; frozen ones only their weights, which
only ZeRO-3 shards. With the frozen part at 0 these formulas are DeepSpeed's own (tests/test_compat.py checks).
Activations come on top (gradient checkpointing keeps them to about one layer's worth per micro-batch).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

GIB = 1024 ** 3


@dataclass
class Counts:
    frozen: int
    trainable: int
    largest_layer: int
    """Parameters of the largest single module: ZeRO-3 gathers one such module at a time."""
    weight_bytes: int


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
    trainable += COMPRESSORS[m.compressor].count_trainable(m, lm)
    weight_bytes = 4 if m.dtype == "float32" else 2
    return Counts(_params(lm), trainable, _largest(lm), weight_bytes)


def per_gpu(c: Counts, stage: int, offload: str, gpus: int) -> float:
    """Bytes of model states on each of `gpus` data-parallel GPUs (offload: none, optimizer, or
    optimizer+params, the last for ZeRO-3 only)."""
    b, t, f = c.weight_bytes, c.trainable, c.frozen
    if stage == 3:
        gathered = 2 * c.largest_layer * b  # DeepSpeed: 4 bytes x largest layer (one 16-bit layer, twice)
        if offload == "optimizer+params":
            return gathered
        states = 0 if offload == "optimizer" else 16 * t
        return gathered + ((f + t) * b + states) / gpus
    weights = (f + t) * b
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
        return (t * per_param + (c.frozen * c.weight_bytes if offload == "optimizer+params" else 0)) / nodes * 1.5
    return t * max(4 * gpus, 16) * 1.5


CHOICES = [(0, "none"), (1, "none"), (2, "none"), (2, "optimizer"), (3, "none"), (3, "optimizer"),
           (3, "optimizer+params")]


def table(c: Counts, gpus_per_node: int, nodes: int, gpu_gib: float | None) -> str:
    gpus = gpus_per_node * nodes
    lines = [f"frozen parameters {c.frozen / 1e6:,.1f}M, trainable {c.trainable / 1e6:,.1f}M, largest layer "
             f"{c.largest_layer / 1e6:,.1f}M, {c.weight_bytes} bytes per weight; {gpus_per_node} GPUs x {nodes} "
             f"node(s)", "",
             f"{'ZeRO':<5} {'offload':<17} {'GPU GiB/GPU':>12} {'CPU GiB/node':>13}" + ("  fits" if gpu_gib else "")]
    for stage, offload in CHOICES:
        gpu = per_gpu(c, stage, offload, gpus) / GIB
        cpu = per_node_cpu(c, stage, offload, gpus_per_node, nodes) / GIB
        fits = ("  yes" if gpu < 0.8 * gpu_gib else "  no") if gpu_gib else ""
        lines.append(f"{stage:<5} {offload:<17} {gpu:>12.2f} {cpu:>13.2f}{fits}")
    lines += ["", "Model states only; activations, the CUDA context and fragmentation come on top (\"fits\" "
              "leaves 20% for them). ZeRO-3 + offload: configs/small_gpu.yaml with ds_configs/zero3_offload.json."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    from scaledown.config import parse_config

    p = argparse.ArgumentParser(prog="scaledown estimate", description=__doc__.split("\n")[0], allow_abbrev=False,
                                epilog="Other arguments are the run config's (--config FILE, --section.field=v).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpu-memory", type=float, default=None,
                   help="GiB per GPU to check against (default: this machine's first GPU, if any)")
    args, rest = p.parse_known_args(argv)
    cfg = parse_config(rest)
    gpu_gib = args.gpu_memory
    if gpu_gib is None and torch.cuda.is_available():
        gpu_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    text = table(count(cfg), args.gpus_per_node, args.nodes, gpu_gib)
    print(text)
    return text


if __name__ == "__main__":
    main()
