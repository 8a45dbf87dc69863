"""The original ScaleDown code's Python interface, as a thin layer over this project.

Users of the research code this project replaces keep their scripts: the names, constructor arguments and
record format of its README work here, and run on the real engine, data checks and exports underneath.

    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.data import ScaleDownDataset
    from scaledown.training import ScaleDownTrainer

    config = ScaleDownConfig(compressor_type="n_layers", num_compressor_layers=8, device_type="gpu", batch_size=128)
    model = ScaleDownModel(config)
    trainer = ScaleDownTrainer(model, config, ScaleDownDataset(data, config), output_dir="./checkpoints")
    trainer.train()                       # -> ./checkpoints/export (ScaleDownModel.from_pretrained loads it)
    model.generate(["who wrote ...?"], [["doc 1", "doc 2"]])

What differs, on purpose (the README's "Coming from the original ScaleDown code" maps every name):
- `ScaleDownConfig` maps onto `Config` (`to_config()`); `extra={"train.max_steps": 10}` reaches any other field.
- `ScaleDownDataset` validates records (file:line:field errors) and yields them; batching is the collator's.
- `ScaleDownTrainer.train()` runs `scaledown.train.train`: the torch engine in one process, DeepSpeed ZeRO when
  started by a launcher (`deepspeed script.py`, `torchrun script.py`); it exports to `output_dir/export`.
- `model.generate(queries, documents)` takes text, not pre-tokenized tensors, and returns answers.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scaledown.config import Config, ConfigError
from scaledown.build.prepare_dataset import DEFAULT_RERANKER, DEFAULT_SPLADE, DEFAULT_TEACHER
from scaledown.data.schema import Record, load_records, validated
from scaledown.log import get_logger
from scaledown.models import model as _model

log = get_logger(__name__)


@dataclass
class ScaleDownConfig:
    """The original flat config; `to_config()` gives the nested `Config` that runs."""

    compressor_type: str = "n_layers"
    num_compressor_layers: int | None = 8
    modernbert_model_name: str = "answerdotai/ModernBERT-base"
    num_memory_tokens: int = 8
    compression_rate: int = 16
    generator_model_name: str = DEFAULT_TEACHER
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | str = "all-linear"
    enable_reranking: bool = False
    reranking_loss_weight: float = 0.05
    max_seq_length: int | None = None
    """Document tokens; None: num_memory_tokens x compression_rate."""
    num_documents_train: int = 5
    num_documents_eval: int = 10
    max_answer_length: int = 128
    batch_size: int = 128
    micro_batch_size: int = 4
    """Per forward pass and rank (not in the original, which had no accumulation); lowered to divide batch_size."""
    learning_rate_generator: float = 1e-4
    learning_rate_compressor_nlayers: float = 5e-5
    learning_rate_compressor_modernbert: float = 1e-4
    learning_rate_compressor_llama: float = 1e-4
    num_epochs: float = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    optimizer: str = "adamw"
    lr_scheduler: str = "linear"
    device_type: str = "gpu"
    use_bf16: bool = True
    use_fp16: bool = False
    gradient_checkpointing: bool = True
    compressor_hidden_size: int | None = None
    generator_hidden_size: int | None = None
    projection_hidden_size: int = 4096
    seed: int = 42
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other field of `Config` as {"section.field": value}, e.g. {"train.max_steps": 100}."""

    def __post_init__(self):
        self.to_config()  # every check of the real config, now

    @property
    def learning_rate_compressor(self) -> float:
        return (self.learning_rate_compressor_nlayers if self.compressor_type == "n_layers"
                else self.learning_rate_compressor_modernbert)

    def to_config(self, output_dir: str | None = None) -> Config:
        """The equivalent run config; refuses what this project does not do, naming the field."""
        if self.compressor_type not in ("n_layers", "modernbert"):
            raise ConfigError(f"compressor_type={self.compressor_type!r}: expected 'n_layers' or 'modernbert'")
        if self.compression_rate not in (8, 16, 32, 64, 128):
            raise ConfigError(f"compression_rate={self.compression_rate}: expected one of 8, 16, 32, 64, 128")
        doc_tokens = self.max_seq_length or self.num_memory_tokens * self.compression_rate
        if doc_tokens != self.num_memory_tokens * self.compression_rate:
            raise ConfigError(
                f"compression_rate={self.compression_rate} with num_memory_tokens={self.num_memory_tokens} means "
                f"{self.num_memory_tokens * self.compression_rate}-token documents, but max_seq_length={doc_tokens}: "
                f"set max_seq_length={self.num_memory_tokens * self.compression_rate} (or leave it None)")
        if not self.use_lora:
            raise ConfigError("use_lora=False: the generator trains through LoRA only (full fine-tuning of the "
                              "generator is not supported)")
        if (self.optimizer, self.lr_scheduler) != ("adamw", "linear"):
            raise ConfigError(f"optimizer={self.optimizer!r}, lr_scheduler={self.lr_scheduler!r}: only AdamW with "
                              "linear warmup and decay is implemented")
        if self.device_type not in ("gpu", "trainium", "cpu"):
            raise ConfigError(f"device_type={self.device_type!r}: expected gpu, trainium or cpu")
        if self.device_type == "gpu":
            if not torch.cuda.is_available():
                log.warning("device_type='gpu' but this machine has no CUDA GPU: training runs on the CPU")
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        backend = "neuron" if self.device_type == "trainium" else "deepspeed" if launched else "torch"
        targets = self.lora_target_modules
        micro = math.gcd(self.batch_size, self.micro_batch_size) if self.batch_size > 0 else self.micro_batch_size
        modernbert = self.compressor_type == "modernbert"
        data = {
            "model": {"generator": self.generator_model_name, "compressor": "encoder" if modernbert else "n_layers",
                      "compressor_layers": self.num_compressor_layers or 1,
                      "encoder": self.modernbert_model_name if modernbert else "",
                      "projection_hidden": self.projection_hidden_size, "num_memory_tokens": self.num_memory_tokens,
                      "max_doc_tokens": doc_tokens, "max_answer_tokens": self.max_answer_length,
                      "lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                      "lora_target_modules": targets if isinstance(targets, str) else ",".join(targets),
                      "rerank": self.enable_reranking, "rerank_weight": self.reranking_loss_weight,
                      "dtype": "bfloat16" if self.use_bf16 else "float16" if self.use_fp16 else "float32"},
            "data": {"num_documents": self.num_documents_train, "eval_num_documents": self.num_documents_eval},
            "optim": {"lr_generator": self.learning_rate_generator, "lr_compressor": self.learning_rate_compressor,
                      "weight_decay": self.weight_decay, "warmup_ratio": self.warmup_ratio,
                      "max_grad_norm": self.max_grad_norm},
            "train": {"global_batch_size": self.batch_size, "micro_batch_size": micro, "epochs": self.num_epochs,
                      "gradient_checkpointing": self.gradient_checkpointing, "seed": self.seed},
            "engine": {"backend": backend},
        }
        if output_dir:
            data["train"]["output_dir"] = str(output_dir)
        for key, value in self.extra.items():
            section, _, name = key.partition(".")
            if not name:
                raise ConfigError(f"extra[{key!r}]: expected 'section.field'")
            data.setdefault(section, {})[name] = value
        return Config.from_dict(data, "ScaleDownConfig")


