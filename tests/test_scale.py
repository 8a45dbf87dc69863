"""Paper scale on CPU: the memory-mapped training set (same batches as JSONL, validated once, cached), and launches
under real `mpirun` (OpenMPI from Debian's packages; skipped with the reason where it cannot be installed)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from launch import ROOT, cpu_env, make_run_inputs
from scaledown.data.mapped import MappedRecords, cache_path, open_records, text_lengths
from scaledown.data.schema import DataError, load_records, write_jsonl
from scaledown.build.synthetic import make_records


def test_arrow_training_set_gives_the_same_batches_as_jsonl(tmp_path):
    from scaledown.data.sampler import ShardedSampler
    from scaledown.models.model import ScaleDownModel
    from scaledown.config import ModelConfig
    from scaledown.models.tiny import make_tiny_generator

    rows = make_records(24, seed=4, num_documents=3)
    rows[3]["gold_answers"] = ["a", "b"]
    rows[5]["note"] = {"kept": True}
    del rows[7]["reranking_scores"]
    write_jsonl(rows, tmp_path / "train.jsonl")
    listed = load_records(tmp_path / "train.jsonl")
    mapped = open_records(tmp_path / "train.jsonl")
    assert len(mapped) == 24 and [mapped[i] for i in range(24)] == listed
    assert text_lengths(mapped) == text_lengths(listed) == [len(r.query) + len(r.answer) for r in listed]
    gen = make_tiny_generator(tmp_path / "gen", hidden_size=32, num_layers=2, intermediate_size=64)
    model = ScaleDownModel.build(ModelConfig(generator=str(gen), compressor_layers=1, dtype="float32",
                                             rerank=True, max_doc_tokens=24))
    collate = model.collator(3)
    for rank in (0, 1):
        sampler = ShardedSampler(24, 8, rank, 2, seed=3)
        for a, b in zip(torch.utils.data.DataLoader(listed, 4, sampler=sampler, collate_fn=collate),
                        torch.utils.data.DataLoader(mapped, 4, sampler=sampler, collate_fn=collate)):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert mapped.missing_scores() == (1, listed[7].id)


def test_conversion_is_cached_by_content_and_keeps_the_errors(tmp_path):
    source = tmp_path / "train.jsonl"
    write_jsonl(make_records(6, seed=5), source)
    first = cache_path(source)
    open_records(source)
    stamp = first.stat().st_mtime_ns
    open_records(source)
    assert first.stat().st_mtime_ns == stamp, "a second open must reuse the cache"
    rows = make_records(6, seed=5)
    rows[4]["answer"] = ["not", "a", "string"]
    write_jsonl(rows, source)
    assert cache_path(source) != first
    with pytest.raises(DataError, match=r"train.jsonl:5: field 'answer'"):
        open_records(source)
    with pytest.raises(DataError, match=r"train.jsonl:5: field 'answer'"):  # every rank: the recorded error
        open_records(source, rank=1, local_rank=1)
    assert not list(tmp_path.glob("*.tmp-*")), "a failed conversion leaves no partial file"
    as_list = tmp_path / "train_data.json"
    as_list.write_text(json.dumps(make_records(3, seed=6), indent=2))
    assert len(open_records(as_list)) == 3
    assert isinstance(MappedRecords(cache_path(as_list))[0].documents, list)


def test_training_converts_once_then_reads_the_arrow_file(tmp_path, monkeypatch):
    import scaledown.train
    from scaledown.config import load_config

    inputs = make_run_inputs(tmp_path, n_train=16)
    opened = []
    monkeypatch.setattr(scaledown.train, "open_records",
                        lambda *a, **k: opened.append(open_records(*a, **k)) or opened[-1])
    args = inputs + ["--engine.backend=torch", "--model.compressor_layers=1", "--model.dtype=float32",
                     "--train.global_batch_size=4", "--train.micro_batch_size=2", "--train.max_steps=2",
                     "--data.eval_path=", "--train.resume=none"]
    assert scaledown.train.train(load_config(None, args + [f"--train.output_dir={tmp_path / 'a'}"]))["steps"] == 2
    cache = cache_path(tmp_path / "train.jsonl")
    stamp = cache.stat().st_mtime_ns
    assert scaledown.train.train(load_config(None, args + [f"--train.output_dir={tmp_path / 'b'}"]))["steps"] == 2
    assert cache.stat().st_mtime_ns == stamp, "the second run must not convert again"
    assert len(opened) == 2 and all(isinstance(r, MappedRecords) for r in opened)


def mpirun_available() -> str | None:
    """Install OpenMPI and mpi4py when possible; the reason they are missing otherwise."""
    if shutil.which("mpirun") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            install = ["apt-get", "install", "-y", "-q", "openmpi-bin", "libopenmpi-dev"]
            if subprocess.run(install, capture_output=True, timeout=900).returncode:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900)
                subprocess.run(install, capture_output=True, timeout=900)
        if shutil.which("mpirun") is None:
            return "OpenMPI (mpirun) is not installed and apt-get could not install it"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mpi4py"], capture_output=True, timeout=900)
        try:
            import mpi4py  # noqa: F401,F811
        except ImportError:
            return "mpi4py could not be installed"
    return None


def mpirun(nproc, args, timeout=900):
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(nproc), "-x", "PYTHONPATH",
           "-x", "DS_ACCELERATOR", "-x", "OMP_NUM_THREADS", "-x", "TORCH_EXTENSIONS_DIR", "-x",
           "TOKENIZERS_PARALLELISM", sys.executable, *args]
    env = cpu_env()
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run


@pytest.mark.slow
def test_build_and_deepspeed_training_under_mpirun(tmp_path):
    reason = mpirun_available()
    if reason:
        pytest.skip(reason)
    from scaledown.models.tiny import make_tiny_cross_encoder, make_tiny_generator, make_tiny_splade

    records = make_records(12, seed=7, num_documents=2)
    docs = [{"id": f"d{i}-{j}", **d} for i, r in enumerate(records) for j, d in enumerate(r["documents"])]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "q.tsv").write_text("".join(f"q{i}\t{r['query']}\n" for i, r in enumerate(records)))
    gen = make_tiny_generator(tmp_path / "gen", hidden_size=32, num_layers=3, intermediate_size=64)
    build = ["--corpus", str(tmp_path / "corpus.jsonl"), "--queries", str(tmp_path / "q.tsv"),
             "--splade", str(make_tiny_splade(tmp_path / "splade")), "--cross-encoder",
             str(make_tiny_cross_encoder(tmp_path / "ce")), "--teacher", str(gen), "--max-new-tokens", "4",
             "--chunk-size", "3", "--retrieve-k", "6", "--k", "3", "--quiet"]
    mpi = mpirun(2, [str(ROOT / "launchers" / "build_dataset.py"), *build, "--out", str(tmp_path / "mpi")])
    assert "rank 1:" in mpi.stderr, mpi.stderr[-2000:]
    subprocess.run([sys.executable, str(ROOT / "launchers" / "build_dataset.py"), *build, "--out",
                    str(tmp_path / "one")], env=cpu_env(), cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "mpi" / "dataset.jsonl").read_text() == (tmp_path / "one" / "dataset.jsonl").read_text()
    run = tmp_path / "train"
    trained = mpirun(2, [str(ROOT / "launchers" / "train_gpu.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
                         f"--model.generator={gen}", f"--data.train_path={tmp_path / 'mpi' / 'dataset.jsonl'}",
                         "--data.eval_path=", "--model.max_doc_tokens=24", "--data.num_documents=3",
                         "--train.global_batch_size=4", "--train.micro_batch_size=1", "--train.max_steps=3",
                         "--train.log_every=1", f"--train.output_dir={run}"])
    result = json.loads((run / "train_result.json").read_text())
    assert result["steps"] == 3 and (run / "export" / "compressor.safetensors").exists()
    assert "rank 1/2" in trained.stderr and "engine deepspeed" in trained.stderr


def test_splade_like_passages_keep_the_profiles_frequencies_lengths_and_weights():
    """benchmarks/splade_like.py: synthetic passages drawn from a profile hold each term with its document
    frequency (frequent terms saturate near theirs, not in every passage), the profile's lengths and each term's
    log-normal weights."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from splade_like import passage_rows

    vocab = 2000
    df = np.full(vocab, 0.01)
    df[:3] = [0.9, 0.5, 0.2]
    df[-500:] = 0.0  # never seen in the fit: a rare tail
    log_mean = np.full(vocab, -1.0)
    log_mean[0] = -3.0  # the most frequent term weighs little, as SPLADE's do
    profile = {"df": df, "log_mean": log_mean, "log_std": np.full(vocab, 0.1), "nnz": np.array([16, 20, 24]),
               "passages": np.array(1000)}
    rows = passage_rows(20_000, profile, np.random.default_rng(0))
    seen = np.bincount(rows.indices, minlength=vocab) / rows.shape[0]
    np.testing.assert_allclose(seen[:3], [0.9, 0.5, 0.2], atol=0.04)
    assert abs(np.diff(rows.indptr).mean() - df.sum()) / df.sum() < 0.1
    assert 0 < seen[-500:].mean() < 0.002
    weights = np.log(rows[:, 0].data)
    assert abs(weights.mean() + 3.0) < 0.01 and abs(weights.std() - 0.1) < 0.01
