"""The training loop: engine-agnostic (it never imports a backend), readable top to bottom.

    python -m scaledown.train --config configs/tiny.yaml --train.max_steps=20   # torch or deepspeed engine
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from scaledown.checkpoint import Checkpointer, resolve_resume, resume_changes
from scaledown.config import Config, ConfigError
from scaledown.data.memory_cache import CachedMemory, compressor_fingerprint
from scaledown.data.sampler import ShardedSampler
from scaledown.data.mapped import open_records, text_lengths
from scaledown.build.pretraining import pretraining_records
from scaledown.data.schema import load_records
from scaledown.engine import make_engine
from scaledown.engine.base import Engine, ParamGroup
from scaledown.hardware import autocast_dtype, cpu_fast_dtype
from scaledown.eval import generate_answers, generate_uncompressed, references
from scaledown.eval.evaluate import Ranks, evaluate
from scaledown.metrics import FlopModel, Meter, Trackers, device_peak_tflops
from scaledown.models.compressor import COMPRESSORS
from scaledown.models.generator import load_tokenizer
from scaledown.models.model import ScaleDownModel
from scaledown.log import EVERY_RANK, get_logger

log = get_logger(__name__)


def lr_schedule(total_steps: int, warmup_ratio: float, start: int = 0):
    """A group's LR multiplier: 0 before `start`, then linear warmup over `warmup_ratio` of the steps left, then
    linear decay to 0 at `total_steps`."""
    warmup = int(round((total_steps - start) * warmup_ratio))

    def multiplier(step: int) -> float:
        if step < start:
            return 0.0
        if step - start < warmup:
            return (step - start + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - start - warmup))

    return multiplier


def lr_schedules(cfg: Config, total_steps: int) -> list:
    """One multiplier per parameter group, in `param_groups` order: the compressor, then the generator (which
    may wait `optim.generator_frozen_steps`)."""
    o = cfg.optim
    return [lr_schedule(total_steps, o.warmup_ratio),
            lr_schedule(total_steps, o.warmup_ratio, min(o.generator_frozen_steps, total_steps))]


def param_groups(cfg: Config):
    def make(model: ScaleDownModel) -> list[ParamGroup]:
        groups = model.parameter_groups()
        o = cfg.optim
        return [ParamGroup("compressor", groups["compressor"], o.lr_compressor, o.weight_decay, o.betas, o.eps),
                ParamGroup("generator", groups["generator"], o.lr_generator, o.weight_decay, o.betas, o.eps)]
    return make


def build_model(cfg: Config, model: ScaleDownModel | None = None) -> ScaleDownModel:
    """A fresh model for `cfg` (or the one given, or the export train.init_from names), with gradient
    checkpointing when asked for."""
    if model is None and cfg.train.init_from:
        model = ScaleDownModel.from_pretrained(cfg.train.init_from, trainable=True, config=cfg.model).train()
    model = model or ScaleDownModel.build(cfg.model)
    if cfg.data.memory_cache:  # two-stage training: the compressor wrote the cache and does not train
        model.compressor.requires_grad_(False)
        # Taken now, whole: an engine may partition the weights (ZeRO-3) before the cache is checked.
        model.compressor_fingerprint = compressor_fingerprint(model)
    if cfg.train.gradient_checkpointing:
        for part in (model.generator.get_base_model(), model.compressor.backbone):
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            part.train()  # Hugging Face recomputes only in training mode; from_pretrained returns eval mode
    return model


def check_context(cfg: Config, generator_config) -> None:
    """The rows' token budgets must fit the models' context lengths (a lower bound: prompt text comes on top).
    Compressor rows hold the query, the document and the memory tokens; generator rows the k x l memory slots,
    the query and the answer."""
    m, k = cfg.model, max(cfg.data.num_documents, cfg.data.eval_num_documents)
    compressor = COMPRESSORS[m.compressor].source_config(m, generator_config)
    rows = {"compressor": (m.max_query_tokens + m.max_doc_tokens + m.num_memory_tokens + 1, compressor,
                           "model.max_query_tokens + model.max_doc_tokens + model.num_memory_tokens + 1"),
            "generator": (k * m.num_memory_tokens + m.max_query_tokens + m.max_answer_tokens, generator_config,
                          "k x model.num_memory_tokens + model.max_query_tokens + model.max_answer_tokens")}
    for name, (needed, config, how) in rows.items():
        limit = getattr(config, "max_position_embeddings", None)
        if limit and needed > limit:
            raise ConfigError(f"the {name}'s rows need at least {needed} tokens ({how}, k = {k}), more than its "
                              f"context of {limit} (max_position_embeddings): lower those budgets")


def preflight(cfg: Config, records) -> None:
    """Refuse an inconsistent run before any model loads: a compressor deeper than the generator, or a rerank
    head to train on records without cross-encoder scores (it would train on a loss of 0 and ship untrained)."""
    from transformers import AutoConfig

    m = cfg.model
    generator = AutoConfig.from_pretrained(m.generator, trust_remote_code=m.trust_remote_code)
    COMPRESSORS[m.compressor].check(m, generator)
    check_context(cfg, generator)
    if cfg.model.rerank:
        if hasattr(records, "missing_scores"):
            missing, first = records.missing_scores()  # a column count, not a pass over the records
        else:
            absent = [r.id for r in records if r.reranking_scores is None]
            missing, first = len(absent), (absent[0] if absent else None)
        if missing and cfg.model.rerank_missing != "ignore":
            raise ConfigError(
                f"model.rerank=true, but {missing} of {len(records)} training records in {cfg.data.train_path} "
                f"have no reranking_scores (first: id {first!r}): build the data with a cross-encoder, set "
                f"--model.rerank=false, or --model.rerank_missing=ignore to train the rerank head on the "
                f"{len(records) - missing} records that have scores")
        if missing == len(records):
            raise ConfigError("model.rerank=true: no training record has reranking_scores, so the rerank head "
                              "would not train (model.rerank_missing=ignore skips records without, not all)")


def train_step(model, engine: Engine, batches, meter: Meter) -> dict[str, torch.Tensor]:
    """One optimizer step over `accumulation` micro-batches; returns the mean losses (device tensors)."""
    sums: dict[str, torch.Tensor] = {}
    for _ in range(engine.batch.accumulation):
        start = time.perf_counter()
        batch = next(batches)
        meter.add_batch(batch, time.perf_counter() - start)
        batch = {k: v.to(engine.device, non_blocking=True) for k, v in batch.items()}
        with engine.autocast():
            out = model(**batch)
        engine.backward(out["loss"])
        engine.step()
        for name, value in out.items():
            sums[name] = sums.get(name, 0) + value.detach()
    return {name: value / engine.batch.accumulation for name, value in sums.items()}


def log_step(engine: Engine, meter: Meter, tb: Trackers, bar, history: list, step: int,
             losses: dict[str, torch.Tensor], clock: Clock) -> None:
    # all_reduce and grad_norm read device values (a host sync): logging steps only, after the step ran.
    logged = engine.all_reduce({**{f"train/{k}": v for k, v in losses.items()}, **meter.summary()})
    logged.update({"train/grad_norm": engine.grad_norm() or 0.0,
                   **{f"train/lr_{g}": lr for g, lr in zip(("compressor", "generator"), engine.lrs())}})
    tb.log(logged, step)
    history.append({"step": step, **logged})
    bar.set_postfix(loss=f"{logged['train/loss']:.4f}")
    log.info(metric_line(step, clock, logged))
    meter.reset()


@dataclass
class Clock:
    """Where the run stands in time: the ETA of the metric line counts only the steps of this process."""
    first_step: int
    total_steps: int
    start: float = field(default_factory=time.perf_counter)
    evaluating: float = 0.0  # seconds of the held-out evaluations inside the loop

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, step: int) -> str:
        done = step - self.first_step
        left = (time.perf_counter() - self.start) / max(done, 1) * (self.total_steps - step)
        return str(datetime.timedelta(seconds=round(left)))


def metric_line(step: int, clock: Clock, logged: dict[str, float]) -> str:
    """One line per logging step, for Slurm logs and terminals alike (the same figures go to TensorBoard)."""
    mfu = logged.get("perf/mfu")
    return (f"step {step}/{clock.total_steps} loss {logged['train/loss']:.4f} lr "
            f"{logged['train/lr_compressor']:.2e}/{logged['train/lr_generator']:.2e} (compressor/generator) "
            f"grad_norm {logged['train/grad_norm']:.3f} tokens/s {logged['perf/tokens_per_s_per_device']:.0f}"
            f" per device, mfu {'-' if mfu is None else f'{100 * mfu:.1f}%'}, eta {clock.eta(step)}")


def micro_batches(loader: DataLoader, sampler: ShardedSampler):
    """Micro-batches forever, epoch after epoch, from the sampler's current position."""
    while True:
        yield from loader
        sampler.set_position(sampler.epoch + 1, 0)