class ScaleDownModel(_model.ScaleDownModel):
    """`ScaleDownModel(config)` builds a fresh model from a ScaleDownConfig (or a ModelConfig); everything else
    (`generate`, `answer`, `save_pretrained`, `from_pretrained`) is the project's model."""

    def __init__(self, config, *parts):
        if not parts:  # ScaleDownModel(config): build the generator, LoRA and compressor from their sources
            model_config = config.to_config().model if isinstance(config, ScaleDownConfig) else config
            built = _model.ScaleDownModel.build(model_config)
            config, parts = built.config, (built.tokenizer, built.compressor_tokenizer, built.compressor,
                                           built.generator, built.base_vocab_size)
        super().__init__(config, *parts)


class ScaleDownDataset(torch.utils.data.Dataset):
    """Training records from a list of dicts or a file (JSON list, JSONL, `datasets` folder), validated once.
    `tokenizer` arguments are accepted for compatibility; tokenization happens in the model's collator."""

    def __init__(self, data: list[dict] | str | Path, config: ScaleDownConfig | None = None, tokenizer=None,
                 compressor_tokenizer=None, require_answer: bool = True):
        if isinstance(data, (str, Path)):
            self.records = load_records(data, require_answer)
        else:
            rows = ((f"records[{i}]", i, row) for i, row in enumerate(data))
            self.records = list(validated(rows, "ScaleDownDataset", require_answer))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]


