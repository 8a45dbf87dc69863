"""slurm/train_gpu.sh under a real Slurm on this machine: 2 nodes x 1 process, DeepSpeed on CPU."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from launch import ROOT, cpu_env, make_run_inputs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
HARNESS = ROOT / "tests" / "helpers" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the local Slurm harness needs root (it starts slurmctld/slurmd and edits /etc/hosts)")
    if shutil.which("unshare") is None:
        pytest.skip("util-linux's unshare is missing: cannot give each slurmd its own hostname")
    up = subprocess.run(["bash", str(HARNESS), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        if shutil.which("slurmctld") is None:
            pytest.skip(f"Slurm could not be installed here (apt-get slurm-wlm munge failed): {up.stderr[-500:]}")
        pytest.fail(f"local Slurm did not come up:\n{up.stdout}\n{up.stderr}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield conf
    subprocess.run(["bash", str(HARNESS), "down"], capture_output=True, timeout=120)


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_two_node_deepspeed_job_trains_and_exits_zero(slurm, tmp_path, launcher):
    # Slurm jobs run as root in the submit directory; the nodes share this file system. LAUNCHER=srun: no
    # torchrun, one Slurm task per rank, ranks from Slurm's variables (scaledown/distributed.py).
    args = make_run_inputs(tmp_path)
    out = tmp_path / "run"
    env = cpu_env(SLURM_CONF=slurm, GPUS_PER_NODE="1", PYTHON=str(Path(os.sys.executable)), LAUNCHER=launcher)
    job = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={tmp_path}/job.out",
         str(ROOT / "slurm" / "train_gpu.sh"), *args, f"--train.output_dir={out}", "--train.max_steps=3",
         "--train.global_batch_size=4", "--train.micro_batch_size=2", "--data.eval_path="],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert job.returncode == 0, f"{job.stdout}\n{job.stderr}\n{log[-5000:]}"
    assert "rank 0/2" in log and "rank 1/2" in log
    assert "on node1" in log and "on node2" in log, "the two ranks must run on the two Slurm nodes"
    assert "nodes=2 gpus/node=1 head=node1:" in log
    assert (out / "train_result.json").exists() and (out / "export" / "compressor.safetensors").exists()


def test_failing_rank_fails_the_job(slurm, tmp_path):
    env = cpu_env(SLURM_CONF=slurm, GPUS_PER_NODE="1", PYTHON=str(Path(os.sys.executable)))
    job = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={tmp_path}/job.out",
         str(ROOT / "slurm" / "train_gpu.sh"), f"--data.train_path={tmp_path}/missing.jsonl",
         f"--train.output_dir={tmp_path}/run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode != 0
    assert "missing.jsonl: no such file" in (tmp_path / "job.out").read_text()


def test_two_node_dataset_build(slurm, tmp_path):
    pytest.importorskip("sentence_transformers", reason="the build needs the data extra: pip install -e .[data]")
    from scaledown.build.synthetic import main as synthetic
    from scaledown.models.tiny import main as tiny

    tiny(["--out", str(tmp_path / "base"), "--retrieval-out", str(tmp_path / "retrieval")])
    synthetic(["--out", str(tmp_path / "source"), "--train", "24", "--eval", "4"])
    env = cpu_env(SLURM_CONF=slurm, PROCS_PER_NODE="1", PYTHON=str(Path(os.sys.executable)))
    job = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={tmp_path}/job.out",
         str(ROOT / "slurm" / "build_dataset.sh"), "--corpus", str(tmp_path / "source" / "corpus.jsonl"),
         "--queries", str(tmp_path / "source" / "queries.jsonl"), "--out", str(tmp_path / "data"),
         "--splade", str(tmp_path / "retrieval" / "splade" / "encoder"), "--cross-encoder",
         str(tmp_path / "retrieval" / "ce"), "--teacher", "gold", "--tokenizer", str(tmp_path / "base"),
         "--chunk-size", "4", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert job.returncode == 0, f"{job.stderr}\n{log[-4000:]}"
    assert "rank 0:" in log and "rank 1:" in log
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["records"] == 24 and stats["failures"] == 0
    assert len(list((tmp_path / "data" / "chunks").glob("chunk-*.jsonl"))) == 6


def test_trn1_script_passes_node_ranks_and_neuron_environment(slurm, tmp_path):
    """slurm/train_trn1.sh under real Slurm, torchrun and neuron_parallel_compile replaced by recording stand-ins
    (the Neuron SDK cannot be installed here): the exact arguments and environment on node 0 and node 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("torchrun", "neuron_parallel_compile"):
        (bin_dir / tool).write_text(
            "#!/usr/bin/env bash\n"
            f'out={tmp_path}/{tool}-node$SLURM_NODEID.txt\n'
            'printf "%s\\n" "$@" > "$out"\n'
            'echo "ENV NEURON_CC_FLAGS=$NEURON_CC_FLAGS FI_PROVIDER=$FI_PROVIDER '
            'NEURON_RT_NUM_CORES=$NEURON_RT_NUM_CORES" >> "$out"\n')
        (bin_dir / tool).chmod(0o755)
    env = cpu_env(SLURM_CONF=slurm, PATH=f"{bin_dir}:{os.environ['PATH']}", PRECOMPILE="1",
                  NEURON_CACHE=str(tmp_path / "cache"), MASTER_PORT="23456")
    job = subprocess.run(["sbatch", "--wait", "--nodes=2", f"--output={tmp_path}/job.out",
                          str(ROOT / "slurm" / "train_trn1.sh"), "--config", "my run.yaml"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr + (tmp_path / "job.out").read_text()
    for node in (0, 1):
        run = (tmp_path / f"torchrun-node{node}.txt").read_text().splitlines()
        assert run[:12] == ["--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "32", "--master_addr",
                            "node1", "--master_port", "23456", "launchers/train_trn1.py", "--config"]
        assert run[12] == "my run.yaml"  # arguments with spaces survive
        assert run[13] == f"ENV NEURON_CC_FLAGS=--auto-cast=none --cache_dir={tmp_path}/cache FI_PROVIDER=efa " \
                          "NEURON_RT_NUM_CORES=32"
        pre = (tmp_path / f"neuron_parallel_compile-node{node}.txt").read_text().splitlines()
        assert pre[0] == "torchrun" and pre[1:4] == ["--nnodes", "2", "--node_rank"] and pre[4] == str(node)
        assert pre[-2] == "--train.max_steps=10"


def test_usr1_before_the_time_limit_checkpoints_and_the_requeued_job_resumes(slurm, tmp_path):
    """What Slurm does with --signal=B:USR1@120 before a time limit: the script asks the trainer to stop, the
    trainer checkpoints at the next step and exits, the script requeues the job, and the second run resumes."""
    import time

    args = make_run_inputs(tmp_path)
    out, log = tmp_path / "run", tmp_path / "job.out"
    steps = 200  # about 40 s of training here; the stop comes a few seconds in
    env = cpu_env(SLURM_CONF=slurm, GPUS_PER_NODE="1", PYTHON=str(Path(os.sys.executable)))
    submit = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2", "--open-mode=append",
         f"--output={log}", str(ROOT / "slurm" / "train_gpu.sh"), *args, f"--train.output_dir={out}",
         f"--train.max_steps={steps}", "--train.global_batch_size=4", "--train.micro_batch_size=2",
         "--train.save_every=0", "--train.log_every=1", "--data.eval_path="],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    deadline = time.time() + 600
    while time.time() < deadline and "train:" not in (log.read_text() if log.exists() else ""):
        time.sleep(2)
    time.sleep(5)  # a few steps in
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True, timeout=60)
    while time.time() < deadline and not (out / "train_result.json").exists():
        time.sleep(3)
    text = log.read_text(errors="replace")
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True, timeout=60)
    assert (out / "train_result.json").exists(), text[-5000:] + shown.stdout
    assert "USR1 from Slurm" in text and f"requeueing job {job}" in text, text[-5000:]
    result = json.loads((out / "train_result.json").read_text())
    stopped = result["history"][0]["step"] - 1  # the requeued run resumed after the stop, it did not start over
    assert 0 < stopped < steps and result["steps"] == steps
    assert (out / "checkpoints" / f"step-{stopped:06d}").is_dir()  # the stop's own checkpoint
    curve = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert curve == list(range(1, steps + 1))  # both segments, for the report
