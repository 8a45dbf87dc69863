"""Engine-side logic without processes: batch arithmetic, DeepSpeed config filling, schedule, sampler,
checkpoint discovery, FLOP counting, answer metrics."""

import json
import math

import pytest
import torch
from torch import nn

from scaledown.checkpoint import complete_checkpoints, resolve_resume
from scaledown.config import ConfigError
from scaledown.data.sampler import ShardedSampler
from scaledown.engine.base import BatchPlan, BatchSizeError
from scaledown.engine.deepspeed import resolve_ds_config
from scaledown.eval.answers import exact_match, normalize_answer, rouge_l, substring_match, token_f1
from scaledown.metrics import FlopModel, batch_flop_inputs, linear_params
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


def test_flops_count_frozen_weights_as_forward_plus_input_grad():
    comp = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))   # 64 trained entries
    frozen = nn.Linear(4, 10, bias=False).requires_grad_(False)  # 40 frozen
    lora = nn.Linear(4, 2, bias=False)                          # 8 trained
    gen = nn.ModuleDict({"frozen": frozen, "lora": lora})
    assert linear_params(comp) == 64
    assert (linear_params(gen, trainable=False), linear_params(gen, trainable=True)) == (40, 8)
    fm = FlopModel(comp_trained=64, comp_layers=2, comp_width=4, gen_frozen=40, gen_lora=8, gen_layers=3,
                   gen_width=4)
    # By hand: 10 compressor tokens x (6*64 + 12*2*4*5.5) + 7 generator tokens x (4*40 + 6*8 + 12*3*4*4)
    assert fm.train_flops(10, 5.5, 7, 4.0) == 10 * (384 + 528) + 7 * (160 + 48 + 576)


def test_batch_flop_inputs_use_the_causal_mean_context():
    batch = {"comp_attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
             "gen_attention_mask": torch.tensor([[1, 1, 1, 1]])}
    # Rows of 2 and 3 tokens: contexts 1+2 and 1+2+3 over 5 tokens; no labels: the LM head runs everywhere.
    assert batch_flop_inputs(batch) == (5, 9 / 5, 4, 10 / 4, 4)
    # Labels from column 2 on (in either row): the head runs over columns 1..3, 3 positions per row.
    batch["gen_attention_mask"] = torch.ones(2, 4, dtype=torch.long)
    batch["labels"] = torch.tensor([[-100, -100, -100, 7], [-100, -100, 5, 6]])
    assert batch_flop_inputs(batch)[4] == 2 * 3


def test_flops_count_the_lm_head_over_its_window_only():
    fm = FlopModel(comp_trained=0, comp_layers=1, comp_width=1, gen_frozen=40, gen_lora=0, gen_layers=1,
                   gen_width=1, gen_head=100)
    assert fm.train_flops(0, 0.0, 10, 0.0, head_tokens=3) == 10 * 4 * 40 + 3 * 4 * 100
    assert fm.train_flops(0, 0.0, 10, 0.0) == 10 * 4 * 40 + 10 * 4 * 100


@pytest.mark.parametrize("pred, gold, em, sub, f1", [
    ("The Eiffel Tower.", "eiffel tower", 1.0, 1.0, 1.0),
    ("It is in Paris, France", "Paris", 0.0, 1.0, 1 / 3),
    ("Parisian food", "Paris", 0.0, 1.0, 0.0),  # the reference's accuracy is a plain substring test
    ("«Zürich»", "zürich", 0.0, 1.0, 0.0),  # only ASCII punctuation is removed, as in SQuAD's script
    ("an apple a day", "apple day", 1.0, 1.0, 1.0),
    ("", "x", 0.0, 0.0, 0.0),
    # The three cases the reference scores 1 and an earlier word-boundary version scored 0:
    ("In the 1960s.", "1960", 0.0, 1.0, 0.0),
    ("U.S.A.", "USA", 1.0, 1.0, 1.0),
    ("10,000 people", "10000", 0.0, 1.0, 2 / 3),
])
def test_answer_metrics_as_the_reference_scores_them(pred, gold, em, sub, f1):
    assert exact_match(pred, gold) == em
    assert substring_match(pred, gold) == sub
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_normalisation_and_rouge_l():
    assert normalize_answer("  The  Cat's—hat!  ") == "cats—hat"
    assert rouge_l("w x y z", "w y z q") == pytest.approx(0.75)  # LCS 3 of 4 and 4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)  # rouge-score keeps articles


