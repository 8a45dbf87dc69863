"""Engine-side units: batch arithmetic, DeepSpeed config resolution, LR schedule, sampler, resume, autocast."""

import json

import pytest
import torch
from torch import nn

from scaledown.checkpoint import complete_checkpoints, resolve_resume
from scaledown.config import ConfigError
from scaledown.data.sampler import ShardedSampler
from scaledown.engine.base import BatchPlan, BatchSizeError
from scaledown.engine.deepspeed import resolve_ds_config
from scaledown.train import lr_schedule


def test_batch_plan_arithmetic_and_error_names_every_number():
    assert BatchPlan(128, 4, 16).accumulation == 2
    with pytest.raises(BatchSizeError) as err:
        BatchPlan(128, 3, 16)
    for number in ("128", "3", "16", "48"):
        assert number in str(err.value)


def test_ds_config_auto_fields_are_filled(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": "auto", "zero_optimization": {"stage": 2}}))
    cfg = resolve_ds_config(path, BatchPlan(64, 4, 2), 1.0, "bfloat16")
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"],
            cfg["gradient_clipping"]) == (64, 4, 8, 1.0)
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False


@pytest.mark.parametrize("explicit, needle", [
    ({"train_batch_size": 32}, "train_batch_size=32 disagrees"),
    ({"gradient_accumulation_steps": 3}, "gradient_accumulation_steps=3 disagrees"),
    ({"gradient_clipping": 0.5}, "gradient_clipping=0.5"),
    ({"bf16": {"enabled": False}}, "bf16.enabled=False disagrees with model.dtype=bfloat16"),
    ({"optimizer": {"type": "AdamW"}}, "remove the 'optimizer' block"),
    ({"scheduler": {"type": "WarmupLR"}}, "remove the 'scheduler' block"),
])
def test_ds_config_disagreement_is_an_error(tmp_path, explicit, needle):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(explicit))
    with pytest.raises(ConfigError, match=needle) as err:
        resolve_ds_config(path, BatchPlan(64, 4, 2), 1.0, "bfloat16")
    assert str(path) in str(err.value)


def test_shipped_ds_configs_resolve():
    from launch import ROOT

    for path in sorted((ROOT / "ds_configs").glob("*.json")):
        cfg = resolve_ds_config(path, BatchPlan(128, 4, 8), 1.0, "bfloat16")
        assert cfg["gradient_accumulation_steps"] == 4, path


