"""The package as a user installs it: a wheel (not the checkout) carries the default configs and the license, and,
installed into a fresh virtual environment, `scaledown train --config configs/tiny.yaml` runs from an empty
directory."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from launch import ROOT, cpu_env, make_run_inputs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    import setuptools

    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation (offline) when this environment's setuptools reads the SPDX license field (>= 77).
    isolation = [] if int(setuptools.__version__.split(".")[0]) < 77 else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300)
    return next(out.glob("scaledown-*.whl"))


def test_wheel_ships_the_default_configs_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("configs/tiny.yaml", "configs/smollm2.yaml", "ds_configs/zero2.json", "ds_configs/zero3.json",
                   "neuron_configs/tp1_lora.yaml"):
        assert f"scaledown/{config}" in names, config
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert not any(n.startswith(("tests/", "benchmarks/", "runs/")) for n in names)


def fresh_venv(folder, wheel):
    """A new virtual environment with the wheel installed (not editable). Its dependencies are this environment's
    packages, seen through a .pth file (offline: nothing to download), and `pip check` must find every requirement
    the wheel declares met by them."""
    import site
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
    python = folder / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if "site-packages" in p]
    (Path(purelib) / "dependencies.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    unmet = [line for line in check.stdout.splitlines() if line.lower().startswith("scaledown ")]
    assert not unmet, unmet
    return python


@pytest.mark.slow
def test_installed_wheel_trains_from_an_empty_directory_with_the_packaged_config(wheel, tmp_path):
    venv, empty = tmp_path / "venv", tmp_path / "elsewhere"
    empty.mkdir()
    python = fresh_venv(venv, wheel)
    env = cpu_env()
    env.pop("PYTHONPATH", None)  # the installed copy, not the checkout
    where = subprocess.run([python, "-c", "import scaledown, scaledown.cli as c; print(scaledown.__file__); "
                            "c.main(['--version'])"], cwd=empty, env=env, capture_output=True, text=True)
    target = Path(where.stdout.splitlines()[0]).parent.parent if where.stdout else None
    assert str(target).startswith(str(venv)) and "scaledown 0.1.0" in where.stdout, where.stdout + where.stderr
    # The packaged DeepSpeed JSON is found from here (the run itself uses the in-process torch engine).
    found = subprocess.run([python, "-c", "from scaledown.config import load_config; "
                            "print(load_config('configs/tiny.yaml').engine.deepspeed_config)"],
                           cwd=empty, env=env, capture_output=True, text=True)
    assert found.stdout.strip() == str(target / "scaledown" / "ds_configs" / "zero2.json"), found.stderr
    inputs = make_run_inputs(tmp_path / "inputs")
    run = subprocess.run([venv / "bin" / "scaledown", "train", "--config", "configs/tiny.yaml", *inputs,
                          "--engine.backend=torch", "--model.compressor_layers=1", "--train.max_steps=2",
                          "--train.global_batch_size=4", "--train.micro_batch_size=2", "--data.eval_path=",
                          "--train.output_dir=out", "--train.save_every=0"],
                         cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((empty / "out" / "train_result.json").read_text())["steps"] == 2
    assert (empty / "out" / "export" / "scaledown_config.json").exists()
