"""Held-out evaluation, one way for the training loop and the `scaledown eval` / `predict` commands: records
sharded in equal shares by data-parallel rank, each system's answers generated and scored on every rank, the
sums reduced in one collective and, when asked, the per-record rows gathered on rank 0 in input order.

    ranks = Ranks.of_process_group()            # the commands (torchrun); the loop: Ranks.of_engine(engine)
    result = evaluate(model, records, ranks, systems=("compressed", "uncompressed"), num_documents=10)
    result.metrics["compressed"]["accuracy"]    # every rank; result.rows: rank 0 only, with keep_rows=True

Systems: `compressed` (the model), `uncompressed` (the base generator reading the documents as text),
`no_documents` (the base generator, question alone), `teacher` (the records' teacher answers, scored).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from scaledown.data.schema import Record
from scaledown.eval.answers import ndcg_at_k, score_records, summarize
from scaledown.log import progress

SYSTEMS = ("compressed", "uncompressed", "no_documents", "teacher")


def _one_rank_sum(values: dict[str, float]) -> dict[str, float]:
    return dict(values)


@dataclass
class Ranks:
    """The data-parallel ranks an evaluation is spread over, and how their results meet.

    `sum` adds each value over the data-parallel ranks (every rank gets the totals); `gather` brings each rank's
    list to rank 0 (None elsewhere), or is None where the backend has no object collective (XLA). `collective`:
    every forward is a collective (ZeRO-3), so generation runs with `synced_gpus`."""

    rank: int = 0
    size: int = 1
    collective: bool = False
    sum: Callable[[dict[str, float]], dict[str, float]] = field(default=_one_rank_sum)
    gather: Callable[[list], list | None] | None = None

    @classmethod
    def of_engine(cls, engine) -> Ranks:
        """The training engine's data-parallel ranks; its all_reduce averages over all ranks, and the ranks of
        one tensor-parallel group hold the same sums, so mean x dp_size is the data-parallel sum."""
        size = engine.dp_size
        return cls(engine.dp_rank, size, engine.collective_forward,
                   lambda values: {k: v * size for k, v in engine.all_reduce(values).items()})

    @classmethod
    def of_process_group(cls, device: torch.device | None = None) -> Ranks:
        """torchrun's ranks (one rank when no process group is up); sums travel on `device` (NCCL: a GPU)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls(gather=lambda rows: rows)
        rank, size = dist.get_rank(), dist.get_world_size()

        def total(values):
            names = sorted(values)
            t = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            return dict(zip(names, t.cpu().tolist()))

        def gather(rows):
            parts = [None] * size
            dist.all_gather_object(parts, rows)
            return [row for part in parts for row in part] if rank == 0 else None

        return cls(rank, size, False, total, gather)

    def share(self, n: int) -> tuple[list[int], list[bool]]:
        """This rank's record indices (every size-th, from `rank`) and which of them count: the list is padded
        with its first records to a multiple of `size`, so every rank runs the same number of batches (ZeRO-3's
        collective forwards need it) and every record counts exactly once."""
        padded = -(-n // self.size) * self.size
        mine = range(self.rank, padded, self.size)
        return [i % n for i in mine], [i < n for i in mine]

    def collect(self, index: list[int], counted: list[bool], results: list) -> list | None:
        """This rank's per-record `results` (one per `share` index) brought together: on rank 0 every record's,
        in input order, elsewhere None."""
        rows = [(i, out) for i, out, c in zip(index, results, counted) if c]
        if self.size > 1:
            if self.gather is None:
                raise RuntimeError("per-record results need an object gather, which this backend lacks")
            rows = self.gather(rows)
            if rows is None:
                return None
        return [out for _, out in sorted(rows, key=lambda row: row[0])]

    def map(self, records: list, work: Callable[[list], list]) -> list | None:
        """`work(share)` on this rank's records, one result per record, collected on rank 0 in input order."""
        if not records:
            return []
        index, counted = self.share(len(records))
        return self.collect(index, counted, work([records[i] for i in index]))


@dataclass
class Evaluation:
    """Per system its metrics (every rank); per record its answers and scores (rank 0, with keep_rows)."""

    metrics: dict[str, dict[str, float]]
    rows: list[dict] | None = None

@torch.no_grad()
def generate_answers(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                     num_documents: int | None = None, **generate_kwargs) -> list[str]:
    """Greedy answers of the compressed model, batched; each record reads its first `num_documents` documents."""
    predictions = []
    was_training = model.training
    model.eval()
    for i in progress(range(0, len(records), batch_size), "answers"):
        chunk = records[i:i + batch_size]
        predictions += model.generate([r.query for r in chunk], [r.documents[:num_documents] for r in chunk],
                                      max_new_tokens=max_new_tokens, **generate_kwargs)
    model.train(was_training)
    return predictions


def text_prompt(model, record: Record, num_documents: int | None) -> list[int]:
    """The prompt of the text baselines: the documents as numbered lines (the teacher's prompt), or, with
    `num_documents=0`, the reference's prompt without retrieval."""
    from scaledown.data.prompts import SYSTEM_PROMPT_NO_DOCS, USER_TEMPLATE_NO_DOCS, encode_chat
    from scaledown.data.prompts import teacher_prompt

    if num_documents == 0:
        return encode_chat(model.tokenizer, SYSTEM_PROMPT_NO_DOCS, USER_TEMPLATE_NO_DOCS, {"question": record.query},
                           user_fields=("question",))
    c = model.config
    return teacher_prompt(model.tokenizer, c.system_prompt, c.user_template, record.query,
                          record.documents[:num_documents])


@torch.no_grad()
def generate_uncompressed(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                          num_documents: int | None = None, **generate_kwargs) -> list[str]:
    """The baseline: the base generator (LoRA off) reading the documents as text, in the teacher's prompt
    (`num_documents=0`: no documents at all)."""
    from scaledown.models.generation import greedy_answers

    prompts = [text_prompt(model, r, num_documents) for r in records]
    with model.generator.disable_adapter():
        return greedy_answers(model.generator, model.tokenizer, prompts, max_new_tokens, batch_size,
                              **generate_kwargs)


def reference_answer(record: Record, reference: str) -> str | None:
    """The answer a CE is measured on: the teacher's (`answer`) or the first gold alias."""
    if reference == "teacher":
        return record.answer
    return record.gold_answers[0] if record.gold_answers else None


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> tuple[float, int]:
    """Summed next-token CE over the labelled positions of the rows in `keep`, and their count."""
    labels = labels[:, 1:].masked_fill(~keep[:, None], -100)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum")
    return float(ce), int((labels != -100).sum())


@torch.no_grad()
def answer_ce(model, records: list[Record], reference: str, batch_size: int = 8,
              num_documents: int | None = None, text: bool = False,
              counted: list[bool] | None = None) -> tuple[float, int]:
    """(summed CE, answer tokens) of the reference answers: given the compressed documents, or with `text=True`
    given the base generator's text prompt (`num_documents=0`: no documents). Sums all-reduce across ranks.
    Records without that reference, or not `counted` (a share's padding), are run too (with a stand-in answer,
    not counted): every rank runs as many batches as it has records, which ZeRO-3's collective forwards need."""
    from scaledown.data.collate import IGNORE_INDEX, left_pad
    from scaledown.data.prompts import encode_text
    from scaledown.models.compressor import position_ids_from_mask

    chosen = [replace(r, answer=reference_answer(r, reference) or "-", documents=r.documents[:num_documents])
              for r in records]
    scored = torch.tensor([bool(reference_answer(r, reference)) and (counted is None or counted[i])
                           for i, r in enumerate(records)])
    was_training = model.training
    model.eval()
    device = model.generator.get_input_embeddings().weight.device
    total, count = 0.0, 0
    for i in progress(range(0, len(chosen), batch_size), f"CE of {reference} answers"):
        chunk = chosen[i:i + batch_size]
        if text:
            tok = model.tokenizer
            rows, label_rows = [], []
            for r in chunk:
                prompt = text_prompt(model, r, num_documents)
                answer = encode_text(tok, r.answer, model.config.max_answer_tokens) + [tok.eos_token_id]
                rows.append(prompt + answer)
                label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
            ids, mask = left_pad(rows, tok.pad_token_id)
            labels, _ = left_pad(label_rows, IGNORE_INDEX)
            ids, mask = ids.to(device), mask.to(device)
            with model.generator.disable_adapter():
                logits = model.generator(input_ids=ids, attention_mask=mask,
                                         position_ids=position_ids_from_mask(mask)).logits
        else:
            batch = {k: v.to(device) for k, v in model.collator(num_documents)(chunk).items()}
            logits, labels = model.logits(batch), batch["labels"]
        ce, n = _ce_sum(logits, labels.to(logits.device), scored[i:i + batch_size].to(logits.device))
        total, count = total + ce, count + n
    model.train(was_training)
    return total, count


def ce_sums(model, shard: list[Record], others: list[Record], counted: list[bool], system: str, batch_size: int,
            num_documents: int | None, same_labels: bool) -> dict[str, float]:
    """Summed CE and token counts of the teacher's and the gold answers (one pass when they are the same
    answers, `same_labels`, decided on all records so every rank runs the same passes) and, for the compressed
    model, of the gold answers given another question's documents (`others`): a model that answers from the
    question alone scores the same CE with them."""
    text = system != "compressed"
    out = {}
    for reference in ("teacher", "gold"):
        if reference == "gold" and same_labels:
            out["ce_gold"], out["ce_gold_tokens"] = out["ce_teacher"], out["ce_teacher_tokens"]
            continue
        ce, n = answer_ce(model, shard, reference, batch_size, num_documents, text=text, counted=counted)
        out[f"ce_{reference}"], out[f"ce_{reference}_tokens"] = ce, float(n)
    if not text:
        ce, n = answer_ce(model, others, "gold", batch_size, num_documents, counted=counted)
        out["ce_gold_other_documents"], out["ce_gold_other_documents_tokens"] = ce, float(n)
    return out


def system_answers(model, shard: list[Record], system: str, batch_size: int, max_new_tokens: int,
                   num_documents: int | None, teacher: dict[str, str] | None, **generate_kwargs) -> list[str]:
    if system == "teacher":
        if teacher is None:
            raise ValueError("system 'teacher' needs the teacher's answers by record id")
        return [teacher[r.id] for r in shard]
    if system == "compressed":
        return generate_answers(model, shard, batch_size, max_new_tokens, num_documents, **generate_kwargs)
    k = 0 if system == "no_documents" else num_documents
    return generate_uncompressed(model, shard, batch_size, max_new_tokens, k, **generate_kwargs)


def system_metrics(totals: dict[str, float], answers: bool, num_records: int) -> dict[str, float]:
    """One system's metrics from its sums over all ranks: CE per answer token, answer metrics per record."""
    metrics = {f"ce_{r}": totals[f"ce_{r}"] / totals[f"ce_{r}_tokens"]
               for r in ("teacher", "gold", "gold_other_documents") if totals.get(f"ce_{r}_tokens")}
    if answers:
        metrics.update(summarize(totals))
        if "judge" in totals:
            metrics["judge"] = totals["judge"] / max(totals["count"], 1)
    if "ndcg" in totals:
        metrics["ndcg@10"] = totals["ndcg"] / num_records
    return metrics


@torch.no_grad()
def evaluate(model, records: list[Record], ranks: Ranks | None = None, systems=("compressed",), *, ce: bool = True,
             answers: bool = True, batch_size: int = 8, max_new_tokens: int = 32, num_documents: int | None = None,
             judge=None, teacher: dict[str, str] | None = None, keep_rows: bool = False) -> Evaluation:
    """Each system's held-out metrics over all ranks: with `ce`, the answers' CE (the teacher's and the gold
    ones); with `answers`, the greedy answers' metrics (gold answers when the records carry them, else the
    teacher's), the `judge`'s verdict when one is given, and nDCG@10 of the rerank head when every record
    carries graded `relevance`. `keep_rows`: each record's answers and scores, on rank 0."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}: expected some of {SYSTEMS}")
    ranks = ranks or Ranks()
    index, counted = ranks.share(len(records))
    shard = [records[i] for i in index]
    mine = [r for r, c in zip(shard, counted) if c]
    synced = {"synced_gpus": True} if ranks.collective else {}
    same_labels = all(r.answer == reference_answer(r, "gold") for r in records)
    # Each record with the next record's documents (in the whole list: the same pairs on any number of ranks).
    others = [replace(r, documents=records[(i + 1) % len(records)].documents) for r, i in zip(shard, index)]
    sums: dict[str, dict[str, float]] = {}  # per system: summed CE and tokens, metric sums, counts
    columns: dict[str, list] = {}  # per record of the share: each system's answer and judge score, nDCG
    for system in systems:
        sums[system] = {}
        if ce and system != "teacher":
            k = 0 if system == "no_documents" else num_documents
            sums[system].update(ce_sums(model, shard, others, counted, system, batch_size, k, same_labels))
        if answers:
            preds = system_answers(model, shard, system, batch_size, max_new_tokens, num_documents, teacher, **synced)
            sums[system].update(score_records([p for p, c in zip(preds, counted) if c], mine))
            columns[system] = preds
            if judge is not None:
                columns[f"judge/{system}"] = judge.scores(shard, preds)
                sums[system]["judge"] = sum(x for x, c in zip(columns[f"judge/{system}"], counted) if c)
    graded = records and all(isinstance(r.extra.get("relevance"), list) for r in records)
    if "compressed" in systems and getattr(model, "rerank_head", None) is not None and graded:
        columns["ndcg"] = [ndcg_at_k(model.rerank_scores([r.query], [r.documents[:num_documents]])[0].tolist(),
                                     r.extra["relevance"]) for r in shard]
        sums["compressed"]["ndcg"] = sum(x for x, c in zip(columns["ndcg"], counted) if c)
    # One collective for every system's sums: flattened to "system/name" keys and back.
    flat = ranks.sum({f"{system}/{name}": v for system, part in sums.items() for name, v in part.items()})
    totals: dict[str, dict[str, float]] = {system: {} for system in systems}
    for key, value in flat.items():
        system, name = key.split("/", 1)
        totals[system][name] = value
    metrics = {system: system_metrics(totals[system], answers, len(records)) for system in systems}
    rows = None
    if keep_rows:
        per_record = [{name: values[j] for name, values in columns.items()} for j in range(len(shard))]
        rows = ranks.collect(index, counted, per_record)
    return Evaluation(metrics, rows)