BASELINES = ("compressed", "uncompressed", "no_documents")  # measured before the first step


def held_out(engine: Engine, records, cfg: Config, step: int, tb: Trackers, answers: bool = True,
             system: str = "compressed") -> dict[str, float]:
    """Held-out metrics of one system (scaledown/eval/evaluate.py), logged under eval/ (the model being trained)
    or baseline/SYSTEM/: the answers' CE and, with `answers`, the generated answers' metrics."""
    kept = records[: cfg.data.max_eval_examples or None]  # 0: every record
    result = evaluate(engine.model, kept, Ranks.of_engine(engine), (system,), answers=answers,
                      batch_size=cfg.train.micro_batch_size, max_new_tokens=cfg.train.max_eval_new_tokens,
                      num_documents=cfg.data.eval_num_documents)
    prefix = "eval" if system == "compressed" else f"baseline/{system}"
    metrics = {f"{prefix}/{k}": v for k, v in result.metrics[system].items()}
    tb.log(metrics, step)
    return metrics


@torch.no_grad()
def speed(engine: Engine, records, cfg: Config) -> dict[str, float] | None:
    """Milliseconds per query of compressed vs uncompressed answering: same device, same batch, the same number
    of new tokens (forced), on the first eval records (every rank; rank 0's figures are reported). Not under
    ZeRO-3 (generation is collective) nor on XLA (nothing would sync before the clock is read)."""
    if engine.collective_forward or not engine.eager or not records:
        return None
    model, batch = engine.model, cfg.train.micro_batch_size
    chunk = records[: 4 * batch]
    n, k = cfg.train.max_eval_new_tokens, cfg.data.eval_num_documents
    out = {}
    for name, generate in (("compressed", generate_answers), ("uncompressed", generate_uncompressed)):
        generate(model, chunk[:batch], batch, n, k, min_new_tokens=n)  # warm-up
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model, chunk, batch, n, k, min_new_tokens=n)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_ms_per_query"] = 1000 * (time.perf_counter() - start) / len(chunk)
    out.update(batch_size=batch, new_tokens=n, documents=k, queries=len(chunk), device=str(engine.device))
    return out


