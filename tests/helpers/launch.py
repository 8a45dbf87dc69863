"""Helpers for multi-process tests on CPU: real launchers (torchrun, gloo), small models, small data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def cpu_env(**extra) -> dict:
    """The environment of a child job: this process's, less the rendezvous variables that an in-process
    one-rank run may have set here (a launcher or Slurm sets the child's own), plus CPU settings."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
    env.update(DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def make_run_inputs(tmp: Path, n_train: int = 64, n_eval: int = 8) -> list[str]:
    """A small base model and dataset under tmp; returns the config overrides pointing at them."""
    from scaledown.data.schema import write_jsonl
    from scaledown.build.synthetic import make_records
    from scaledown.models.tiny import make_tiny_generator

    if not (tmp / "base" / "config.json").exists():
        make_tiny_generator(tmp / "base", hidden_size=32, num_layers=3, intermediate_size=64)
        write_jsonl(make_records(n_train, seed=0), tmp / "train.jsonl")
        write_jsonl(make_records(n_eval, seed=1), tmp / "eval.jsonl")
    return [f"--model.generator={tmp / 'base'}", f"--data.train_path={tmp / 'train.jsonl'}",
            f"--data.eval_path={tmp / 'eval.jsonl'}", "--model.max_doc_tokens=24", "--data.num_documents=3",
            "--train.max_eval_new_tokens=4", "--data.max_eval_examples=4"]


def torchrun_cmd(nproc: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}",
            str(ROOT / "launchers" / "train_gpu.py"), "--config", str(ROOT / "configs" / "tiny.yaml"), *args]


def train(nproc: int, args: list[str], timeout: int = 600) -> dict:
    """Run a training job with torchrun; return its train_result.json (fails with the log on error)."""
    out_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--train.output_dir="))
    run = subprocess.run(torchrun_cmd(nproc, args), env=cpu_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return json.loads((Path(out_dir) / "train_result.json").read_text())


def losses(result: dict) -> dict[int, float]:
    return {h["step"]: h["train/loss"] for h in result["history"]}


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun starts its workers in sessions of their own)."""
    import signal

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    for p in found:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
