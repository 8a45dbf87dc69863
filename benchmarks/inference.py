"""Compressed vs uncompressed RAG inference with the same generator: FLOPs per query and wall-clock.

Uncompressed: the generator reads prompt + k documents of 128 tokens, then greedily decodes the answer.
Compressed (OSCAR): the compressor (the generator's first N layers) reads k rows of query + document + l
memory tokens in one batch; the generator reads prompt + k*l embeddings, then decodes the same answer length.
LoRA is left out: at inference it merges into the weights and costs nothing.

FLOPs are counted with torch.utils.flop_counter on the meta device (no memory, any size, exact for the shapes:
the prefill and two decoding steps are counted, the other steps follow exactly from them); wall-clock uses random
weights (speed does not need trained ones).

    python benchmarks/inference.py --arch tiny                             # CPU here: FLOPs + time
    python benchmarks/inference.py --arch mistral-7b --flops-only          # the paper's shape, FLOPs
    python benchmarks/inference.py --arch mistral-7b --device cuda --dtype bfloat16 --batch-sizes 1 16 64 256
    python benchmarks/inference.py --arch smollm2 --docs 10 --compressor-layers 8 --phases   # CPU, paper shape
    python benchmarks/inference.py --arch smollm2 --docs 10 --decoder compiled --batch-sizes 1  # compiled decoding

`--phases` splits each time into the prefill (compressor + the generator reading its prompt: timed with a
one-token answer) and the decoding steps (the rest), which cost the same in both systems but for the length of
the KV cache they attend to. It also measures how fast this machine reads memory (a sum over 1 GiB): a decoding
step at batch 1 reads every weight once for one token, so weight bytes / bandwidth is its floor, and the best
batch-1 speed-up any decoder could reach here is (full prefill + floor) / (compressed prefill + floor).

`--decoder eager` (the default) runs the decoding steps as plain forward passes with a DynamicCache. `--decoder
compiled` decodes through Hugging Face's `generate` with a static KV cache and its single-token step compiled by
`torch.compile` (CUDA graphs on a GPU: mode reduce-overhead), what serving code does against per-step overhead.
The first two calls of each system and batch size compile (their times are printed) and are left out of the timing;
with `--phases` the prefill is timed through `generate` too (a one-token answer: nothing compiled).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (AutoModelForCausalLM, CompileConfig, DynamicCache, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, StaticCache)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scaledown.models.compressor import NLayersCompressor  # noqa: E402

# The KV cache's argument and output field: `cache` in recent transformers, `past_key_values` before (the GPU
# machine's 5.17).
CACHE = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

ARCHS = {
    # Mistral-7B-Instruct-v0.2's shape.
    "mistral-7b": lambda: MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                        max_position_embeddings=32768, sliding_window=None),
    # SmolLM2-135M-Instruct's shape (the CPU runs' real model).
    "smollm2": lambda: LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "tiny": lambda: LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2),
}


def decode(model, config, prompt_ids=None, prompt_embeds=None, answer_tokens=32):
    """Prefill, then `answer_tokens - 1` single-token steps with a KV cache (greedy decoding's compute)."""
    batch = (prompt_ids if prompt_ids is not None else prompt_embeds).shape[0]
    device = next(model.parameters()).device
    out = model(input_ids=prompt_ids, inputs_embeds=prompt_embeds, **{CACHE: DynamicCache(config=config)},
                use_cache=True, logits_to_keep=1)
    for _ in range(answer_tokens - 1):
        next_ids = out.logits[:, -1:].argmax(-1) if device.type != "meta" else \
            torch.zeros(batch, 1, dtype=torch.long, device=device)
        out = model(input_ids=next_ids, **{CACHE: getattr(out, CACHE)}, use_cache=True, logits_to_keep=1)
    return out


STATIC_CACHES: dict[tuple, StaticCache] = {}


def static_cache(model, batch: int, length: int) -> StaticCache:
    """One static KV cache per model, batch size and length, emptied before each call. `generate` would allocate a
    new one per call: new addresses for tensors the compiled step marks static, which CUDA graphs re-record."""
    key = (id(model), batch, length)
    if key not in STATIC_CACHES:
        STATIC_CACHES[key] = StaticCache(config=model.config, max_cache_len=length)
    STATIC_CACHES[key].reset()
    return STATIC_CACHES[key]


def decode_compiled(model, prompt_ids=None, prompt_embeds=None, answer_tokens=32):
    """The same greedy decoding through `generate`: a static KV cache, the single-token step compiled (a one-token
    answer is the prefill alone, not compiled)."""
    prompt = prompt_ids if prompt_ids is not None else prompt_embeds
    cuda = prompt.device.type == "cuda"
    compile_config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if cuda else "default")
    compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told otherwise
    return model.generate(input_ids=prompt_ids, inputs_embeds=prompt_embeds,
                          attention_mask=torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device),
                          max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, do_sample=False,
                          pad_token_id=0, compile_config=compile_config,
                          **{CACHE: static_cache(model, prompt.shape[0], prompt.shape[1] + answer_tokens - 1)})


