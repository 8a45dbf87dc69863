"""OSCAR: an online, query-dependent compressor feeding a LoRA generator, with an optional reranking head.

`ScaleDownModel.build(model_config)` loads the generator, extends the tokenizers with the memory tokens,
resizes the embeddings and builds the compressor. `forward(**batch)` returns the distillation loss;
`generate(queries, documents)` answers from compressed documents. `save_pretrained` writes only what training
changes (compressor, LoRA adapter, added embedding rows, rerank head) plus the config; `from_pretrained` loads
that on top of the base generator named in the config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from scaledown.config import ConfigError, ModelConfig, looks_local
from scaledown.data.collate import (IGNORE_INDEX, PLACEHOLDER_TOKEN, RERANK_TOKEN, Collator, label_window,
                                   memory_tokens)
from scaledown.data.reference import REFERENCE_TOKENS, ReferenceCollator
from scaledown.data.schema import Record, umask_modes
from scaledown.models.compressor import COMPRESSORS, grow, position_ids_from_mask, train_added_rows_only
from scaledown.models.generator import (DTYPES, add_lora, load_causal_lm, load_tokenizer, splice)


def model_card(config: ModelConfig, generator: str) -> str:
    """The export's README.md: what it is, how to load it, its settings (the training loop appends results)."""
    c = config
    compressor = (f"{c.encoder} + an MLP projection ({c.projection_hidden} wide)" if c.reads_encoder else
                  f"the generator's first {c.compressor_layers} layers, trained")
    return f"""---
library_name: peft
base_model: {generator}
tags: [scaledown, oscar, rag, context-compression]
---
# ScaleDown export: OSCAR soft compression for RAG

A query-dependent compressor turns each retrieved document ({c.max_doc_tokens} tokens) into {c.num_memory_tokens}
embeddings ({c.compression_rate:g}x); the generator `{generator}` with a LoRA adapter (r {c.lora_r}, alpha
{c.lora_alpha}) answers from them. Compressor: {compressor}. Input format: {c.input_format}. Trained with ScaleDown
(OSCAR, Louis et al., arXiv 2504.07109).

```python
from scaledown.models.model import ScaleDownModel
model = ScaleDownModel.from_pretrained("THIS_FOLDER_OR_HUB_ID")   # generator="..." if the base model moved
model.answer("question?", ["document 1", "document 2"])
```
`adapter/` loads with plain peft (`AutoPeftModelForCausalLM`) as the generator's LoRA alone (without the
compressor it reads no documents). Settings: `scaledown_config.json`.
"""


def first_added_row(compressor_tokenizer, config: ModelConfig) -> int:
    """The compressor's first added token id: its memory tokens are added after the base vocabulary."""
    return min(compressor_tokenizer.convert_tokens_to_ids(memory_tokens(config.num_memory_tokens)))


# Settings that shape the weights of an export: a run that starts from one (train.init_from) must keep them.
ARCHITECTURE = ("compressor", "compressor_layers", "compressor_embeddings", "input_format", "encoder",
                "projection_hidden", "num_memory_tokens", "lora_r", "lora_alpha", "lora_target_modules", "rerank",
                "memory_norm")


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, mean over labelled tokens (Hugging Face's causal-LM loss), in fp32."""
    return nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                       ignore_index=IGNORE_INDEX)


