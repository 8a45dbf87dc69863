"""Run configuration: nested dataclasses with the OSCAR paper's defaults (arXiv 2504.07109, Table 7).

Load with `load_config(path, overrides)`; overrides look like `--train.micro_batch_size=4`. Every section
validates itself in `__post_init__`, and the resolved config is saved next to every run and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaledown.data import prompts
from scaledown.engine import BACKENDS


# model.compressor -> (the paper's compressor LR, whether `model.encoder` names its weights). The modules and
# everything else about each kind: scaledown/models/compressor.py (COMPRESSORS); this table keeps --help torch-free.
COMPRESSOR_KINDS = {"n_layers": (5e-5, False), "encoder": (1e-4, True)}


TRACKERS = ("tensorboard", "wandb", "mlflow")  # train.report_to (scaledown/metrics.py: Trackers)


class ConfigError(ValueError):
    """A configuration value is missing, malformed or inconsistent with another one."""


def _at_least(section: str, obj, minimum: float, *names: str) -> None:
    """Every named field of `obj` must be a number >= minimum; the error names the field and its value."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
            raise ConfigError(f"{section}.{name}={value!r}: must be a number >= {minimum}")


QUANTIZATIONS = ("none", "nf4", "int8")  # model.quantization


@dataclass
class ModelConfig:
    """The model: generator, compressor, LoRA, reranking, prompts."""

    generator: str = "mistralai/Mistral-7B-Instruct-v0.2"
    """Path or hub id of the generator (any Hugging Face causal LM with a chat template)."""
    compressor: str = "n_layers"
    """`n_layers`: a trainable copy of the generator's first `compressor_layers` decoder layers.
    `encoder`: the model at `encoder` (an encoder or a small LM) plus an MLP projection."""
    compressor_layers: int = 8
    """N for the `n_layers` compressor (the paper uses 5, 8 or 10)."""
    encoder: str = ""
    """Path or hub id of the `encoder` compressor's backbone (e.g. ModernBERT, Llama-3.2-1B)."""
    input_format: str = "scaledown"
    """How token rows are built. `scaledown`: the paper's layout (query and document cut apart, memory tokens
    right after the text, positions from the first real token, l `<MEM>` placeholders per document in the
    prompt). `reference`: the rows of NAVER's OSCAR code, token for token (scaledown/data/reference.py says what
    differs); models imported from NAVER's releases (`scaledown import-oscar`) use it."""
    compressor_embeddings: str = "all"
    """Which rows of the compressor's token-embedding table train. `all` (the paper: the compressor is a full
    copy); `added`: only the rows of the added tokens (memory tokens, `<RR>`), the rest frozen as in the source
    model (NAVER's code does this for its LoRA compressor). For SmolLM2 with 8 layers the table is about half of
    the compressor's weights: `added` halves its gradients and optimizer state."""
    projection_hidden: int = 8096
    """Hidden width of the encoder compressor's Linear -> ReLU -> Linear projection."""
    num_memory_tokens: int = 8
    """l: embeddings per document (128-token documents with l = 8 give 16x compression)."""
    max_doc_tokens: int = 128
    """Document budget in compressor tokens; longer documents are truncated."""
    max_query_tokens: int = 64
    """Query budget in tokens, both in the compressor input and the generator prompt."""
    max_answer_tokens: int = 128
    """Training answers are truncated to this many tokens; also the default for `generate`."""
    lora_r: int = 16
    """LoRA rank of the generator's adapters."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA input."""
    lora_target_modules: str = "all-linear"
    """peft `target_modules`: `all-linear` puts LoRA on every linear layer but the LM head."""
    rerank: bool = False
    """Add a `<RR>` token to the compressor input and train a score head on it."""
    rerank_weight: float = 0.05
    """Weight of the MSE between the `<RR>` score and the cross-encoder score."""
    rerank_missing: str = "error"
    """With `rerank`, training records without `reranking_scores`: `error` (before any compute), or `ignore`
    (the rerank loss counts only the records that have scores)."""
    dtype: str = "bfloat16"
    """Weights and compute dtype: bfloat16, float16 or float32."""
    trainable_dtype: str = ""
    """Dtype of the trained weights (compressor, LoRA, rerank head); empty: `dtype`. With the torch engine,
    `dtype: bfloat16`, `trainable_dtype: float32` and `engine.autocast: bfloat16` is mixed precision: the frozen
    generator stored in bf16 (no cast per step), trained weights and their AdamW state in fp32, matrix products
    in bf16. DeepSpeed keeps its own fp32 master copy (its JSON's bf16 block): leave it empty there."""
    quantization: str = "none"
    """How the frozen generator is stored (QLoRA, through bitsandbytes, as axolotl and LLaMA-Factory do): `none`
    (in `dtype`), `nf4` (4-bit NormalFloat with double quantization, computing in `dtype`: about 0.52 bytes per
    weight, a 7B generator's 13.5 GiB become about 4) or `int8` (LLM.int8(), 1 byte per weight). Only the
    generator's linear layers are quantized; LoRA, the embeddings with their added rows, the LM head and the
    compressor stay in `dtype`. Needs a compressor that is not a copy of the generator's layers (`encoder`) and
    the torch engine or DeepSpeed ZeRO 0-2 (ZeRO-3 cannot partition quantized weights)."""
    attn_implementation: str = "sdpa"
    """Hugging Face attention kernel: sdpa, eager, flash_attention_2, or sdpa_fp32 (SDPA computed in fp32 in a bf16
    model: faster on CPUs, whose bf16 attention backward is slow)."""
    trust_remote_code: bool = False
    """Off by default: loading a model must not run code from its folder unless asked."""
    system_prompt: str = prompts.SYSTEM_PROMPT
    """System turn of the generator's (and the teacher's) chat prompt; the paper's by default. Merged into the
    user turn for chat templates without a system role."""
    user_template: str = prompts.USER_TEMPLATE
    """User turn; `{docs}` becomes the k memory slots (or the teacher's `Document i:` lines), `{question}` the
    query."""
    doc_separator: str = ""
    """Text after each document's memory slot in the generator prompt (the reference: none)."""
    compressor_template: str = prompts.COMPRESSOR_TEMPLATE
    """Text of a decoder compressor's input before the memory tokens (`{query}`, `{document}`); encoder
    compressors read `[CLS] query [SEP] document [SEP]`."""
    memory_norm: float | str = 0.0
    """0: the memory embeddings are the compressor's hidden states as they come (the paper, NAVER's code). A
    number: each memory embedding is rescaled to this L2 norm before it takes a token's place in the generator.
    `auto`: the generator's mean input-embedding norm, measured when the model is built and saved in the
    export. Hidden states N layers deep can dwarf token embeddings (SmolLM2-135M at layer 8: norm ~135 against
    3.2, carried by 3 massive-activation dimensions), so the generator's layers barely move them."""

    def __post_init__(self):
        if self.compressor not in COMPRESSOR_KINDS:
            raise ConfigError(f"model.compressor={self.compressor!r}: expected one of {', '.join(COMPRESSOR_KINDS)}")
        if self.memory_norm != "auto":
            try:
                self.memory_norm = float(self.memory_norm)
            except (TypeError, ValueError):
                raise ConfigError(f"model.memory_norm={self.memory_norm!r}: expected a number >= 0 or 'auto'") from None
            if not self.memory_norm >= 0:
                raise ConfigError(f"model.memory_norm={self.memory_norm}: must be >= 0 (0: off)")
        if self.input_format not in ("scaledown", "reference"):
            raise ConfigError(f"model.input_format={self.input_format!r}: expected scaledown or reference")
        if self.input_format == "reference" and self.rerank:
            raise ConfigError("model.input_format=reference: a rerank head has no reference format here")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"model.quantization={self.quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
        if self.compressor_embeddings not in ("all", "added"):
            raise ConfigError(f"model.compressor_embeddings={self.compressor_embeddings!r}: expected all or added")
        if self.reads_encoder and not self.encoder:
            raise ConfigError(f"model.compressor={self.compressor!r} needs model.encoder (a path or hub id)")
        _at_least("model", self, 1, "compressor_layers", "num_memory_tokens", "max_doc_tokens", "max_query_tokens",
                  "max_answer_tokens", "lora_r", "projection_hidden")
        _at_least("model", self, 0, "rerank_weight")
        if not self.lora_alpha > 0:
            raise ConfigError(f"model.lora_alpha={self.lora_alpha}: must be > 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"model.lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if self.rerank_missing not in ("error", "ignore"):
            raise ConfigError(f"model.rerank_missing={self.rerank_missing!r}: expected error or ignore")
        for name in ("dtype", "trainable_dtype"):
            value = getattr(self, name)
            if value not in ("bfloat16", "float16", "float32") and (name == "dtype" or value):
                raise ConfigError(f"model.{name}={value!r}: expected bfloat16, float16 or float32")
        for name, fields in (("user_template", ("docs", "question")), ("compressor_template", ("query", "document"))):
            try:
                prompts.split_template(getattr(self, name), *fields)
            except ValueError as err:
                raise ConfigError(f"model.{name}: {err}") from None

    @property
    def reads_encoder(self) -> bool:
        """Whether the compressor's weights come from `model.encoder` (else from the generator)."""
        return COMPRESSOR_KINDS[self.compressor][1]

    @property
    def compression_rate(self) -> float:
        return self.max_doc_tokens / self.num_memory_tokens


@dataclass
class DataConfig:
    """Training and evaluation records (built by `scaledown build`)."""

    train_path: str = ""
    """Training records: a JSONL file or a Hugging Face `datasets` folder (see scaledown/data/schema.py)."""
    eval_path: str = ""
    """Held-out records for evaluation during and after training; empty disables it."""
    num_documents: int = 5
    """k: documents per query in training; records with fewer are padded with masked empty slots."""
    max_eval_examples: int = 256
    """Held-out records evaluated during and after training (0: all of them)."""
    eval_num_documents: int = 10
    """Documents read per query in evaluation (the paper evaluates with 10)."""
    num_workers: int = 0
    """DataLoader worker processes per rank."""
    group_by_length: bool = False
    """Batch records of similar length together (as transformers' `group_by_length`): runs of global batches are
    sorted by query + answer length and their batches shuffled, so micro-batches pad less. Off: the paper's
    uniformly random batches (scaledown/data/sampler.py)."""
    memory_cache: str = ""
    """Two-stage training (small GPUs): a folder of memory embeddings that `scaledown cache` (stage 1) wrote with
    the frozen compressor; training then reads them and never runs the compressor, which does not train
    (scaledown/data/memory_cache.py). Empty: the compressor runs and trains with the generator (the paper)."""
    continuation_share: float = 0.5
    """train.objective=pretrain: share of passages trained as text continuation (the rest auto-encoded)."""

    def __post_init__(self):
        _at_least("data", self, 1, "num_documents", "eval_num_documents")
        _at_least("data", self, 0, "max_eval_examples", "num_workers")
        if not 0.0 <= self.continuation_share <= 1.0:
            raise ConfigError(f"data.continuation_share={self.continuation_share}: must be in [0, 1]")


@dataclass
class OptimConfig:
    """AdamW with one group per part of the model, warmup then linear decay."""

    lr_generator: float = 1e-4
    """LR of the generator's LoRA matrices."""
    lr_compressor: float | None = None
    """LR of the compressor; None picks the paper's value: 5e-5 for n_layers, 1e-4 for encoder."""
    weight_decay: float = 0.1
    """AdamW weight decay, both groups."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas; on the command line `--optim.betas=0.9,0.95`."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.05
    """Linear warmup over this share of the steps, then linear decay to 0."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    generator_frozen_steps: int = 0
    """The generator's LoRA waits this many steps (LR 0) while the compressor learns alone to write for the
    generator as it is (the frozen-decoder alignment of ICAE and xRAG), then warms up over `warmup_ratio` of the
    remaining steps and decays with the rest. 0: both from the first step (the paper). A small model trained
    jointly from the start learns each question's answer prior through LoRA and stops reading its memory
    (benchmarks/RESULTS.md, the learning probe)."""

    def __post_init__(self):
        self.betas = tuple(self.betas)
        _at_least("optim", self, 0, "generator_frozen_steps")
        if self.lr_generator <= 0 or (self.lr_compressor is not None and self.lr_compressor <= 0):
            raise ConfigError(f"optim: learning rates must be > 0 (lr_generator={self.lr_generator}, "
                              f"lr_compressor={self.lr_compressor})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        _at_least("optim", self, 0, "weight_decay", "max_grad_norm")
        if not self.eps > 0:
            raise ConfigError(f"optim.eps={self.eps}: must be > 0")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)}: expected two numbers in [0, 1)")


