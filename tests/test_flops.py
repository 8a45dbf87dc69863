"""The FLOP model behind MFU: LoRA-aware counts, the LM head window, ZeRO-3 and tensor-parallel sizes, MFU."""

import pytest
import torch
from torch import nn

from scaledown.metrics import FlopModel, batch_flop_inputs, linear_params


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


def test_flop_count_sees_full_size_of_zero3_partitioned_weights():
    layer = nn.Linear(4, 10, bias=False)
    layer.weight.data = torch.empty(0)  # what ZeRO-3 leaves on a rank
    layer.weight.ds_numel = 40
    assert linear_params(layer) == 40


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


def test_flops_of_a_tensor_parallel_split_are_per_device():
    import nxd_standin

    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.col = nxd_standin.ColumnParallelLinear(8, 16, bias=False, gather_output=False)
            self.dense = nn.Linear(8, 4)

    # The split layer counts this device's 16 x 8 entries (tensor-parallel size 1 here) next to nn.Linear's.
    assert linear_params(Split()) == 16 * 8 + 4 * 8