class ScaleDownModel(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer, compressor_tokenizer, compressor: nn.Module,
                 generator: PeftModel, base_vocab_size: int):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.compressor_tokenizer = compressor_tokenizer
        self.compressor = compressor
        self.generator = generator
        self.base_vocab_size = base_vocab_size
        self.placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKEN)
        slots = memory_tokens(config.num_memory_tokens) if config.input_format == "reference" else [PLACEHOLDER_TOKEN]
        self.register_buffer("slot_ids", torch.tensor(tokenizer.convert_tokens_to_ids(slots)), persistent=False)
        hidden = generator.get_input_embeddings().weight.shape[1]
        self.rerank_head = nn.Linear(hidden, 1).to(generator.dtype) if config.rerank else None

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: ModelConfig, lm=None, tokenizer=None) -> ScaleDownModel:
        """Fresh model for training: base generator + new LoRA + compressor initialised from its source.

        `lm` and `tokenizer` replace loading `config.generator` (benchmarks build random-weight models)."""
        reference = config.input_format == "reference"
        tokenizer = tokenizer or load_tokenizer(config.generator, config.trust_remote_code, pad_with_bos=reference)
        lm = lm or load_causal_lm(config.generator, config.dtype, config.attn_implementation,
                                  config.trust_remote_code, config.quantization)
        base_vocab = lm.get_input_embeddings().weight.shape[0]
        memory = memory_tokens(config.num_memory_tokens) + ([RERANK_TOKEN] if config.rerank else [])
        # The generator prompt's tokens: one placeholder, or in the reference format the <MEMi> tokens themselves
        # followed by its own three tokens (the released models' ids).
        prompt = memory + REFERENCE_TOKENS if reference else [PLACEHOLDER_TOKEN]
        compressor, compressor_tokenizer = COMPRESSORS[config.compressor].create(config, lm, tokenizer, memory,
                                                                                  prompt)
        if config.compressor_embeddings == "added":
            train_added_rows_only(compressor, first_added_row(compressor_tokenizer, config))
        if config.memory_norm == "auto":  # resolved once, here, so the export records the number
            weight = lm.get_input_embeddings().weight[:base_vocab]
            if weight.numel() == 0 or weight.is_meta:
                raise ValueError("model.memory_norm=auto needs the generator's embeddings at build time (not "
                                 "partitioned or on the meta device): give the number instead")
            config = dataclasses.replace(config, memory_norm=round(weight.float().norm(dim=-1).mean().item(), 4))
        generator = add_lora(lm, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
        return cls(config, tokenizer, compressor_tokenizer, compressor, generator, base_vocab).cast_trainable()

    def cast_trainable(self) -> ScaleDownModel:
        """Trained weights to `config.trainable_dtype` (mixed precision: the frozen generator stays in `dtype`)."""
        if self.config.trainable_dtype:
            dtype = DTYPES[self.config.trainable_dtype]
            for p in self.parameters():
                if p.requires_grad:
                    p.data = p.data.to(dtype)
        return self

    def collator(self, num_documents: int | None = None, with_answers: bool = True) -> Collator:
        c = self.config
        kind = ReferenceCollator if c.input_format == "reference" else Collator
        return kind(self.tokenizer, self.compressor_tokenizer, c.num_memory_tokens, c.max_doc_tokens,
                        c.max_query_tokens, c.max_answer_tokens, c.system_prompt, c.user_template, c.doc_separator,
                        c.compressor_template, num_documents, c.rerank, with_answers,
                        encoder_pairs=self.compressor.encoder_pairs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group: the compressor (and rerank head) and the generator's LoRA."""
        compressor = [p for p in self.compressor.parameters() if p.requires_grad]
        if self.rerank_head is not None:
            compressor += list(self.rerank_head.parameters())
        generator = [p for p in self.generator.parameters() if p.requires_grad]
        return {"compressor": compressor, "generator": generator}

    # ---- compute ------------------------------------------------------------------------------------------
    def compress(self, comp_input_ids: torch.Tensor, comp_attention_mask: torch.Tensor, batch_size: int):
        """All B*k documents in one call -> (memory [B, k, l, d], rerank scores [B, k] or None)."""
        l = self.config.num_memory_tokens
        tail = l + (1 if self.rerank_head is not None else 0)
        # The reference format's positions run over the padding (0..width-1), as NAVER's code passes none.
        positions = None if self.config.input_format == "reference" else position_ids_from_mask(comp_attention_mask)
        hidden = self.compressor(comp_input_ids, comp_attention_mask, tail, positions)  # [B*k, tail, d]
        memory = hidden[:, :l].reshape(batch_size, -1, l, hidden.shape[-1])
        if self.config.memory_norm:
            scale = self.config.memory_norm / memory.float().norm(dim=-1, keepdim=True).clamp(min=1e-6)
            memory = memory * scale.to(memory.dtype)
        scores = None
        if self.rerank_head is not None:
            scores = self.rerank_head(hidden[:, l]).float().view(batch_size, -1)
        return memory, scores

    def generator_positions(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Counted from each row's first real token; the reference format passes none (0..width-1 over the padding,
        as bergen's training forward does; generation counts from the mask in both)."""
        return None if self.config.input_format == "reference" else position_ids_from_mask(attention_mask)

    def _generator_inputs(self, batch: dict[str, torch.Tensor]):
        """The generator's input embeddings with the memory spliced in: compressed now, or as given (`memory`:
        two-stage training's cache, scaledown/data/memory_cache.py)."""
        memory, scores = batch.get("memory"), None
        if memory is None:
            memory, scores = self.compress(batch["comp_input_ids"], batch["comp_attention_mask"],
                                           batch["gen_input_ids"].shape[0])
        ids = batch["gen_input_ids"]
        embeds = splice(self.generator.get_input_embeddings()(ids), ids, self.slot_ids, memory)
        return embeds, scores

    def forward(self, gen_input_ids, gen_attention_mask, labels, comp_input_ids=None, comp_attention_mask=None,
                doc_mask=None, reranking_scores=None, has_scores=None, memory=None) -> dict[str, torch.Tensor]:
        batch = {"gen_input_ids": gen_input_ids, "comp_input_ids": comp_input_ids,
                 "comp_attention_mask": comp_attention_mask, "memory": memory}
        window = label_window(labels)  # one host sync (the window's length), before any compute is queued
        embeds, scores = self._generator_inputs(batch)
        out = self.generator(inputs_embeds=embeds, attention_mask=gen_attention_mask,
                             position_ids=self.generator_positions(gen_attention_mask), use_cache=False,
                             logits_to_keep=window)
        ce = answer_loss(out.logits, labels[:, labels.shape[1] - window:])
        result = {"ce_loss": ce, "loss": ce}
        if self.rerank_head is not None and reranking_scores is not None:
            mask = (doc_mask & has_scores[:, None]).float()
            mse = ((scores - reranking_scores.float()) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
            result["rerank_loss"] = mse
            result["loss"] = ce + self.config.rerank_weight * mse
        return result

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds, _ = self._generator_inputs(batch)
        mask = batch["gen_attention_mask"]
        return self.generator(inputs_embeds=embeds, attention_mask=mask,
                              position_ids=self.generator_positions(mask), use_cache=False).logits

    @torch.no_grad()
    def rerank_scores(self, queries: list[str], documents: list[list[str]]) -> torch.Tensor:
        if self.rerank_head is None:
            raise ValueError("this model has no reranking head (model.rerank=false)")
        batch = self._batch(queries, documents)
        return self.compress(batch["comp_input_ids"], batch["comp_attention_mask"], len(queries))[1]

    def _batch(self, queries, documents):
        records = [Record(query=q, documents=list(d)) for q, d in zip(queries, documents)]
        batch = self.collator(with_answers=False)(records)
        device = self.generator.get_input_embeddings().weight.device
        return {k: v.to(device) for k, v in batch.items()}

    @torch.no_grad()
    def generate(self, queries: list[str], documents: list[list[str]], max_new_tokens: int | None = None,
                 **generate_kwargs) -> list[str]:
        """Greedy answers (by default) from the compressed documents; one answer per query."""
        batch = self._batch(queries, documents)
        embeds, _ = self._generator_inputs(batch)
        kwargs = {"do_sample": False, "max_new_tokens": max_new_tokens or self.config.max_answer_tokens,
                  "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id,
                  **generate_kwargs}
        if not kwargs.get("do_sample"):
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.generator.generate(inputs_embeds=embeds, attention_mask=batch["gen_attention_mask"], **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def answer(self, query: str | list[str], documents: list[str] | list[list[str]], batch_size: int = 8,
               **kwargs) -> str | list[str]:
        """One answer for one query and its documents; for a list of queries (and one list of documents each),
        their answers, generated `batch_size` at a time."""
        if isinstance(query, str):
            return self.generate([query], [documents], **kwargs)[0]
        return [answer for i in range(0, len(query), batch_size)
                for answer in self.generate(query[i:i + batch_size], documents[i:i + batch_size], **kwargs)]

    # ---- persistence --------------------------------------------------------------------------------------
    def export_parameters(self) -> list[nn.Parameter]:
        """Every parameter `save_pretrained` reads: the trainable ones and the embedding matrices holding the added
        rows (what a ZeRO-3 engine must gather before an export)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return params + [m.weight for m in (self.generator.get_input_embeddings(),
                                            self.generator.get_output_embeddings()) if m is not None]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """What training changes besides the compressor and LoRA: added embedding rows, the rerank head."""
        lm = self.generator.get_base_model()
        extra = {"input_rows": lm.get_input_embeddings().weight[self.base_vocab_size:]}
        out_emb = lm.get_output_embeddings()
        if out_emb is not None and out_emb.weight is not lm.get_input_embeddings().weight:
            extra["output_rows"] = out_emb.weight[self.base_vocab_size:]
        if self.rerank_head is not None:
            extra.update({f"rerank_head.{k}": v for k, v in self.rerank_head.state_dict().items()})
        return {k: v.detach().contiguous().cpu() for k, v in extra.items()}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        fields = dataclasses.asdict(self.config)
        for name in ("generator", "encoder"):  # a local folder as an absolute path: the export loads from anywhere
            if fields[name] and Path(fields[name]).exists():
                fields[name] = str(Path(fields[name]).resolve())
        meta = {"model": fields, "base_vocab_size": self.base_vocab_size, **self.compressor.export_meta()}
        (path / "scaledown_config.json").write_text(json.dumps(meta, indent=2))
        # Clone: engines hand out parameters that are views into flat buffers, which safetensors refuses.
        compressor = {k: v.detach().cpu().clone() for k, v in self.compressor.state_dict().items()}
        save_file(compressor, str(path / "compressor.safetensors"))
        save_file(self.extra_state(), str(path / "extra.safetensors"))
        # The added embedding rows are in extra.safetensors: keep peft from saving whole embedding matrices.
        self.generator.save_pretrained(str(path / "adapter"), save_embedding_layers=False)
        # peft records the path the base model was loaded by (often relative): the config's resolved one
        # lets `PeftModel.from_pretrained` / `AutoPeftModelForCausalLM` load the adapter from any directory.
        adapter_config = path / "adapter" / "adapter_config.json"
        settings = json.loads(adapter_config.read_text())
        settings["base_model_name_or_path"] = fields["generator"]
        adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True))
        self.tokenizer.save_pretrained(str(path / "tokenizer"))
        if self.compressor_tokenizer is not self.tokenizer:
            self.compressor_tokenizer.save_pretrained(str(path / "compressor_tokenizer"))
        (path / "README.md").write_text(model_card(self.config, fields["generator"]))
        umask_modes(path)

    def push_to_hub(self, repo_id: str, private: bool = True, token: str | None = None,
                    commit_message: str = "ScaleDown export") -> str:
        """Save this model (the export: compressor, LoRA, added rows, tokenizers, model card) to a hub repository,
        created if needed; `from_pretrained(repo_id)` loads it back. Returns the commit's URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="scaledown-push-") as folder:
            self.save_pretrained(folder)
            return str(api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message))

    @classmethod
    def from_pretrained(cls, path: str | Path, generator: str | None = None, trainable: bool = False,
                        dtype: str | None = None, config: ModelConfig | None = None) -> ScaleDownModel:
        """Load an export; `generator` overrides the base model's path recorded in the config. `config` (a run
        starting from this export: train.init_from) replaces the recorded settings but must agree with the
        export's architecture."""
        if not Path(path).exists() and not looks_local(str(path)):  # `org/name`: the export from the hub
            from huggingface_hub import snapshot_download

            path = snapshot_download(str(path))
        path = Path(path)
        meta_file = path / "scaledown_config.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file}: not a ScaleDown export (no scaledown_config.json)")
        meta = json.loads(meta_file.read_text())
        fields = meta["model"]
        if config is not None:
            if config.memory_norm == "auto":  # the number the export was built with
                config = dataclasses.replace(config, memory_norm=fields.get("memory_norm", 0.0))
            differ = [f"model.{k}={getattr(config, k)!r} (the export: {fields.get(k)!r})" for k in ARCHITECTURE
                      if k in fields and getattr(config, k) != fields[k]]
            if differ:
                raise ConfigError(f"{path}: this export's architecture differs from the run's config: "
                                 + "; ".join(differ))
            fields = dataclasses.asdict(config)
        if generator:
            fields["generator"] = generator
        if dtype:
            fields["dtype"] = dtype
        config = ModelConfig(**fields)
        tokenizer = load_tokenizer(str(path / "tokenizer"))
        lm = load_causal_lm(config.generator, config.dtype, config.attn_implementation, config.trust_remote_code,
                            config.quantization)
        grow(lm, len(tokenizer), mean_resizing=False)
        extra = load_file(str(path / "extra.safetensors"))
        base = meta["base_vocab_size"]
        with torch.no_grad():
            lm.get_input_embeddings().weight[base:] = extra["input_rows"]
            if "output_rows" in extra:
                lm.get_output_embeddings().weight[base:] = extra["output_rows"]
        compressor, compressor_tokenizer = COMPRESSORS[config.compressor].restore(config, lm, tokenizer, path, meta)
        if config.compressor_embeddings == "added":
            train_added_rows_only(compressor, first_added_row(compressor_tokenizer, config))
        compressor.load_state_dict(load_file(str(path / "compressor.safetensors")))
        peft_model = PeftModel.from_pretrained(lm, str(path / "adapter"), is_trainable=trainable)
        model = cls(config, tokenizer, compressor_tokenizer, compressor, peft_model, base)
        if model.rerank_head is not None:
            model.rerank_head.load_state_dict({k.removeprefix("rerank_head."): v for k, v in extra.items()
                                               if k.startswith("rerank_head.")})
        model.compressor.requires_grad_(trainable)
        return model.cast_trainable() if trainable else model
