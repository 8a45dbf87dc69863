"""Resume trusts only checkpoints that verify, falls back to the older complete one, and refuses (or, when
asked, applies and records) settings that change what the run computes. The torch engine, in this process."""

import json
import shutil

import pytest

from launch import make_run_inputs
from scaledown.checkpoint import Checkpointer, complete_checkpoints
from scaledown.config import ConfigError, load_config
from scaledown.train import lr_schedule, train

COMMON = ["--engine.backend=torch", "--model.compressor_layers=1", "--model.dtype=float32", "--model.rerank=false",
          "--train.global_batch_size=4", "--train.micro_batch_size=2", "--train.log_every=1",
          "--train.save_every=2", "--train.keep_last=3", "--data.eval_path=", "--model.lora_dropout=0.1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step run: its losses, and its checkpoint folder to copy."""
    t = tmp_path_factory.mktemp("ckpt")
    inputs = make_run_inputs(t, n_train=32)
    args = inputs + COMMON + ["--train.max_steps=6", f"--train.output_dir={t / 'full'}"]
    result = train(load_config(None, args))
    return t, inputs, {h["step"]: h["train/loss"] for h in result["history"]}


def resumed_run(reference, tmp_path, *extra):
    t, inputs, _ = reference
    run = tmp_path / "run"
    shutil.copytree(t / "full" / "checkpoints", run / "checkpoints")
    return run, inputs + COMMON + ["--train.max_steps=6", f"--train.output_dir={run}", *extra]


def break_rng(folder):
    (folder / "rng-rank00000.pt").unlink()


def truncate_state(folder):
    data = (folder / "engine_state.pt").read_bytes()
    (folder / "engine_state.pt").write_bytes(data[: len(data) // 2])


def empty_folder(folder):
    for f in folder.iterdir():
        f.unlink()


def drop_manifest(folder):
    (folder / "MANIFEST.json").unlink()


def flip_config(folder):
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace("seed: 0", "seed: 1"))


def flip_a_byte(folder):
    """A bad disk block: the engine state keeps its size, one byte in its middle changes."""
    flip_a_byte_of(folder / "engine_state.pt")


@pytest.mark.parametrize("damage, reason", [
    (break_rng, "rng-rank00000.pt is missing"), (truncate_state, "engine_state.pt has"),
    (flip_a_byte, "engine_state.pt does not match its checksum"),
    (empty_folder, "no MANIFEST.json"), (drop_manifest, "no MANIFEST.json"),
    (flip_config, "config.yaml does not match its checksum")])
def test_a_damaged_newest_checkpoint_is_skipped_and_the_older_one_resumes_exactly(reference, tmp_path, capsys,
                                                                                  damage, reason):
    run, args = resumed_run(reference, tmp_path)
    damage(run / "checkpoints" / "step-000006")
    result = train(load_config(None, args))
    assert f"resume: skipping {run / 'checkpoints' / 'step-000006'}: {reason}" in capsys.readouterr().err
    losses = {h["step"]: h["train/loss"] for h in result["history"]}
    assert list(losses) == [5, 6] and losses == {s: reference[2][s] for s in (5, 6)}  # bit-identical


def test_a_resume_that_changes_exactness_settings_is_refused_then_applied_when_allowed(reference, tmp_path):
    run, args = resumed_run(reference, tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-000006")  # resume from step 4
    changed = args + ["--optim.lr_generator=5e-3", "--train.seed=3", "--train.global_batch_size=8"]
    with pytest.raises(ConfigError) as err:
        train(load_config(None, changed))
    for line in ("optim.lr_generator: 0.0001 -> 0.005", "train.seed: 0 -> 3", "train.global_batch_size: 4 -> 8"):
        assert line in str(err.value)
    result = train(load_config(None, changed + ["--train.resume_changes=allow"]))
    lr5 = next(h["train/lr_generator"] for h in result["history"] if h["step"] == 5)
    assert lr5 == pytest.approx(5e-3 * lr_schedule(6, 0.05)(5))  # the new LR, not the checkpoint's 1e-4
    record = json.loads((run / "resume_changes.jsonl").read_text())
    assert record["step"] == 4 and "train.seed: 0 -> 3" in record["changes"]


def test_clean_up_renames_before_deleting(tmp_path, monkeypatch):
    """A kill during keep_last clean-up leaves `step-N.deleting`, never half a folder under its final name."""
    import scaledown.checkpoint as ckpt

    (tmp_path / "step-000002").mkdir()
    (tmp_path / "step-000002" / "f").write_text("x")

    def killed(path, ignore_errors=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        Checkpointer._remove(tmp_path / "step-000002")
    assert [p.name for p in tmp_path.iterdir()] == ["step-000002.deleting"]
    assert complete_checkpoints(tmp_path) == []


def test_a_run_with_eval_data_writes_the_report(reference, tmp_path):
    t, inputs, _ = reference
    args = [a for a in inputs + COMMON if not a.startswith("--data.eval_path")]
    run = tmp_path / "run"
    result = train(load_config(None, args + [f"--data.eval_path={t / 'eval.jsonl'}", "--train.max_steps=4",
                                             "--train.eval_every=2", f"--train.output_dir={run}"]))
    assert set(result["baseline"]) == {"compressed", "uncompressed", "no_documents"}
    assert [e["step"] for e in result["eval_history"]] == [2, 4] and "eval/ce_teacher" in result["eval_history"][0]
    report = (run / "report.md").read_text()
    for row in ("| no documents |", "| uncompressed (documents as text) |", "| compressed, before training |",
                "| compressed, after training |", "![training curves](loss.png)", "| compressed | ",
                "Speed-up of the compressed model", "## Learning curve (held-out)",
                "| step | ce_gold | ce_gold_other_documents | accuracy |"):
        assert row in report, report
    curve = report.split("## Learning curve (held-out)")[1].split("##")[0]
    assert [line.split(" | ")[0] for line in curve.splitlines() if line.startswith("| ") and "step" not in line] \
        == ["| 0", "| 2", "| 4"]  # before training, the curve evaluation, the final one
    assert (run / "loss.png").stat().st_size > 10_000
    (run / "report.md").unlink()
    from scaledown.eval.report import main as report_main
    report_main([str(run)])
    assert (run / "report.md").read_text() == report


def test_a_same_size_corruption_of_a_large_file_is_caught_unless_checksums_are_off(tmp_path):
    from scaledown.checkpoint import verify, write_manifest

    folder = tmp_path / "step-000001"
    folder.mkdir()
    (folder / "shard.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: sizes alone were checked before
    write_manifest(folder)
    assert verify(folder) is None
    flip_a_byte_of(folder / "shard.bin")
    assert verify(folder) == "shard.bin does not match its checksum"
    assert verify(folder, checksums=False) is None  # train.verify_checksums=false: sizes only


def flip_a_byte_of(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
