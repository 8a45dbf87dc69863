"""Plain PyTorch in one process: the reference backend, for debugging and for checking the others."""

from __future__ import annotations

from pathlib import Path

import torch

from scaledown.engine.base import BatchPlan, Engine


class TorchEngine(Engine):
    name = "torch"

    def setup(self) -> None:
        if self.world_size != 1:
            raise RuntimeError(f"the torch engine runs one process; WORLD_SIZE={self.world_size}: use deepspeed")
        self.batch = BatchPlan(self.global_batch_size, self.micro_batch_size, 1)
        self._norm = None

    def prepare(self, model_fn, param_groups_fn, lr_lambda, max_grad_norm):
        self.model = model_fn().to(self.device)
        groups = param_groups_fn(self.model)
        self.optimizer = torch.optim.AdamW(
            [g.as_dict() for g in groups])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.max_grad_norm = max_grad_norm
        self._params = [p for g in groups for p in g.params]
        return self.model

    def backward(self, loss):
        (loss / self.batch.accumulation).backward()

    def step(self) -> bool:
        if not self._window_done():
            return False
        # max_grad_norm 0 turns clipping off (as DeepSpeed's gradient_clipping 0 does); the norm is still logged.
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        self._norm = torch.nn.utils.clip_grad_norm_(self._params, limit)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def grad_norm(self):
        return None if self._norm is None else float(self._norm)  # syncs

    def lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def save_checkpoint(self, folder: Path) -> None:
        trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        torch.save({"model": {n: p.detach().cpu() for n, p in trainable.items()},
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   folder / "engine_state.pt")

    def load_checkpoint(self, folder: Path) -> None:
        state = torch.load(folder / "engine_state.pt", weights_only=True, map_location=self.device)
        missing = set(n for n, p in self.model.named_parameters() if p.requires_grad) - set(state["model"])
        if missing:
            raise RuntimeError(f"{folder}: checkpoint lacks trainable parameters {sorted(missing)[:5]}")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["model"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def export(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