def baseline(engine: Engine, records, cfg: Config, tb: Trackers, out_dir: Path, step: int) -> dict | None:
    """Before the first step: the untrained compressed model and the two text baselines. A resumed run reads
    what its first segment measured (the weights are trained by then)."""
    path = out_dir / "baseline_eval.json"
    if step > 0:
        return json.loads(path.read_text()) if path.exists() else None
    result = {name: held_out(engine, records, cfg, 0, tb, system=name) for name in BASELINES}
    if engine.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
    return result


def stop_requested(engine: Engine) -> bool:
    """True once the Slurm script (slurm/requeue.sh) has created $SCALEDOWN_STOP_FILE, on every rank at the same
    step. Checked on logging steps only, when the variable is set: one small all-reduce (a host sync)."""
    path = os.environ.get("SCALEDOWN_STOP_FILE")
    if not path:
        return False
    return engine.all_reduce({"stop": float(os.path.exists(path))})["stop"] > 0


def save_curves(engine: Engine, out_dir: Path, curves: dict[str, list]) -> None:
    """Append this segment's logged steps to history.jsonl / eval_history.jsonl: the report's curves then span
    every segment of a run that was stopped and resumed."""
    if engine.is_main:
        for name, rows in curves.items():
            with open(out_dir / f"{name}.jsonl", "a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)


def stopped(engine: Engine, step: int, out_dir: Path, curves: dict[str, list]) -> dict:
    """After the stop checkpoint: keep the curves, tell the Slurm script (it requeues only then), exit cleanly."""
    path = os.environ["SCALEDOWN_STOP_FILE"]
    save_curves(engine, out_dir, curves)
    log.info("stop requested (%s): checkpoint at step %d written, exiting for the requeued job to resume", path,
             step)
    if engine.is_main:
        Path(path + ".done").write_text(str(step))
    return {"steps": step, "stopped": True}


def resume(checkpointer: Checkpointer, folder: Path, cfg: Config, engine: Engine, num_records: int,
           data_fingerprint: str | None = None) -> int:
    """Load `folder`; refuse a resume that changes how the run computes, unless train.resume_changes=allow, in
    which case the new settings apply (LRs included: the loaded schedule would keep the old ones) and are
    recorded in resume_changes.jsonl. Returns the step to continue from."""
    changes = resume_changes(folder, cfg, num_records, data_fingerprint)
    if changes and cfg.train.resume_changes != "allow":
        raise ConfigError(f"resume from {folder}: this run's settings differ from the checkpoint's (set "
                          f"--train.resume_changes=allow to apply them, or --train.resume=none to start over):\n  "
                          + "\n  ".join(changes))
    step = checkpointer.load(folder)["step"]
    if changes:
        o = cfg.optim  # the group order of param_groups: compressor, generator
        engine.set_group_settings([o.lr_compressor, o.lr_generator], o.weight_decay, o.betas)
        if engine.is_main:
            log.info("resume from %s with changed settings: %s", folder, "; ".join(changes))
            with open(Path(cfg.train.output_dir) / "resume_changes.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "from": str(folder), "changes": changes}) + "\n")
    return step


def train(cfg: Config, model: ScaleDownModel | None = None, records: list | None = None,
          eval_records: list | None = None) -> dict:
    """Train, evaluate and export as `cfg` says; TensorBoard and the process group are closed however it ends.
    `model` and `records` (validated Records) replace building the model and loading data.train_path / eval_path
    (the Python API of scaledown/compat.py passes them)."""
    cfg.check_paths(need_train_path=records is None)
    if cfg.engine.backend == "deepspeed" and not torch.cuda.is_available() and \
            os.environ.get("DS_ACCELERATOR") != "cpu":
        log.warning("engine.backend=deepspeed (--device gpu) but this machine has no CUDA GPU: DeepSpeed runs on "
                    "the CPU (DS_ACCELERATOR=cpu says so and silences this)")
    if not sys.stderr.isatty():  # Slurm .out files: the libraries' progress bars would pile up there too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    engine = make_engine(cfg)
    engine.setup()
    log.info("rank %d/%d on %s, engine %s", engine.rank, engine.world_size, socket.gethostname(), engine.name,
             extra=EVERY_RANK)
    tb = Trackers(cfg.train.report_to, cfg.train.output_dir, cfg.to_dict(), engine.is_main)
    try:
        result = run(cfg, engine, tb, model, records, eval_records)
        engine.barrier()  # ranks leave together: closing gloo under a peer still writing can abort (SIGABRT)
        return result
    finally:
        tb.close()
        engine.shutdown()


def run(cfg: Config, engine: Engine, tb: Trackers, model=None, records=None, eval_records=None) -> dict:
    out_dir = Path(cfg.train.output_dir)
    torch.manual_seed(cfg.train.seed + engine.rank)
    random.seed(cfg.train.seed + engine.rank)
    if records is None and cfg.train.objective == "pretrain":  # the same passages on every rank (fixed seed)
        records = pretraining_records(cfg.data.train_path, load_tokenizer(cfg.model.generator),
                                      cfg.model.max_doc_tokens, cfg.model.max_answer_tokens,
                                      cfg.data.continuation_share, cfg.train.seed)
    if records is None:  # validated once into an Arrow file, read a batch at a time: never a list of all records
        records = open_records(cfg.data.train_path, engine.barrier, engine.rank, engine.local_rank)
    if eval_records is None:
        eval_records = load_records(cfg.data.eval_path, require_answer=False) if cfg.data.eval_path else []
    for rec in eval_records:
        references(rec)  # something to score against (gold or teacher answer), checked before training starts
    preflight(cfg, records)
    fingerprint = getattr(records, "fingerprint", None)  # the training file's content (scaledown/data/mapped.py)
    steps_per_epoch = len(records) // cfg.train.global_batch_size
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)
    torch.manual_seed(cfg.train.seed)  # same initial LoRA and rerank-head weights on every rank
    given = model
    model = engine.prepare(lambda: build_model(cfg, given), param_groups(cfg),
                           lr_schedules(cfg, total_steps), cfg.optim.max_grad_norm)
    # One random stream per data shard: tensor-parallel peers must draw the same LoRA dropout masks, or the
    # weights they both hold (LoRA's unsplit factor, norms) would drift apart.
    torch.manual_seed(cfg.train.seed + engine.dp_rank)
    sampler = ShardedSampler(len(records), cfg.train.global_batch_size, engine.dp_rank, engine.dp_size,
                             cfg.train.seed, text_lengths(records) if cfg.data.group_by_length else None)
    checkpointer = Checkpointer(engine, out_dir / "checkpoints", cfg.train.save_every, cfg.train.keep_last)
    step = 0
    resume_from = resolve_resume(cfg.train.resume, out_dir / "checkpoints", engine, cfg.train.verify_checksums)
    if resume_from:
        step = resume(checkpointer, resume_from, cfg, engine, len(records), fingerprint)
    # The sampler position follows from the step alone, so a resume may even change the data-parallel size.
    sampler.set_position(step // steps_per_epoch,
                         (step % steps_per_epoch) * cfg.train.global_batch_size // engine.dp_size)
    collate = engine.model.collator(cfg.data.num_documents)
    if cfg.data.memory_cache:  # two-stage training: the generator reads stage 1's embeddings
        records = CachedMemory(cfg.data.memory_cache, records, engine.model, cfg.data.num_documents)
        collate = records.collate(collate)
        log.info("two-stage training: memory embeddings from %s; the compressor is frozen and not run",
                 cfg.data.memory_cache)
    loader = DataLoader(records, batch_size=cfg.train.micro_batch_size, sampler=sampler,
                        collate_fn=collate,
                        num_workers=cfg.data.num_workers,
                        # Its own generator: creating an iterator must not draw from the global RNG, or
                        # LoRA dropout would not replay after a resume.
                        generator=torch.Generator().manual_seed(cfg.train.seed))
    if engine.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        if step == 0:  # a fresh start: curves of an earlier run in this folder are not this run's
            for name in ("history", "eval_history"):
                (out_dir / f"{name}.jsonl").unlink(missing_ok=True)
    meter = Meter(FlopModel.of(engine.model, engine.tensor_parallel_size), device_peak_tflops(engine.device),
                  engine.device)
    b = engine.batch
    autocast = autocast_dtype(cfg.engine.autocast, engine.device)  # `auto`: bf16 where this device is fast in it
    precision = (f" under {autocast} autocast" if autocast else
                 " without autocast (engine.autocast=auto: no fast bf16 on this device)" if cfg.engine.autocast else "")
    log.info("%d records, %d steps (%s), global batch %d = micro-batch %d x %d accumulation x %d data-parallel "
             "ranks; %s on %s, %s weights%s; %s", len(records), total_steps,
             f"resuming at step {step}" if step else f"{steps_per_epoch} per epoch", cfg.train.global_batch_size,
             cfg.train.micro_batch_size, b.accumulation, engine.dp_size, engine.name, engine.device,
             cfg.model.dtype, precision,
             f"{len(eval_records)} eval records" if eval_records else "no eval set")
    if engine.device.type == "cpu" and meter.peak:
        log.info("MFU on this CPU is against its %s matrix-product rate measured at start-up: %.3f TFLOP/s",
                 str(cpu_fast_dtype()).removeprefix("torch."), meter.peak)
    before = None
    if eval_records and cfg.train.baseline_eval:
        log.info("baseline evaluation before training: %d records, compressed and text baselines (answers are "
                 "generated: the longest phase before step 1)", min(len(eval_records), cfg.data.max_eval_examples
                                                                   or len(eval_records)))
        before = baseline(engine, eval_records, cfg, tb, out_dir, step)
    batches = micro_batches(loader, sampler)
    # A bar on a terminal only: in a Slurm .out file its redraws pile up; the metric lines say the same there.
    bar = tqdm(total=total_steps, initial=step, disable=not (engine.is_main and sys.stdout.isatty()), desc="train",
               file=sys.stdout)
    history, eval_history = [], []
    clock = Clock(step, total_steps)
    while step < total_steps:
        losses = train_step(model, engine, batches, meter)
        step += 1
        bar.update(1)
        # Logging and checkpointing read the step's results: on XLA they run as closures at the step barrier.
        logging = step % cfg.train.log_every == 0 or step == total_steps
        if logging:
            engine.after_step(log_step, engine, meter, tb, bar, history, step, losses, clock)
        engine.mark_step()
        stop = logging and step < total_steps and stop_requested(engine)
        # The last step's point of the curve is the final evaluation below (not measured twice).
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total_steps and eval_records \
                and not stop:
            started = time.perf_counter()
            eval_history.append({"step": step, **held_out(engine, eval_records, cfg, step, tb,
                                                          answers=cfg.train.curve_answers)})
            clock.evaluating += time.perf_counter() - started
        if checkpointer.due(step) or step == total_steps or stop:
            engine.after_step(checkpointer.save, step, {"step": step, "num_records": len(records),
                                                        "data_fingerprint": fingerprint}, cfg)
            engine.mark_step()
        if stop:
            return stopped(engine, step, out_dir, {"history": history, "eval_history": eval_history})
    bar.close()
    seconds = clock.seconds()
    log.info("trained %d steps in %s (%s of it in held-out evaluations); exporting to %s", step - clock.first_step,
             datetime.timedelta(seconds=round(seconds)), datetime.timedelta(seconds=round(clock.evaluating)),
             out_dir / "export")
    engine.export(out_dir / "export")
    result = {"steps": step, "history": history, "eval_history": eval_history, "export": str(out_dir / "export"),
              "tensorboard": str(out_dir / "tensorboard"), "loop_seconds": seconds,
              "eval_seconds_in_loop": clock.evaluating}
    if eval_records:
        result["eval"] = held_out(engine, eval_records, cfg, step, tb)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
            eval_history.append({"step": step, **result["eval"]})
        result["baseline"], result["speed"] = before, speed(engine, eval_records, cfg)
    save_curves(engine, out_dir, {"history": history, "eval_history": eval_history})
    if engine.is_main:
        (out_dir / "train_result.json").write_text(json.dumps(result, indent=2))
        card_results(out_dir / "export" / "README.md", cfg, step, len(records), result.get("eval"))
        if eval_records:
            from scaledown.eval.report import write_report

            write_report(out_dir)
        final = history[-1]["train/loss"] if history else float("nan")
        log.info("done: final loss %.4f%s; export %s, TensorBoard %s", final,
                 f", held-out accuracy {result['eval']['eval/accuracy']:.3f}" if "eval/accuracy" in
                 result.get("eval", {}) else "", result["export"], result["tensorboard"])
    return result


def card_results(card: Path, cfg: Config, steps: int, num_records: int, metrics: dict | None) -> None:
    """The training run and its held-out figures, appended to the export's model card."""
    lines = [f"\n## Training\n\n{steps} steps of {cfg.train.global_batch_size} on {num_records} records "
             f"(`{cfg.data.train_path}`), objective `{cfg.train.objective}`, {cfg.data.num_documents} documents "
             f"each, LRs {cfg.optim.lr_compressor:g} (compressor) / {cfg.optim.lr_generator:g} (LoRA).\n"]
    if metrics:
        lines += [f"\n## Held-out (`{cfg.data.eval_path}`)\n\n| metric | value |\n|---|---|\n"]
        lines += [f"| {name.removeprefix('eval/')} | {value:.4f} |\n" for name, value in metrics.items()]
    with open(card, "a") as f:
        f.write("".join(lines))


def main(argv: list[str] | None = None) -> dict:
    from scaledown.flags import parse_train_args

    return train(parse_train_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
