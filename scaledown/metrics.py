"""Training metrics: throughput, FLOPs and MFU for this model, memory, data-wait share; TensorBoard on rank 0.

FLOPs per token of a training step (2 FLOPs per multiply-add):
  - a trained weight matrix of P entries costs 6P (forward 2P, input gradient 2P, weight gradient 2P);
  - a frozen one costs 4P (forward + input gradient: the gradient still flows through it to the compressor);
  - attention scores and the weighted sum cost 12 * layers * width * context per token (forward 4*L*d*s,
    backward twice that; no weights, so freezing saves nothing).
The compressor is fully trained; the generator is frozen except its LoRA matrices (trained: 6P).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from scaledown.data.collate import label_window
from scaledown.hardware import cpu_fast_dtype

# Dense bf16 peak per device, TFLOP/s.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
TRN1_NEURONCORE_TFLOPS = 95.0  # a Trainium chip (190 bf16 TFLOP/s) has 2 NeuronCores; one process drives one


def _is_linear(m: nn.Module) -> bool:
    """nn.Linear, or a tensor-parallel linear (NxD's Column/RowParallelLinear: input_size, output_size)."""
    return isinstance(m, nn.Linear) or (hasattr(m, "input_size") and hasattr(m, "output_size")
                                        and isinstance(getattr(m, "weight", None), torch.Tensor))


def linear_params(module: nn.Module, trainable: bool | None = None) -> int:
    """Entries of this device's matrices of every linear layer in `module` (LoRA's A and B included; a
    tensor-parallel layer counts its split); embeddings excluded."""
    total = 0
    for m in module.modules():
        if _is_linear(m):
            p = m.weight
            if trainable is None or p.requires_grad == trainable:
                # ZeRO-3 leaves an empty shard in p; ds_numel is the full size.
                total += getattr(p, "ds_numel", p.numel())
    return total


@dataclass
class FlopModel:
    """Per-token FLOP counts of the compressor and the generator."""

    comp_trained: int   # compressor matrix entries (all trained)
    comp_layers: int
    comp_width: int
    gen_frozen: int     # generator matrix entries, frozen (base weights, LM head excluded)
    gen_lora: int       # LoRA matrix entries (trained)
    gen_layers: int
    gen_width: int
    gen_head: int = 0   # LM head entries: run only over the answer window (ScaleDownModel.forward)

    @classmethod
    def of(cls, model, tensor_parallel: int = 1) -> FlopModel:
        """Per device: with tensor parallelism each device holds 1/tp of the heads of the split decoders."""
        comp = model.compressor
        gen = model.generator
        gcfg = gen.get_base_model().config
        ccfg = comp.backbone.config
        comp_split = tensor_parallel if comp.split_by_tensor_parallel else 1  # else replicated on every device
        head = gen.get_output_embeddings()
        head = getattr(head.weight, "ds_numel", head.weight.numel()) if _is_linear(head) else 0
        return cls(comp_trained=linear_params(comp), comp_layers=ccfg.num_hidden_layers,
                   comp_width=ccfg.hidden_size // comp_split, gen_frozen=linear_params(gen, trainable=False) - head,
                   gen_lora=linear_params(gen, trainable=True), gen_layers=gcfg.num_hidden_layers,
                   gen_width=gcfg.hidden_size // tensor_parallel, gen_head=head)

    def train_flops(self, comp_tokens: int, comp_context: float, gen_tokens: int, gen_context: float,
                    head_tokens: int | None = None) -> float:
        """FLOPs of one training step over `*_tokens` tokens with mean attention context `*_context`; the LM
        head runs over `head_tokens` positions (default: every generator token)."""
        head_tokens = gen_tokens if head_tokens is None else head_tokens
        comp = comp_tokens * (6 * self.comp_trained + 12 * self.comp_layers * self.comp_width * comp_context)
        gen = gen_tokens * (4 * self.gen_frozen + 6 * self.gen_lora
                            + 12 * self.gen_layers * self.gen_width * gen_context)
        return float(comp + gen + 4 * self.gen_head * head_tokens)


def batch_flop_inputs(batch: dict[str, torch.Tensor]) -> tuple[int, float, int, float, int]:
    """(compressor tokens, mean causal context, generator tokens, mean causal context, LM-head positions) of a
    collated batch. With causal attention a token at position i attends to i+1 tokens: the mean context is
    (n+1)/2. The LM head runs from the first labelled position on (every row), as ScaleDownModel.forward does."""
    out = []
    for key in ("comp_attention_mask", "gen_attention_mask"):
        if key not in batch:  # two-stage training: cached memory, no compressor rows
            out += [0, 0.0]
            continue
        lengths = batch[key].sum(-1).double()
        tokens = lengths.sum()
        out += [int(tokens), float(((lengths * (lengths + 1) / 2).sum() / tokens.clamp(min=1)))]
    labels = batch.get("labels")
    head = out[2] if labels is None else labels.shape[0] * label_window(labels)
    return (*out, head)


def cpu_peak_tflops(size: int = 2048, repeats: int = 4) -> float:
    """This CPU's matrix-product rate in its fastest dtype (`cpu_fast_dtype`), measured now (a few products of
    size^3; AMX CPUs reach several TFLOP/s in bf16): the peak that CPU MFU is reported against. Measured under
    whatever else runs on the machine."""
    dtype = cpu_fast_dtype()
    rng = torch.Generator().manual_seed(0)  # its own: drawing from the global RNG would break exact resumes
    a = torch.randn(size, size, generator=rng).to(dtype)
    b = torch.randn(size, size, generator=rng).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def device_peak_tflops(device: torch.device, override: float = 0.0) -> float:
    """Peak dense bf16 TFLOP/s of one device: known GPUs' datasheet, a Trainium NeuronCore's, a CPU's measured
    by a matrix-product probe in its fastest dtype (0 when unknown: MFU is then not reported)."""
    if override:
        return override
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_TFLOPS.items():
            if key in name:
                return peak
    if device.type == "xla":
        return TRN1_NEURONCORE_TFLOPS
    if device.type == "cpu":
        return cpu_peak_tflops()
    return 0.0


class Meter:
    """Accumulates one logging window on this rank; `summary()` gives the per-device figures."""

    def __init__(self, flop_model: FlopModel, peak_tflops: float, device: torch.device):
        self.flops_model, self.peak, self.device = flop_model, peak_tflops, device
        self.reset()

    def reset(self):
        self.start = time.perf_counter()
        self.data_wait = 0.0
        self.samples = self.tokens = 0
        self.flops = 0.0
        self.steps = 0

    def add_batch(self, batch: dict[str, torch.Tensor], data_wait: float) -> None:
        ct, cc, gt, gc, head = batch_flop_inputs(batch)  # CPU tensors from the collator: no device sync
        self.tokens += ct + gt
        self.samples += batch["gen_input_ids"].shape[0]
        self.flops += self.flops_model.train_flops(ct, cc, gt, gc, head)
        self.data_wait += data_wait

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tflops = self.flops / elapsed / 1e12
        out = {"perf/samples_per_s_per_device": self.samples / elapsed,
               "perf/tokens_per_s_per_device": self.tokens / elapsed,
               "perf/tflops_per_device": tflops,
               "perf/data_wait_share": self.data_wait / elapsed}
        if self.peak:
            out["perf/mfu"] = tflops / self.peak
        if self.device.type == "cuda":
            out["memory/peak_allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            import resource  # host memory: the peak resident set of this process (Linux reports KiB)

            out["memory/peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return out


class Trackers:
    """Scalars to each tracker of `train.report_to`, from the main rank only (other ranks get a no-op):
    TensorBoard under out_dir/tensorboard; Weights & Biases (project $WANDB_PROJECT or `scaledown`, the run named
    after out_dir, files under out_dir; WANDB_MODE=offline works without an account); MLflow ($MLFLOW_TRACKING_URI,
    else a file store at out_dir/mlruns; experiment $MLFLOW_EXPERIMENT_NAME or `scaledown`). The run's config goes to
    W&B's config and MLflow's params."""

    def __init__(self, report_to: list[str], out_dir: str | Path, config: dict, enabled: bool):
        self.sinks = []
        if not enabled:
            return
        out_dir = Path(out_dir)
        for name in report_to:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out_dir / "tensorboard"))

                def to_tensorboard(scalars, step, writer=writer):
                    for key, value in scalars.items():
                        writer.add_scalar(key, value, step)
                    writer.flush()

                self.sinks.append((to_tensorboard, writer.close))
            elif name == "wandb":
                import wandb

                out_dir.mkdir(parents=True, exist_ok=True)
                run = wandb.init(project=os.environ.get("WANDB_PROJECT", "scaledown"), name=out_dir.name,
                                 dir=str(out_dir), config=config)
                self.sinks.append((lambda scalars, step, r=run: r.log(scalars, step=step), run.finish))
            elif name == "mlflow":
                import mlflow

                uri = os.environ.get("MLFLOW_TRACKING_URI")
                if not uri:  # a plain file store needs no server or database (MLflow 3 asks for this opt-in)
                    uri = (out_dir / "mlruns").resolve().as_uri()
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri(uri)
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "scaledown"))
                mlflow.start_run(run_name=out_dir.name)
                mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})
                self.sinks.append((lambda scalars, step: mlflow.log_metrics(scalars, step=step), mlflow.end_run))

    def log(self, scalars: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        for write, _ in self.sinks:
            write(scalars, step)

    def close(self):
        for _, close in self.sinks:
            close()
        self.sinks = []


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
