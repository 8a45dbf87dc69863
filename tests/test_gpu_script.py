"""benchmarks/gpu.sh --dry-run: the GPU machine's script, every step at tiny sizes on this CPU (no wheels, no CUDA),
so that the one lent GPU session is not spent finding a typo."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_runs_every_step(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    steps = ["train", "0", "inference", "0", "inference_compiled", "0", "gpu_tests", "0"]
    assert (tmp_path / "rc.txt").read_text().split() == steps
    results = (tmp_path / "results.md").read_text()
    for heading in ("## train", "## inference", "## inference_compiled", "## gpu_tests"):
        assert heading in results
    assert "samples/s" in results and "speed-up" in results and "compiled decoder" in results
    assert (tmp_path / "train.json").exists()