@dataclass
class TrainConfig:
    """The loop: batch sizes, length, logging, evaluation, checkpoints."""

    output_dir: str = "runs/default"
    """Run folder: config.yaml, checkpoints/step-*/, tensorboard/, export/."""
    global_batch_size: int = 128
    """Queries per optimizer step = micro_batch_size x gradient_accumulation x data-parallel size."""
    micro_batch_size: int = 4
    """Queries per forward pass per data-parallel rank."""
    epochs: float = 1.0
    """Passes over the training records (fractions allowed); the paper: 1."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run `epochs`)."""
    seed: int = 0
    """Seeds the initial weights, the data order and dropout."""
    log_every: int = 10
    """Log losses, LR, grad norm, throughput and MFU every K optimizer steps."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Where the logged scalars go: any of `tensorboard` (output_dir/tensorboard), `wandb` (project
    $WANDB_PROJECT or scaledown; WANDB_MODE=offline writes output_dir/wandb), `mlflow` ($MLFLOW_TRACKING_URI, or a
    file store at output_dir/mlruns); wandb and mlflow are the `trackers` extra. On the command line
    `--train.report_to=tensorboard,wandb`."""
    eval_every: int = 0
    """Held-out answer CE every K optimizer steps, the learning curve (0: none); answer metrics at the end."""
    baseline_eval: bool = True
    """Before the first step, evaluate the untrained model and the uncompressed and no-document baselines
    (baseline_eval.json, and the before/after table of report.md)."""
    save_every: int = 500
    """Checkpoint every K optimizer steps (0: only at the end)."""
    keep_last: int = 3
    """Checkpoints to keep on disk."""
    resume: str = "auto"
    """`auto` (the newest checkpoint in output_dir whose manifest verifies, if any), `none`, or a step-* folder."""
    verify_checksums: bool = True
    """A resume verifies every checkpoint file's xxh3 checksum (0.3 s per GiB here), not only its size; the
    config's is always checked."""
    resume_changes: str = "refuse"
    """A resume whose exactness settings (global batch, seed, data, schedule, LRs) differ from the checkpoint's:
    `refuse` (the differences are listed), or `allow` (they are applied and recorded in resume_changes.jsonl)."""
    gradient_checkpointing: bool = False
    """Recompute the generator's and the compressor's layer activations in backward: less memory, more compute."""
    max_eval_new_tokens: int = 128
    """New tokens per answer in evaluation (the paper: 128)."""
    curve_answers: bool = False
    """The learning curve (every `eval_every` steps) also generates answers: accuracy, EM and F1 besides CE."""
    objective: str = "qa"
    """`qa`: distillation on question records (the paper's fine-tuning). `pretrain`: compressor pretraining,
    auto-encoding and text continuation, on the plain-text corpus at data.train_path (scaledown/data/
    pretraining.py); set model.max_answer_tokens to the passage length to auto-encode whole passages."""
    init_from: str = ""
    """Start from the weights of a ScaleDown export (e.g. a pretraining run's export/): compressor, LoRA, added
    rows, rerank head. Its architecture (compressor, depth, memory tokens, LoRA rank, rerank) must match model.*;
    prompts, lengths and dtypes come from this config."""

    def __post_init__(self):
        if not str(self.output_dir).strip():
            raise ConfigError("train.output_dir is empty: name the run folder (checkpoints, logs and the export "
                              "go there)")
        _at_least("train", self, 1, "global_batch_size", "micro_batch_size", "log_every", "keep_last")
        _at_least("train", self, 0, "epochs", "max_steps", "eval_every", "save_every", "max_eval_new_tokens")
        self.report_to = list(self.report_to)
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"train.report_to={self.report_to}: {unknown} not among {', '.join(TRACKERS)}")
        if self.objective not in ("qa", "pretrain"):
            raise ConfigError(f"train.objective={self.objective!r}: expected qa or pretrain")
        if self.resume_changes not in ("refuse", "allow"):
            raise ConfigError(f"train.resume_changes={self.resume_changes!r}: expected refuse or allow")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError(f"train.epochs={self.epochs} and train.max_steps={self.max_steps}: set one > 0")