def run_decoder(model, config, args, **prompt):
    meta = next(model.parameters()).device.type == "meta"  # generate cannot run on the meta device (FLOP counts)
    if args.decoder == "compiled" and not meta:
        return decode_compiled(model, answer_tokens=args.answer_tokens, **prompt)
    return decode(model, config, answer_tokens=args.answer_tokens, **prompt)


def uncompressed(generator, config, batch, k, args):
    length = args.prompt_tokens + args.query_tokens + k * args.doc_tokens
    ids = torch.zeros(batch, length, dtype=torch.long, device=next(generator.parameters()).device)
    run_decoder(generator, config, args, prompt_ids=ids)


def compressed(generator, compressor, config, batch, k, args):
    device = next(generator.parameters()).device
    rows = torch.zeros(batch * k, 1 + args.query_tokens + args.doc_tokens + args.memory_tokens, dtype=torch.long,
                       device=device)
    # Rows of equal length need no padding mask. The (unused) cache keeps transformers from inspecting position
    # values, which the meta device cannot do; it adds no FLOPs.
    memory = compressor.backbone(input_ids=rows, **{CACHE: DynamicCache(config=config)},
                                 use_cache=True).last_hidden_state[:, -args.memory_tokens:]
    prompt = generator.get_input_embeddings()(
        torch.zeros(batch, args.prompt_tokens + args.query_tokens, dtype=torch.long, device=device))
    embeds = torch.cat([memory.reshape(batch, -1, memory.shape[-1]), prompt], dim=1)
    run_decoder(generator, config, args, prompt_embeds=embeds)


def build(config, compressor_layers, device, dtype):
    with torch.device(device):
        generator = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        compressor = NLayersCompressor.empty(config, compressor_layers, dtype).eval()
    return generator, compressor


def count_flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def answering(args, tokens: int) -> argparse.Namespace:
    """The same settings with answers of `tokens` tokens."""
    return argparse.Namespace(**{**vars(args), "answer_tokens": tokens})


