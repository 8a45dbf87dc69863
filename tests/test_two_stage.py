"""Two-stage training (data.memory_cache): stage 1 (`scaledown cache`) writes the frozen compressor's memory
embeddings, resumably; stage 2 trains the generator's LoRA on them and computes what joint training with that
compressor frozen computes; a cache of other inputs is refused field by field."""

import shutil

import pytest
import torch

from launch import make_run_inputs
from scaledown.build.memory_cache import write_cache
from scaledown.config import ConfigError, load_config
from scaledown.data.memory_cache import CachedMemory, chunk_path
from scaledown.data.schema import DataError
from scaledown.train import build_model, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two_stage")
    inputs = make_run_inputs(tmp, n_train=40) + [
        "--model.rerank=false", "--engine.backend=torch", "--model.lora_dropout=0.0", "--data.eval_path=",
        "--train.global_batch_size=8", "--train.micro_batch_size=4", "--train.log_every=1", "--train.save_every=0",
        "--optim.max_grad_norm=1e9"]  # no clipping: a joint run's norm would count the frozen compressor's grads
    cache = tmp / "cache"
    cfg = load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}"])
    write_cache(cfg, chunk=16)  # 40 records: chunks of 16, 16 and 8
    return tmp, inputs, cache


def losses(result):
    return [h["train/loss"] for h in result["history"]]


def test_stage_one_resumes_at_the_missing_chunk_with_the_same_bytes(setup):
    tmp, inputs, cache = setup
    before = {c: chunk_path(cache, c).read_bytes() for c in range(3)}
    kept = chunk_path(cache, 0).stat().st_mtime_ns
    chunk_path(cache, 1).unlink()  # as if the job died while writing chunk 1 (its temporary file left behind)
    chunk_path(cache, 1).with_name(chunk_path(cache, 1).name + ".tmp").write_bytes(b"partial")
    write_cache(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}"]), chunk=16)
    assert {c: chunk_path(cache, c).read_bytes() for c in range(3)} == before
    assert chunk_path(cache, 0).stat().st_mtime_ns == kept  # done chunks are not redone


def test_stage_two_feeds_the_generator_what_the_joint_model_would(setup):
    tmp, inputs, cache = setup
    cfg = load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}"])
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg).eval()
    assert not any(p.requires_grad for p in model.compressor.parameters())
    from scaledown.data.mapped import open_records

    records = CachedMemory(cache, open_records(cfg.data.train_path, lambda: None, 0, 0), model, 3)
    collator = model.collator(3)
    items = [records[i] for i in (5, 17, 33, 2)]  # across chunks, not in cache order
    cached = records.collate(collator)(items)
    live = collator([r for _, r in items])
    assert "comp_input_ids" not in cached and torch.equal(cached["gen_input_ids"], live["gen_input_ids"])
    with torch.no_grad():
        embeds, _ = model._generator_inputs(cached)
        expected, _ = model._generator_inputs(live)
        assert (embeds - expected).abs().max() <= 1e-5
        assert model(**cached)["loss"].item() == pytest.approx(model(**live)["loss"].item(), rel=1e-5)


def test_stage_two_trains_as_joint_training_with_the_compressor_frozen_and_resumes_exactly(setup):
    tmp, inputs, cache = setup
    steps = ["--train.max_steps=4"]
    two = train(load_config("configs/tiny.yaml", inputs + steps + [f"--data.memory_cache={cache}",
                                                                    f"--train.output_dir={tmp / 'two'}"]))
    # Joint training whose compressor cannot move: an update of 1e-30 vanishes in any float weight.
    joint = train(load_config("configs/tiny.yaml", inputs + steps + ["--optim.lr_compressor=1e-30",
                                                                      f"--train.output_dir={tmp / 'joint'}"]))
    assert losses(two) == pytest.approx(losses(joint), rel=1e-4)
    assert losses(two)[-1] < losses(two)[0]
    # The embeddings come from the cache (the compressor does not run): zeroed ones give other losses.
    from safetensors.torch import load_file, save_file

    zeroed = tmp / "zeroed"
    shutil.copytree(cache, zeroed)
    for c in range(3):
        tensors = load_file(str(chunk_path(zeroed, c)))
        save_file({**tensors, "memory": torch.zeros_like(tensors["memory"])}, str(chunk_path(zeroed, c)))
    blank = train(load_config("configs/tiny.yaml", inputs + steps + [f"--data.memory_cache={zeroed}",
                                                                      f"--train.output_dir={tmp / 'blank'}"]))
    assert losses(blank)[0] != pytest.approx(losses(two)[0], rel=1e-3)
    # Stopped after step 2 (its checkpoint), then resumed to step 4: the same losses as the run without a stop.
    resumed = tmp / "resumed"
    train(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}", "--train.max_steps=4",
                                                     "--train.save_every=2", f"--train.output_dir={resumed}"]))
    shutil.rmtree(resumed / "checkpoints" / "step-000004")
    again = train(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}", "--train.max_steps=4",
                                                             "--train.save_every=2", f"--train.output_dir={resumed}"]))
    assert [h["step"] for h in again["history"]] == [3, 4]
    assert losses(again) == pytest.approx(losses(two)[2:], rel=1e-5)


def test_a_cache_of_other_inputs_or_an_incomplete_one_is_refused_by_name(setup, tmp_path):
    tmp, inputs, cache = setup
    with pytest.raises(DataError, match="num_documents: 3 in the cache, 2 here"):
        train(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}", "--data.num_documents=2",
                                                         "--train.max_steps=1",
                                                         f"--train.output_dir={tmp_path / 'a'}"]))
    partial = tmp_path / "partial"
    shutil.copytree(cache, partial)
    chunk_path(partial, 2).unlink()
    with pytest.raises(DataError, match="the cache is incomplete .1 chunks missing"):
        train(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={partial}", "--train.max_steps=1",
                                                         f"--train.output_dir={tmp_path / 'b'}"]))
    with pytest.raises(ConfigError, match="data.memory_cache with model.rerank=true"):
        load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={cache}", "--model.rerank=true"])


def test_stage_one_refuses_a_folder_it_cannot_vouch_for(setup, tmp_path):
    """Chunks without cache.json, and records in memory with other content than the cache's (same count)."""
    from dataclasses import replace

    from scaledown.build.memory_cache import write_chunks
    from scaledown.data.schema import load_records

    tmp, inputs, cache = setup
    orphans = tmp_path / "orphans"
    shutil.copytree(cache, orphans)
    (orphans / "cache.json").unlink()
    with pytest.raises(DataError, match="chunk files without cache.json"):
        write_cache(load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={orphans}"]), chunk=16)
    cfg = load_config("configs/tiny.yaml", inputs + [f"--data.memory_cache={tmp_path / 'memory'}"])
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    records = load_records(cfg.data.train_path)[:6]
    write_chunks(model, records, tmp_path / "memory", 3, 4)
    edited = [replace(records[0], query=records[0].query + " again"), *records[1:]]
    with pytest.raises(DataError, match="records: '[0-9a-f]+' in the cache"):
        write_chunks(model, edited, tmp_path / "memory", 3, 4)