@dataclass
class EngineConfig:
    """The distributed backend (see scaledown/engine/__init__.py)."""

    backend: str = "deepspeed"
    """`deepspeed` (GPU clusters, or CPU with DS_ACCELERATOR=cpu), `torch` (one process, debugging),
    `neuron` (neuronx-distributed on Trainium)."""
    deepspeed_config: str = "ds_configs/zero2.json"
    """DeepSpeed JSON; its "auto" fields are filled from this config, explicit values must agree."""
    neuron_config: str = "neuron_configs/tp1_lora.yaml"
    """neuronx-distributed settings, one key per argument of `neuronx_distributed_config`."""
    tensor_parallel_size: int = 1
    """Tensor-parallel degree (neuron backend only)."""
    build_concurrency: int = 8
    """Neuron with tensor parallelism: processes per node that build (and hold) the dense model at a time."""
    autocast: str = ""
    """`bfloat16`: forward passes under `torch.autocast` with fp32 weights (the Trainium recipe: model.dtype
    float32). `auto`: bfloat16 where the device multiplies bf16 fast (a GPU with bf16, Trainium, a CPU with
    AVX512-BF16 or AMX), off elsewhere (an AVX2-only CPU runs bf16 ~20x slower than fp32). Not with deepspeed,
    whose JSON sets the precision."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"engine.backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.tensor_parallel_size < 1 or self.build_concurrency < 1:
            raise ConfigError(f"engine.tensor_parallel_size={self.tensor_parallel_size}, engine.build_concurrency="
                              f"{self.build_concurrency}: both must be >= 1")
        if self.autocast not in ("", "auto", "bfloat16", "float16"):
            raise ConfigError(f"engine.autocast={self.autocast!r}: expected auto, bfloat16, float16 or empty (off)")
        if self.autocast and self.backend == "deepspeed":
            raise ConfigError("engine.autocast is for the torch and neuron engines: DeepSpeed takes its precision "
                              f"from its JSON ({self.deepspeed_config}: bf16.enabled)")
        if self.tensor_parallel_size > 1 and self.backend != "neuron":
            raise ConfigError(f"engine.tensor_parallel_size={self.tensor_parallel_size}: tensor parallelism is "
                              f"implemented by the neuron backend only (engine.backend={self.backend})")


def zero_stage(path: str) -> int | None:
    """The ZeRO stage a DeepSpeed JSON names (None: no such file yet; check_paths reports it)."""
    try:
        return json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", 0)
    except (OSError, ValueError):
        return None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self):
        self.engine.deepspeed_config = packaged(self.engine.deepspeed_config)
        self.engine.neuron_config = packaged(self.engine.neuron_config)
        if self.optim.lr_compressor is None:
            self.optim.lr_compressor = COMPRESSOR_KINDS[self.model.compressor][0]
        if self.train.global_batch_size % self.train.micro_batch_size:
            raise ConfigError(f"train.global_batch_size={self.train.global_batch_size} is not a multiple of "
                              f"train.micro_batch_size={self.train.micro_batch_size}")
        if self.train.objective == "pretrain" and self.model.rerank:
            raise ConfigError("train.objective=pretrain with model.rerank=true: pretraining text has no "
                              "cross-encoder scores; pretrain with --model.rerank=false")
        if self.model.quantization != "none":
            q = f"model.quantization={self.model.quantization}"
            if self.engine.backend == "neuron":
                raise ConfigError(f"{q}: bitsandbytes does not run on Trainium; use engine.backend torch or deepspeed")
            if self.engine.backend == "deepspeed" and zero_stage(self.engine.deepspeed_config) == 3:
                raise ConfigError(f"{q}: ZeRO-3 ({self.engine.deepspeed_config}) cannot partition quantized weights; "
                                  "use ZeRO 0-2 (ds_configs/zero2.json) or engine.backend=torch")
        if self.data.memory_cache and self.model.rerank:
            raise ConfigError("data.memory_cache with model.rerank=true: the rerank head reads the compressor's "
                              "<RR> state, which two-stage training does not compute; set --model.rerank=false")
        if self.data.memory_cache and self.train.objective == "pretrain":
            raise ConfigError("data.memory_cache with train.objective=pretrain: pretraining trains the compressor, "
                              "which two-stage training freezes")
        if self.model.trainable_dtype and self.engine.backend == "deepspeed":
            raise ConfigError(f"model.trainable_dtype={self.model.trainable_dtype}: DeepSpeed keeps its own fp32 "
                              "master weights (bf16.enabled in its JSON); leave it empty with engine.backend="
                              "deepspeed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_paths(self, need_train_path: bool = True) -> None:
        """Before anything loads: every local path the run reads must exist (hub ids are left to the hub)."""
        paths = {"data.train_path": self.data.train_path, "data.eval_path": self.data.eval_path,
                 "model.generator": self.model.generator, "train.init_from": self.train.init_from}
        if self.model.reads_encoder:
            paths["model.encoder"] = self.model.encoder
        if self.engine.backend == "deepspeed":
            paths["engine.deepspeed_config"] = self.engine.deepspeed_config
        if self.engine.backend == "neuron":
            paths["engine.neuron_config"] = self.engine.neuron_config
        if not self.data.train_path and need_train_path:
            raise ConfigError("data.train_path is empty: name the training records (JSONL or a datasets folder)")
        for name, value in paths.items():
            local = name.startswith(("data.", "engine.", "train.")) or looks_local(value)
            if value and not Path(value).exists() and local:
                raise ConfigError(f"{name}={value}: no such file or folder")

    def to_yaml(self) -> str:
        data = self.to_dict()
        data["optim"]["betas"] = list(data["optim"]["betas"])
        return yaml.safe_dump(data, sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Config:
        kwargs = {}
        for name, values in (data or {}).items():
            if name not in _SECTIONS:
                raise ConfigError(f"{source}: unknown section {name!r} (expected one of {sorted(_SECTIONS)})")
            section_cls = _SECTIONS[name]
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = set(values or {}) - known
            if unknown:
                raise ConfigError(f"{source}: unknown field(s) {sorted(unknown)} in section {name!r}")
            types = {f.name: f.type for f in dataclasses.fields(section_cls)}
            values = {k: _coerce(v, types[k], f"{source}: {name}.{k}") for k, v in (values or {}).items()}
            kwargs[name] = section_cls(**values)
        return cls(**kwargs)


PACKAGED = ("configs", "ds_configs", "neuron_configs")


def packaged(path: str) -> str:
    """`path` itself when it exists here; else, for a relative path into one of the default config folders, the
    copy installed with the package (`pip install scaledown` ships them as scaledown/configs, ...) or in the
    checkout this package runs from. `scaledown train --config configs/tiny.yaml` so works from any directory."""
    if not path or Path(path).exists() or Path(path).is_absolute() or Path(path).parts[0] not in PACKAGED:
        return path
    package = Path(__file__).resolve().parent
    for candidate in (package / path, package.parent / path):
        if candidate.exists():
            return str(candidate)
    return path


def looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`): absolute, relative with ./ ~, deeper than one /, or
    `folder/name` where `folder` exists here (`runs/nope`: checked at once instead of 40 s of hub retries)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """YAML reads `2e-4` as a string and `1` where a float is meant: convert to the field's declared type."""
    kinds = [t.strip() for t in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return None
    try:
        if "float" in kinds and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return float(value)
        if "int" in kinds and isinstance(value, str):
            return int(value)
    except ValueError:
        if "str" in kinds:  # a field that takes a number or a word (model.memory_norm: 3.2 or auto)
            return value
        raise ConfigError(f"{where}={value!r}: expected {annotation}") from None
    if "bool" in kinds and not isinstance(value, bool):
        raise ConfigError(f"{where}={value!r}: expected true or false")
    if "int" in kinds and not isinstance(value, int):
        raise ConfigError(f"{where}={value!r}: expected an integer")
    if "str" in kinds and not isinstance(value, str):
        raise ConfigError(f"{where}={value!r}: expected a string")
    return value


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig,
             "engine": EngineConfig}