class ScaleDownTrainer:
    """`ScaleDownTrainer(model, config, train_dataset, eval_dataset=None, output_dir="./checkpoints").train()`."""

    def __init__(self, model: ScaleDownModel, config: ScaleDownConfig, train_dataset: ScaleDownDataset,
                 eval_dataset: ScaleDownDataset | None = None, output_dir: str | Path = "./checkpoints"):
        self.model, self.config = model, config
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.output_dir = Path(output_dir)

    def train(self) -> dict:
        """The project's training loop (checkpoints, TensorBoard, export to output_dir/export); returns its result."""
        from scaledown.distributed import discover
        from scaledown.train import train

        discover(mpi=False)  # under srun: WORLD_SIZE before to_config picks the engine
        cfg = self.config.to_config(str(self.output_dir))
        cfg.model = self.model.config  # the model as built decides (its generator, memory tokens, rerank head)
        evaluation = self.eval_dataset.records if self.eval_dataset is not None else []
        return train(cfg, model=self.model, records=self.train_dataset.records, eval_records=evaluation)


COMPRESSOR_TYPES = {"n_layers": "n_layers", "modernbert": "encoder"}  # compressor_type -> model.compressor


class _TwoStageTrainer(ScaleDownTrainer):
    """The original code's two-stage trainers: `.train()` runs stage 1 (the compressor, frozen, writes every
    training record's memory embeddings to `cache_dir`: scaledown/build/memory_cache.py) and stage 2 (the
    generator's LoRA trains on them, data.memory_cache). The compressor does not train, as in the original."""

    kind = ""

    def __init__(self, model: ScaleDownModel, config: ScaleDownConfig, train_dataset: ScaleDownDataset,
                 eval_dataset: ScaleDownDataset | None = None, output_dir: str | Path = "./checkpoints",
                 cache_dir: str | Path = "./cache"):
        super().__init__(model, config, train_dataset, eval_dataset, output_dir)
        self.cache_dir = Path(cache_dir)
        if model.config.compressor != COMPRESSOR_TYPES[self.kind]:
            raise ConfigError(f"{type(self).__name__}: the model's compressor is {model.config.compressor!r}; this "
                              f"trainer is for compressor_type={self.kind!r}")
        if model.config.rerank:
            raise ConfigError(f"{type(self).__name__}: two-stage training has no rerank head (the compressor's "
                              "<RR> state is not cached): build the model with enable_reranking=False")

    def train(self) -> dict:
        from scaledown.build.memory_cache import write_chunks
        from scaledown.train import train

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise NotImplementedError(f"{type(self).__name__} runs stage 1 in one process; on several ranks run "
                                      "torchrun ... -m scaledown.cli cache --config my.yaml --data.memory_cache=DIR, "
                                      "then the training with --data.memory_cache=DIR")
        cfg = self.config.to_config(str(self.output_dir))
        cfg.model, cfg.data.memory_cache = self.model.config, str(self.cache_dir)
        write_chunks(self.model, self.train_dataset.records, self.cache_dir, cfg.data.num_documents,
                     cfg.train.micro_batch_size)
        evaluation = self.eval_dataset.records if self.eval_dataset is not None else []
        return train(cfg, model=self.model, records=self.train_dataset.records, eval_records=evaluation)


class TwoStageNLayersTrainer(_TwoStageTrainer):
    kind = "n_layers"


