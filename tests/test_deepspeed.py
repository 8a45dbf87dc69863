"""DeepSpeed for real: 2 CPU processes (gloo), ZeRO 1/2/3, parity with 1 process, kill and resume."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import ROOT, cpu_env, kill_tree, losses, make_run_inputs, torchrun_cmd, train

pytest.importorskip("deepspeed", reason="the DeepSpeed engine needs the gpu extra: pip install -e .[gpu]")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_run_inputs(tmp_path_factory.mktemp("ds"))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stage_trains_and_loss_falls(inputs, tmp_path, stage):
    ds_config = json.loads((ROOT / "ds_configs" / f"zero{stage}.json").read_text())
    if stage == 3:
        # Below this threshold ZeRO-3 keeps whole parameters on every rank; 0 makes tiny models shard too,
        # so a missing gather in the export would show.
        ds_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "ds.json").write_text(json.dumps(ds_config))
    # 5 held-out records on 2 ranks: unequal shares, padded so that ZeRO-3's collective forwards stay in step.
    result = train(2, inputs + ["--data.max_eval_examples=5", f"--train.output_dir={tmp_path / 'run'}",
                                f"--engine.deepspeed_config={tmp_path / 'ds.json'}",
                                "--train.global_batch_size=8", "--train.micro_batch_size=2", "--train.max_steps=12",
                                "--train.log_every=1", "--train.save_every=0"])
    curve = losses(result)
    first, last = sum(curve[s] for s in (1, 2, 3)) / 3, sum(curve[s] for s in (10, 11, 12)) / 3
    assert last < 0.8 * first, curve
    export = tmp_path / "run" / "export"
    assert (export / "compressor.safetensors").stat().st_size > 0
    from scaledown.models.model import ScaleDownModel
    model = ScaleDownModel.from_pretrained(export)
    assert all(p.abs().sum() > 0 for p in model.compressor.parameters())  # gathered, not empty shards
    # The synthetic records carry gold answers beside the teacher's: CE on both, agreement with the teacher.
    assert set(result["eval"]) == {"eval/accuracy", "eval/exact_match", "eval/f1", "eval/rouge_l", "eval/ce_teacher",
                                   "eval/ce_gold", "eval/ce_gold_other_documents", "eval/teacher_f1"}


def test_one_and_two_processes_give_the_same_losses(inputs, tmp_path):
    # Micro batch 1: every micro-batch holds one record in both runs, so the per-step mean is the same sum.
    common = inputs + ["--train.global_batch_size=4", "--train.micro_batch_size=1", "--train.max_steps=3",
                       "--train.log_every=1", "--train.save_every=0", "--model.lora_dropout=0.0",
                       "--data.eval_path="]
    one = losses(train(1, common + [f"--train.output_dir={tmp_path / 'w1'}"]))
    two = losses(train(2, common + [f"--train.output_dir={tmp_path / 'w2'}"]))
    assert list(one) == [1, 2, 3]
    for step in one:  # fp32 on CPU; only the order of reductions differs
        assert two[step] == pytest.approx(one[step], rel=1e-4), (one, two)


def test_sigkill_then_resume_auto_matches_an_uninterrupted_run(inputs, tmp_path):
    common = inputs + ["--train.global_batch_size=4", "--train.micro_batch_size=1", "--train.max_steps=24",
                       "--train.log_every=1", "--train.save_every=2", "--train.keep_last=2",
                       "--data.eval_path="]
    full = losses(train(2, common + [f"--train.output_dir={tmp_path / 'full'}"]))
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(torchrun_cmd(2, common + [f"--train.output_dir={run_dir}"]), env=cpu_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "step-000004").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
        time.sleep(0.2)
    kill_tree(proc.pid)  # launcher and both ranks, mid-training
    proc.wait()
    assert not (run_dir / "train_result.json").exists()
    from scaledown.checkpoint import complete_checkpoints
    last_saved = int(complete_checkpoints(run_dir / "checkpoints")[-1].name.split("-")[1])
    assert last_saved < 24, "the kill came too late to test a resume"
    # A torn save (what a kill during a save leaves behind) must never be loaded.
    torn = run_dir / "checkpoints" / f"step-{last_saved + 2:06d}.tmp"
    torn.mkdir(exist_ok=True)
    (torn / "trainer_state.pt").write_bytes(b"torn")
    resumed = train(2, common + [f"--train.output_dir={run_dir}", "--train.resume=auto"])
    after = losses(resumed)
    assert min(after) == last_saved + 1 and max(after) == 24
    for step, loss in after.items():
        assert loss == pytest.approx(full[step], rel=1e-5), (full, after)
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-000022", "step-000024"]
    # The frozen generator is not in the checkpoints (the resume above rebuilt it from its source): the module
    # file holds about the exported trainable weights, not those plus the base model's.
    module = (run_dir / "checkpoints" / "step-000024" / "deepspeed" / "mp_rank_00_model_states.pt").stat().st_size
    trainable = sum(f.stat().st_size for f in (run_dir / "export").rglob("*.safetensors"))
    base = sum(f.stat().st_size for f in Path(inputs[0].split("=", 1)[1]).glob("*.safetensors"))
    assert module < trainable + base / 2, (module, trainable, base)


def test_tensorboard_holds_the_training_scalars(inputs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(2, inputs + [f"--train.output_dir={tmp_path / 'tb'}", "--train.global_batch_size=4",
                       "--train.micro_batch_size=2", "--train.max_steps=2", "--train.log_every=1",
                       "--model.rerank=true"])
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/ce_loss", "train/rerank_loss", "train/grad_norm", "train/lr_compressor",
                "train/lr_generator", "perf/samples_per_s_per_device", "perf/tokens_per_s_per_device",
                "perf/tflops_per_device", "perf/data_wait_share", "memory/peak_rss_gib", "eval/accuracy"):
        assert tag in tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert all(e.value > 0 for e in acc.Scalars("perf/tflops_per_device"))


def test_the_deepspeed_engine_in_one_plain_process_without_a_launcher(inputs, tmp_path):
    """`scaledown train --device gpu` on one GPU, no launcher (the original code's `python train.py --device gpu`):
    a world of one, not MPI discovery (which needs mpi4py)."""
    env = {k: v for k, v in cpu_env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    blocker = tmp_path / "no-mpi" / "mpi4py"  # as on a machine without it, whether or not this one has it
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mpi4py'\")\n")
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    run = subprocess.run([sys.executable, "-m", "scaledown.cli", "train", "--config", "configs/tiny.yaml", *inputs,
                          "--device", "gpu", "--train.global_batch_size=4", "--train.micro_batch_size=2",
                          "--train.max_steps=2", "--train.save_every=0", "--data.eval_path=",
                          f"--train.output_dir={tmp_path / 'run'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "mpi4py" not in run.stderr
    assert json.loads((tmp_path / "run" / "train_result.json").read_text())["steps"] == 2