def config_parser(prog: str | None = None, description: str | None = None):
    """The command-line parser of every entry point that takes a run config: `--config FILE` (YAML or JSON), then
    `--section.field=value` for every field, listed with its docstring, type and default in `--help`;
    `--print_config` prints the resolved config and exits."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the field docstrings become the help
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML or JSON config file (defaults: the paper's)")
    for name, section in _SECTIONS.items():
        parser.add_class_arguments(section, name, instantiate=False)
    return parser


def command_parser(description: str, epilog: str | None = None):
    """The parser of the commands that take flags rather than a run config (build, eval, predict, report,
    import-oscar): jsonargparse like `scaledown train`, so `--config FILE` (YAML or JSON keyed by the flags' names,
    `corpus_format: tsv`) and `--print_config` work the same way; no abbreviations; defaults in `--help`. The
    usage line names the command (`scaledown build`, set by the CLI)."""
    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

    parser = ArgumentParser(description=description, epilog=epilog, allow_abbrev=False,
                            formatter_class=DefaultHelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="these flags from a YAML or JSON file (keys as --print_config writes them)")
    return parser


def _list_fields() -> set[str]:
    return {f"{name}.{f.name}" for name, section in _SECTIONS.items() for f in dataclasses.fields(section)
            if str(f.type).startswith(("tuple", "list"))}


def normalise_args(args: list[str]) -> list[str]:
    """`--optim.betas=0.9,0.95` -> `--optim.betas=[0.9,0.95]`: list fields also take comma-separated values;
    `--config configs/x.yaml` finds the packaged copy from outside the checkout."""
    lists, out = _list_fields(), []
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if key == "--config" and sep:
            arg = f"--config={packaged(value)}"
        elif i and args[i - 1] == "--config":
            arg = packaged(arg)
        if not sep and i and args[i - 1].lstrip("-") in lists:  # `--optim.betas 0.9,0.95`
            key, value = None, arg
        if (key is None or key.lstrip("-") in lists) and value and not value.lstrip().startswith("["):
            arg = f"[{value}]" if key is None else f"{key}=[{value}]"
        out.append(arg)
    return out


def parse_config(args: list[str], parser=None) -> Config:
    """Command-line arguments (`--config FILE`, `--section.field=value`) -> a validated Config."""
    from jsonargparse import ArgumentError

    parser = parser or config_parser()
    if any(a == "--print_config" or a.startswith("--print_config=") for a in args):
        # Printed from the validated Config (jsonargparse's own would print what the checks below refuse).
        cfg = parse_config([a for a in args if not a.startswith("--print_config")], parser)
        print(cfg.to_yaml(), end="")
        raise SystemExit(0)
    try:
        namespace = parser.parse_args(normalise_args(args))
    except ArgumentError as err:
        raise ConfigError(" ".join(line.strip() for line in str(err).splitlines())) from None
    data = namespace.clone(with_meta=False).as_dict()
    data.pop("config", None)
    return Config.from_dict(data, "command line")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A YAML or JSON config file (or the defaults when path is None) with `--section.field=value` overrides."""
    path = packaged(str(path)) if path else path
    if path and not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    return parse_config((["--config", str(path)] if path else []) + list(overrides or []))
