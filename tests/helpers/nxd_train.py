"""`scaledown.train` with the neuron engine on CPU, against a TEST STAND-IN for the Neuron SDK.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/nxd_train.py --config ... --engine.backend=neuron

The stand-in: NxD's parallel layers from tests/helpers/nxd_standin.py (the whole world is one tensor-parallel group, so
data-parallel size 1); the XLA device is the CPU and the "xla" process group is gloo; `mark_step` runs the step
closures; NxD's trainer builds the model with `model_fn` and optimises with AdamW, checkpoints with torch.save.
After every update the optimizer checks OUR invariant: parameters that are not split are identical on every
tensor-parallel rank. It checks our loop and builder, not NxD, which has never run here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxd_standin import install  # noqa: E402


class CheckedAdamW(torch.optim.AdamW):
    def step(self, closure=None):
        out = super().step(closure)
        if dist.is_initialized() and dist.get_world_size() > 1:
            for group in self.param_groups:
                for p in group["params"]:
                    if not getattr(p, "tensor_model_parallel", False):
                        low, high = p.detach().clone(), p.detach().clone()
                        dist.all_reduce(low, dist.ReduceOp.MIN)
                        dist.all_reduce(high, dist.ReduceOp.MAX)
                        assert torch.equal(low, high), f"a replicated parameter {tuple(p.shape)} differs across ranks"
        return out


def install_sdk() -> None:
    install()
    closures = []

    def module(name, **attrs):
        mod = sys.modules.get(name) or types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    def mark_step():
        while closures:
            fn, args = closures.pop(0)
            fn(*args)

    xm = module("torch_xla.core.xla_model", xla_device=lambda: torch.device("cpu"), mark_step=mark_step,
                add_step_closure=lambda fn, args=(): closures.append((fn, args)),
                rendezvous=lambda tag: dist.barrier())
    module("torch_xla", core=module("torch_xla.core", xla_model=xm))
    module("torch_xla.distributed", xla_backend=module("torch_xla.distributed.xla_backend"))
    dist.Backend.register_backend("xla", lambda store, rank, size, timeout: dist.ProcessGroupGloo(
        store, rank, size, timeout), devices=["cpu"])

    def save(path, tag, model, optimizer, scheduler):
        folder = Path(path) / tag
        folder.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save(state, folder / f"rank{dist.get_rank()}.pt")

    def load(path, tag, model, optimizer, scheduler):
        state = torch.load(Path(path) / tag / f"rank{dist.get_rank()}.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    trainer = module("neuronx_distributed.trainer", neuronx_distributed_config=lambda **kwargs: kwargs,
                     initialize_parallel_model=lambda config, model_fn: model_fn(),
                     initialize_parallel_optimizer=lambda config, cls, groups, **kw: CheckedAdamW(groups, **kw),
                     save_checkpoint=save, load_checkpoint=load)
    state = sys.modules["neuronx_distributed.parallel_layers.parallel_state"]
    state.get_data_parallel_rank, state.get_data_parallel_size = (lambda: 0), (lambda: 1)
    sys.modules["neuronx_distributed"].trainer = trainer


if __name__ == "__main__":
    install_sdk()
    from scaledown.train import main

    main(sys.argv[1:])