class TwoStageModernBERTTrainer(_TwoStageTrainer):
    kind = "modernbert"


# ---- the data helpers ---------------------------------------------------------------------------------------
def _as_document(doc: dict | str) -> dict:
    return {"title": "", "text": doc} if isinstance(doc, str) else doc


class SPLADERetriever:
    """SPLADE (a sentence-transformers SparseEncoder) over an in-memory corpus, through a temporary index of the
    dataset build's format; exact search."""

    def __init__(self, model_name: str = DEFAULT_SPLADE, device: str | None = None, trust_remote_code: bool = False):
        from scaledown.build.retrieval import load_sparse_encoder

        self.encoder = load_sparse_encoder(model_name, device, trust_remote_code)

    def encode_queries(self, queries: list[str], batch_size: int = 32):
        from scaledown.build.retrieval import to_csr

        return to_csr(self.encoder.encode_query(queries, batch_size=batch_size)).toarray()

    def encode_documents(self, documents: list[str], batch_size: int = 32):
        from scaledown.build.retrieval import to_csr

        return to_csr(self.encoder.encode_document(documents, batch_size=batch_size)).toarray()

    def retrieve(self, queries: list[str], document_corpus: list[dict], top_k: int = 20,
                 batch_size: int = 32) -> list[list[dict]]:
        """Per query, copies of its top_k corpus dicts (`title`, `text`, any other keys) with `retrieval_score`."""
        from scaledown.build.corpus import Passage
        from scaledown.build.retrieval import SparseIndex, build_index, to_csr

        passages = [Passage(str(d.get("id", i)), d.get("title") or "", d["text"]) for i, d in
                    enumerate(document_corpus)]
        with tempfile.TemporaryDirectory(prefix="scaledown-index-") as folder:
            build_index([(0, passages)], self.encoder, folder, batch_size=batch_size)  # one block
            index = SparseIndex(folder)
            hits = index.search(to_csr(self.encoder.encode_query(queries, batch_size=batch_size),
                                       index.vocab_size), top_k)
        return [[{**copy.deepcopy(document_corpus[row]), "retrieval_score": score} for row, score in found]
                for found in hits]


def add_reranking_scores(queries_with_docs: list[dict], reranker_model_name: str = DEFAULT_RERANKER,
                         batch_size: int = 16) -> list[dict]:
    """Copies of the items with `reranking_scores` (the cross-encoder's raw logits, in document order)."""
    from scaledown.build.rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(reranker_model_name, batch_size=batch_size)
    docs = [[_as_document(d) for d in item["documents"]] for item in queries_with_docs]
    scored = reranker.rerank([item["query"] for item in queries_with_docs], docs, top_n=10 ** 9)
    out = []
    for item, documents, (ranked, scores) in zip(queries_with_docs, docs, scored):
        by_position = {id(d): s for d, s in zip(ranked, scores)}
        out.append({**item, "reranking_scores": [by_position[id(d)] for d in documents]})
    return out


def generate_teacher_answers(queries_with_docs: list[dict], teacher_model_name: str = DEFAULT_TEACHER,
                             max_new_tokens: int = 128, load_in_8bit: bool = False) -> list[dict]:
    """Copies of the items with the teacher's greedy `answer`, from the paper's prompt (scaledown/data/prompts.py);
    the result is a valid training file once written (documents may stay {title, text} dicts)."""
    from scaledown.build.corpus import Query
    from scaledown.build.teacher import HFTeacher

    teacher = HFTeacher(teacher_model_name, max_new_tokens=max_new_tokens, load_in_8bit=load_in_8bit)
    items = [(Query(str(i), item["query"]), [_as_document(d) for d in item["documents"]])
             for i, item in enumerate(queries_with_docs)]
    return [{**item, "answer": answer} for item, answer in zip(queries_with_docs, teacher.answer(items))]


__all__ = ["ScaleDownConfig", "ScaleDownModel", "ScaleDownDataset", "ScaleDownTrainer", "SPLADERetriever",
           "add_reranking_scores", "generate_teacher_answers"]