def count_query_flops(fn, args) -> float:
    """FLOPs of `fn(a)` (one query, answer length `args.answer_tokens`) from three short counts: a decoding step's
    count is affine in the length of the KV cache it attends to (only attention grows with it), so the prefill
    (a one-token answer) and the first two steps give every step's count exactly."""
    n = max(args.answer_tokens, 1)
    counts = [count_flops(lambda: fn(answering(args, t))) for t in range(1, min(n, 3) + 1)]
    if n <= 3:
        return float(counts[-1])
    first, growth = counts[1] - counts[0], (counts[2] - counts[1]) - (counts[1] - counts[0])
    steps = n - 1
    return float(counts[0] + steps * first + growth * steps * (steps - 1) // 2)


def flops_per_query(arch: str, k: int, compressor_layers: list[int], args) -> tuple[float, list[float]]:
    """FLOPs for one query (batch 1): uncompressed, and compressed with each number of compressor layers."""
    config = ARCHS[arch]()
    generator, _ = build(config, 1, "meta", torch.bfloat16)
    full = count_query_flops(lambda a: uncompressed(generator, config, 1, k, a), args)
    comps = []
    for n in compressor_layers:
        generator, compressor = build(config, n, "meta", torch.bfloat16)
        comps.append(count_query_flops(lambda a: compressed(generator, compressor, config, 1, k, a), args))
    return full, comps


def seconds_per_query(fn, batch: int, device: torch.device, repeats: int, name: str = "",
                      compiled: bool = False) -> float:
    with torch.no_grad():
        warmups = []
        for _ in range(2 if compiled else 1):  # compiled: the first call compiles, the second specializes again
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            warmups.append(time.perf_counter() - start)
        if compiled:
            print(f"      {name}: first call {warmups[0]:.1f} s, second {warmups[1]:.1f} s (compiling)", flush=True)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / batch


def read_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second this device reads: the best of `repeats` sums over a `gib` GiB array."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        x.sum().item()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    p.add_argument("--docs", type=int, nargs="+", default=[5, 10])
    p.add_argument("--compressor-layers", type=int, nargs="+", default=[5, 8])
    p.add_argument("--doc-tokens", type=int, default=128)
    p.add_argument("--memory-tokens", type=int, default=8)
    p.add_argument("--query-tokens", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=48, help="instruction + chat template tokens")
    p.add_argument("--answer-tokens", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--flops-only", action="store_true")
    p.add_argument("--phases", action="store_true", help="also time the prefill alone (decoding = the rest)")
    p.add_argument("--decoder", choices=["eager", "compiled"], default="eager",
                   help="decoding steps as plain forward passes, or through generate with a static cache, compiled")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.arch == "tiny":
        args.compressor_layers = [n for n in args.compressor_layers if n < 4] or [2]
    print(f"arch {args.arch}: {args.doc_tokens}-token documents, {args.memory_tokens} memory tokens, "
          f"{args.answer_tokens}-token answers")
    print(f"{'docs':>4} {'layers':>6} {'TFLOPs full':>12} {'TFLOPs comp':>12} {'ratio':>6}")
    for k in args.docs:
        full, comps = flops_per_query(args.arch, k, args.compressor_layers, args)
        for n, comp in zip(args.compressor_layers, comps):
            print(f"{k:>4} {n:>6} {full / 1e12:>12.3f} {comp / 1e12:>12.3f} {full / comp:>6.2f}")
    if args.flops_only:
        return
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = ARCHS[args.arch]()
    if args.decoder == "compiled":  # one graph per batch size and cache length: more than dynamo's default 8
        torch._dynamo.config.recompile_limit = 64
    print(f"\nwall-clock on {device} ({args.dtype}, {args.decoder} decoder), ms per query"
          + ("; prefill / decoding of each" if args.phases else ""))
    print(f"{'docs':>4} {'layers':>6} {'batch':>5} {'full':>9} {'comp':>9} {'speed-up':>8}"
          + (f" {'full prefill/decode':>20} {'comp prefill/decode':>20}" if args.phases else ""))
    one_token = answering(args, 1)
    if args.phases:
        bandwidth = read_bandwidth(device)
        print(f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s")
    for n in args.compressor_layers:
        STATIC_CACHES.clear()  # the former generator's
        generator, compressor = build(config, n, device, dtype)
        for k in args.docs:
            for b in args.batch_sizes:
                def time_both(a):
                    compiled = a.decoder == "compiled" and a.answer_tokens > 1
                    return (seconds_per_query(lambda: uncompressed(generator, config, b, k, a), b, device,
                                              args.repeats, f"full, batch {b}", compiled),
                            seconds_per_query(lambda: compressed(generator, compressor, config, b, k, a), b, device,
                                              args.repeats, f"compressed, batch {b}", compiled))
                t_full, t_comp = time_both(args)
                line = f"{k:>4} {n:>6} {b:>5} {t_full * 1e3:>9.2f} {t_comp * 1e3:>9.2f} {t_full / t_comp:>8.2f}"
                if args.phases:
                    p_full, p_comp = time_both(one_token)
                    line += (f" {f'{p_full * 1e3:.1f} / {(t_full - p_full) * 1e3:.1f}':>20}"
                             f" {f'{p_comp * 1e3:.1f} / {(t_comp - p_comp) * 1e3:.1f}':>20}")
                    if b == 1 and args.answer_tokens > 1:  # decoding's floor: every weight read once a token
                        weights = sum(p.numel() * p.element_size() for p in generator.parameters())
                        steps = args.answer_tokens - 1
                        floor = steps * weights / bandwidth
                        line += (f"\n      batch 1: decoding {(t_comp - p_comp) / steps * 1e3:.1f} ms/step, floor "
                                 f"{floor / steps * 1e3:.1f} ({weights / 2**20:.0f} MiB of weights); speed-up bound "
                                 f"{(p_full + floor) / (p_comp + floor):.2f}")
                print(line, flush=True)


if __name__ == "__main__":
    main()
