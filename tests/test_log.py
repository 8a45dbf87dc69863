"""The project's log lines: timestamped, rank 0 unless marked for every rank, level from --log_level."""

import re

import pytest

from scaledown.log import EVERY_RANK, get_logger, pop_log_level


def test_rank_zero_by_default_every_rank_when_marked_and_the_level_flag(monkeypatch, capsys):
    log = get_logger("scaledown.test")
    monkeypatch.setenv("RANK", "1")
    log.info("only rank 0")
    log.info("from every rank", extra=EVERY_RANK)
    monkeypatch.setenv("RANK", "0")
    log.info("rank zero speaks")
    err = capsys.readouterr().err
    assert "only rank 0" not in err
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO \[rank 1\] scaledown.test: from every rank$", err, re.M)
    assert "[rank 0] scaledown.test: rank zero speaks" in err
    try:
        assert pop_log_level(["--x=1", "--log_level", "warning", "--y"]) == ["--x=1", "--y"]
        log.info("hidden at warning")
        log.warning("shown at warning")
        err = capsys.readouterr().err
        assert "hidden" not in err and "shown at warning" in err
        with pytest.raises(SystemExit, match="--log_level loud"):
            pop_log_level(["--log_level=loud"])
    finally:
        pop_log_level(["--log_level=info"])


def test_a_run_without_a_terminal_logs_metric_lines_a_summary_and_an_end_line_and_no_bar(tmp_path):
    import subprocess
    import sys

    from launch import ROOT, cpu_env, make_run_inputs

    run = subprocess.run([sys.executable, "-m", "scaledown.cli", "train", "--config", "configs/tiny.yaml",
                          *make_run_inputs(tmp_path), "--engine.backend=torch", "--model.compressor_layers=1",
                          "--train.max_steps=4", "--train.log_every=2", "--train.global_batch_size=4",
                          "--train.micro_batch_size=2", f"--train.output_dir={tmp_path / 'out'}",
                          "--train.save_every=0", "--train.eval_every=0", "--data.max_eval_examples=2"],
                         cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=600)  # pipes: as in Slurm
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if " step " in line and "loss" in line]
    assert len(lines) == 2, run.stderr
    assert re.search(r"step 4/4 loss \d+\.\d{4} lr \S+/\S+ \(compressor/generator\) grad_norm \d+\.\d{3} tokens/s "
                     r"\d+ per device, mfu (\d+\.\d%|-), eta 0:00:00$", lines[1]), lines[1]
    assert re.search(r"64 records, 4 steps \(16 per epoch\), global batch 4 = micro-batch 2 x 2 accumulation x 1 "
                     r"data-parallel ranks; torch on cpu, float32 weights; 8 eval records", run.stderr)
    assert "baseline evaluation before training: 2 records" in run.stderr
    assert re.search(r"trained 4 steps in \d+:\d\d:\d\d \(0:00:00 of it in held-out evaluations\)", run.stderr)
    assert re.search(r"done: final loss \d+\.\d{4}, held-out accuracy \d\.\d{3}; export ", run.stderr)
    card = (tmp_path / "out" / "export" / "README.md").read_text()  # the model card, with the run's figures
    assert "4 steps of 4 on 64 records" in card and "| accuracy |" in card
    assert "it/s]" not in run.stdout + run.stderr  # no progress bar: neither the loop's nor the libraries'
    assert "train:" not in run.stdout


def test_report_to_tensorboard_wandb_offline_and_mlflow_file_store_each_get_the_scalars(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the trackers extra: pip install -e .[trackers]")
    mlflow = pytest.importorskip("mlflow", reason="the trackers extra: pip install -e .[trackers]")
    from launch import make_run_inputs
    from scaledown.config import load_config
    from scaledown.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    train(load_config(None, make_run_inputs(tmp_path) + [
        "--engine.backend=torch", "--model.compressor_layers=1", "--train.max_steps=2", "--train.log_every=1",
        "--train.global_batch_size=4", "--train.micro_batch_size=2", "--data.eval_path=", "--train.save_every=0",
        "--train.report_to=tensorboard,wandb,mlflow", f"--train.output_dir={out}"]))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    runs = list((out / "wandb").glob("offline-run-*"))
    [log] = runs[0].glob("run-*.wandb")  # the offline run's record log (`wandb sync` uploads it)
    assert b"train/loss" in log.read_bytes() and b"max_steps" in log.read_bytes()
    client = mlflow.tracking.MlflowClient((out / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("scaledown").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert run.data.params["train.max_steps"] == "2"
    del wandb


def test_evaluation_bars_only_on_rank_zero_at_a_terminal(monkeypatch):
    import sys

    from tqdm import tqdm

    from scaledown.log import progress

    steps = range(3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress(steps, "answers") is steps  # a Slurm .out file: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("RANK", "1")
    assert progress(steps, "answers") is steps
    monkeypatch.setenv("RANK", "0")
    bar = progress(steps, "answers")
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