def test_lr_schedule_warmup_then_linear_decay():
    f = lr_schedule(100, 0.05)
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(5) == pytest.approx(1.0) and f(62) == pytest.approx(38 / 95) and f(100) == 0.0
    assert lr_schedule(10, 0.0)(0) == 1.0
    late = lr_schedule(100, 0.1, start=40)  # waits, then warms up over 10% of the 60 steps left, then decays
    assert [late(s) for s in (0, 39)] == [0.0, 0.0]
    assert [late(s) for s in range(40, 46)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert late(73) == pytest.approx(27 / 54) and late(100) == 0.0


def test_sampler_global_batches_do_not_depend_on_world_size():
    one = list(ShardedSampler(50, 8, 0, 1, seed=3))
    two = [list(ShardedSampler(50, 8, r, 2, seed=3)) for r in range(2)]
    assert len(one) == 48 and sorted(one) == sorted(two[0] + two[1])
    for step in range(6):
        window = slice(step * 4, (step + 1) * 4)
        assert set(one[step * 8:(step + 1) * 8]) == set(two[0][window] + two[1][window])
    resumed = ShardedSampler(50, 8, 1, 2, seed=3)
    resumed.set_position(0, 12)
    assert list(resumed) == two[1][12:]
    nxt = ShardedSampler(50, 8, 0, 1, seed=3)
    nxt.set_position(1, 0)
    assert list(nxt) != one  # a new order each epoch
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedSampler(4, 8, 0, 1)


def test_length_grouped_batches_pad_less_and_keep_the_sampler_contract():
    """data.group_by_length: every record once per epoch, the same global batches on 1 and 2 ranks, a resume
    continues the same order, and micro-batches hold similar lengths (less padding than random batches)."""
    lengths = [int(x) for x in torch.randint(10, 400, (1000,), generator=torch.Generator().manual_seed(0))]
    one = list(ShardedSampler(1000, 8, 0, 1, seed=3, lengths=lengths))
    two = [list(ShardedSampler(1000, 8, r, 2, seed=3, lengths=lengths)) for r in range(2)]
    assert sorted(one) == sorted(two[0] + two[1]) and len(set(one)) == 1000
    for step in range(125):
        halves = two[0][step * 4:(step + 1) * 4] + two[1][step * 4:(step + 1) * 4]
        assert set(one[step * 8:(step + 1) * 8]) == set(halves)
    resumed = ShardedSampler(1000, 8, 1, 2, seed=3, lengths=lengths)
    resumed.set_position(0, 100)
    assert list(resumed) == two[1][100:]

    def padding(order):  # padded positions of micro-batches of 4 rows, each padded to its longest
        return sum(4 * max(lengths[i] for i in order[j:j + 4]) - sum(lengths[i] for i in order[j:j + 4])
                   for j in range(0, len(order), 4))

    random_order = list(ShardedSampler(1000, 8, 0, 1, seed=3))
    assert padding(one) < 0.1 * padding(random_order)
    longest = [max(lengths[i] for i in one[j:j + 8]) for j in range(0, 400, 8)]  # the first 50 global batches
    assert longest != sorted(longest, reverse=True)  # in a random order, not longest first
    with pytest.raises(ValueError, match="999 lengths for 1000 records"):
        ShardedSampler(1000, 8, 0, 1, lengths=lengths[:-1])


def test_resume_ignores_torn_checkpoints(tmp_path):
    from scaledown.checkpoint import write_manifest
    from scaledown.engine.plain import TorchEngine

    engine = TorchEngine(4, 4)
    for name in ("step-000010", "step-000020", "step-000030.tmp", "step-000040.deleting", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state").write_text(name)
        write_manifest(tmp_path / name)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000010", "step-000020"]
    assert resolve_resume("auto", tmp_path, engine).name == "step-000020"
    assert resolve_resume("none", tmp_path, engine) is None
    assert resolve_resume("auto", tmp_path / "missing", engine) is None
    with pytest.raises(FileNotFoundError, match="step-000030.tmp"):
        resolve_resume(str(tmp_path / "step-000030.tmp"), tmp_path, engine)


def test_autocast_runs_matmuls_in_the_named_dtype_and_is_off_by_default():
    from scaledown.engine.plain import TorchEngine

    layer, x = nn.Linear(4, 4), torch.ones(2, 4)
    with TorchEngine(4, 2).autocast():
        assert layer(x).dtype == torch.float32
    with TorchEngine(4, 2, autocast="bfloat16").autocast():
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # weights stay fp32 for the optimizer


def test_autocast_auto_picks_bf16_only_where_the_device_is_fast_in_it(monkeypatch):
    """engine.autocast=auto: bf16 on a CPU with native bf16 (AVX512-BF16, AMX), fp32 on an AVX2-only one, where
    torch's bf16 matrix products run ~20x slower; the CPU peak probe measures the same dtype."""
    import scaledown.hardware as hardware
    from scaledown.config import load_config
    from scaledown.engine.plain import TorchEngine

    cpu = torch.device("cpu")
    assert load_config(None, ["--engine.backend=torch", "--engine.autocast=auto"]).engine.autocast == "auto"
    for native, expected in ((True, "bfloat16"), (False, "")):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda native=native: native)
        assert hardware.autocast_dtype("auto", cpu) == expected
        assert hardware.cpu_fast_dtype() == (torch.bfloat16 if native else torch.float32)
        engine = TorchEngine(4, 4, autocast="auto")
        with engine.autocast():
            assert torch.is_autocast_enabled("cpu") == native
    assert hardware.autocast_dtype("bfloat16", cpu) == "bfloat16" and hardware.autocast_dtype("", cpu) == ""
