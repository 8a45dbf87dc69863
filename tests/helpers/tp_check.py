"""The tensor-parallel model builder against the dense model, on the NxD TEST STAND-IN (tests/helpers/nxd_standin.py).

Run in one process (tensor-parallel size 1) or under torchrun (size = world size, gloo):
    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/tp_check.py GENERATOR OUT_DIR
Each rank checks losses, every trainable gradient (against its split of the dense gradient), greedy answers
and the gathered export, then writes OUT_DIR/ok-RANK. With `--nxd` (a Trn1 with the Neuron SDK; never run yet)
it uses NxD's real layers on NeuronCores instead of the stand-in.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxd_standin import install  # noqa: E402


def close(a, b, what):
    """Equal up to float32 summation order (tensor parallelism adds partial sums in another order)."""
    err = ((a - b).norm() / b.norm().clamp(min=1e-6)).item()
    assert err < 1e-4, f"{what}: relative error {err:.3g} (norm {b.norm().item():.3g})"


def check(generator: str, out: Path, device: torch.device = torch.device("cpu")) -> None:
    from neuronx_distributed.parallel_layers import parallel_state

    from scaledown.config import ModelConfig
    from scaledown.data.schema import Record, document_text
    from scaledown.build.synthetic import make_records
    from scaledown.engine.tensor_parallel import parallelize, unsharded
    from scaledown.models.model import ScaleDownModel
    from scaledown.models.generator import load_tokenizer

    tp, rank = parallel_state.get_tensor_model_parallel_size(), parallel_state.get_tensor_model_parallel_rank()
    # An odd vocabulary after adding l memory tokens, <RR> and the placeholder: exercises the vocabulary padding.
    base = len(load_tokenizer(generator))
    memory = 4 if (base + 6) % 2 else 5
    config = ModelConfig(generator=generator, compressor_layers=2, dtype="float32", max_doc_tokens=24,
                         max_answer_tokens=8, num_memory_tokens=memory, lora_dropout=0.0, rerank=True)
    torch.manual_seed(0)
    dense = ScaleDownModel.build(config)
    with torch.no_grad():  # LoRA's B starts at zero: make it count, or A's split would go unchecked
        for name, p in dense.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    split = parallelize(copy.deepcopy(dense)).to(device)
    dense.to(device)
    assert type(split.generator.get_base_model().lm_head).__name__ == ("VocabHead" if tp > 1 else
                                                                       "ColumnParallelLinear")
    records = [Record(query=r["query"], documents=[document_text(d) for d in r["documents"]], answer=r["answer"],
                      reranking_scores=r["reranking_scores"]) for r in make_records(4, seed=0)]
    batch = {k: v.to(device) for k, v in dense.collator(3)(records).items()}
    want, got = dense(**batch), split(**batch)
    for key in ("ce_loss", "rerank_loss", "loss"):
        close(got[key], want[key], key)
    want["loss"].backward()
    got["loss"].backward()
    dense_params = dict(dense.named_parameters())
    checked = 0
    for name, p in split.named_parameters():
        if not p.requires_grad:
            continue
        expected = dense_params[name.replace("lm_head.inner.", "lm_head.")].grad
        if getattr(p, "tensor_model_parallel", False):
            pad = -expected.shape[0] % tp if p.partition_dim == 0 else 0
            expected = torch.cat([expected, expected.new_zeros(pad, *expected.shape[1:])])
            expected = expected.chunk(tp, p.partition_dim)[rank]
        close(p.grad, expected, f"grad of {name}")
        checked += 1
    assert checked == len([p for p in dense.parameters() if p.requires_grad]), checked
    queries, docs = [r.query for r in records[:2]], [r.documents[:3] for r in records[:2]]
    assert split.generate(queries, docs, max_new_tokens=6) == dense.generate(queries, docs, max_new_tokens=6)
    with unsharded(split):
        if rank == 0:
            split.save_pretrained(out / "split")
    if rank == 0:
        dense.save_pretrained(out / "dense")
        for file in ("compressor.safetensors", "extra.safetensors", "adapter/adapter_model.safetensors"):
            a, b = load_file(str(out / "split" / file)), load_file(str(out / "dense" / file))
            assert a.keys() == b.keys(), (file, a.keys() ^ b.keys())
            for key in a:
                close(a[key], b[key], f"{file}:{key}")
    # Outside `unsharded` the split model is whole again.
    close(split(**batch)["loss"], got["loss"].detach(), "loss after export")
    (out / f"ok-{rank}").write_text("ok\n")


if __name__ == "__main__":
    device = torch.device("cpu")
    if "--nxd" in sys.argv:
        import torch_xla.core.xla_model as xm
        import torch_xla.distributed.xla_backend  # noqa: F401  registers the "xla" process group
        from neuronx_distributed.parallel_layers import parallel_state

        dist.init_process_group("xla")
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=dist.get_world_size())
        device = xm.xla_device()
    else:
        if "RANK" in os.environ:
            dist.init_process_group("gloo")
        install()
    args = [a for a in sys.argv[1:] if a != "--nxd"]
    check(args[0], Path(args[1]), device)
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing: a gloo group torn down under a live peer can SIGABRT
        dist.destroy_process_group()