def test_metrics_take_the_best_alias_and_score_gold_before_the_teacher():
    from scaledown.data.schema import Record
    from scaledown.eval.answers import score_records, summarize

    recs = [Record("q", ["d"], answer="the teacher says 1961", gold_answers=["nineteen sixty", "1960"]),
            Record("q", ["d"], answer="Paris", gold_answers=None)]
    sums = score_records(["It was 1960.", "paris"], recs)
    assert sums["accuracy"] == 2.0 and sums["exact_match"] == 1.0  # alias "1960"; record 2 falls back to answer
    means = summarize(sums)
    assert means["accuracy"] == 1.0
    assert means["teacher_f1"] == pytest.approx(token_f1("It was 1960.", "the teacher says 1961"))


def test_flop_count_sees_full_size_of_zero3_partitioned_weights():
    layer = nn.Linear(4, 10, bias=False)
    layer.weight.data = torch.empty(0)  # what ZeRO-3 leaves on a rank
    layer.weight.ds_numel = 40
    assert linear_params(layer) == 40


def test_ndcg():
    from scaledown.eval.answers import ndcg_at_k

    assert ndcg_at_k([3.0, 2.0, 1.0], [2, 1, 0]) == pytest.approx(1.0)
    # Relevant document ranked second of two: (2^1-1)/log2(3) over the ideal 1/log2(2).
    assert ndcg_at_k([0.1, 0.9], [1, 0]) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([1.0, 2.0], [0, 0]) == 0.0


def test_mfu_is_achieved_flops_over_device_peak():
    from scaledown.metrics import Meter

    fm = FlopModel(comp_trained=1000, comp_layers=1, comp_width=10, gen_frozen=5000, gen_lora=100, gen_layers=2,
                   gen_width=10)
    meter = Meter(fm, peak_tflops=1e-9, device=torch.device("cpu"))  # a 1 kFLOP/s "device"
    batch = {"comp_attention_mask": torch.ones(2, 3), "gen_attention_mask": torch.ones(1, 4),
             "gen_input_ids": torch.zeros(1, 4)}
    meter.add_batch(batch, data_wait=0.0)
    expected = fm.train_flops(6, 2.0, 4, 2.5)
    assert meter.flops == expected == 6 * (6000 + 240) + 4 * (20000 + 600 + 600)
    meter.start -= 10.0  # pretend 10 s passed
    summary = meter.summary()
    assert summary["perf/mfu"] == pytest.approx(expected / 10.0 / 1e3, rel=1e-3)
    assert summary["perf/samples_per_s_per_device"] == pytest.approx(0.1, rel=1e-3)


def test_autocast_runs_matmuls_in_the_named_dtype_and_is_off_by_default():
    from scaledown.engine.plain import TorchEngine

    layer, x = nn.Linear(4, 4), torch.ones(2, 4)
    with TorchEngine(4, 2).autocast():
        assert layer(x).dtype == torch.float32
    with TorchEngine(4, 2, autocast="bfloat16").autocast():
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # weights stay fp32 for the optimizer


def test_flops_of_a_tensor_parallel_split_are_per_device():
    import nxd_standin

    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.col = nxd_standin.ColumnParallelLinear(8, 16, bias=False, gather_output=False)
            self.dense = nn.Linear(8, 4)

    # The split layer counts this device's 16 x 8 entries (tensor-parallel size 1 here) next to nn.Linear's.
    assert linear_params(Split()) == 16 * 8 + 4 * 8
