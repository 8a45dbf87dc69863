"""Evaluation as the paper reports it: answer metrics on gold answers, the LLM judge, nDCG@10 of the rerank head.

Metrics (each the best over a record's gold aliases, as in the reference evaluation, bergen's metrics.py):
  - accuracy: the normalised gold answer is a substring of the normalised prediction (the paper's main metric);
  - exact_match and f1: SQuAD v1.1's official definitions;
  - rouge_l: ROUGE-L F-measure from Google's `rouge-score`;
  - teacher_f1: token F1 against the teacher's answer (`answer`), when the records carry gold answers too;
  - judge: an LLM's verdict (Correct 1 / Partially correct 0.5 / Wrong 0), read from the probabilities of the
    first generated token, as in the reference;
  - ndcg@10 of the `<RR>` head's ranking against graded relevance (gain 2^rel - 1, log2 discount).
Normalisation (SQuAD's): lower case, ASCII punctuation removed, articles removed, whitespace collapsed.

    python -m scaledown.eval --model EXPORT --data eval.jsonl --uncompressed [--judge]
    torchrun --nproc_per_node 8 -m scaledown.eval ...     # records sharded by rank, metrics gathered
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import Counter
from dataclasses import replace

import torch

from scaledown.data.prompts import supports_system
from scaledown.data.schema import Record

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no ASCII punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def substring_match(prediction: str, gold: str) -> float:
    """The paper's accuracy: the normalised gold answer appears in the normalised prediction."""
    return float(normalize_answer(gold) in normalize_answer(prediction))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1's token F1 (0 when nothing is shared, an empty side included)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


_ROUGE = None


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure (rouge-score's tokenizer: lower case, alphanumeric tokens)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"])
    return _ROUGE.score(gold, prediction)["rougeL"].fmeasure


METRICS = {"accuracy": substring_match, "exact_match": exact_match, "f1": token_f1, "rouge_l": rouge_l}


def references(record: Record) -> list[str]:
    """What a prediction is scored against: the gold aliases when present, else the teacher's answer."""
    if record.gold_answers:
        return record.gold_answers
    if record.answer:
        return [record.answer]
    raise ValueError(f"record {record.id!r}: no gold_answers and no answer to score against")


def score_records(predictions: list[str], records: list[Record]) -> dict[str, float]:
    """Sums (not means) of each metric, best over aliases, plus counts: sums all-reduce correctly across ranks."""
    out = {name: 0.0 for name in METRICS} | {"count": 0.0, "teacher_f1": 0.0, "teacher_count": 0.0}
    for pred, rec in zip(predictions, records):
        golds = references(rec)
        for name, fn in METRICS.items():
            out[name] += max(fn(pred, g) for g in golds)
        out["count"] += 1
        if rec.gold_answers and rec.answer:
            out["teacher_f1"] += token_f1(pred, rec.answer)
            out["teacher_count"] += 1
    return out


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Means of `score_records` sums; teacher_f1 only where some record had a teacher answer beside gold."""
    out = {name: sums[name] / max(sums["count"], 1) for name in METRICS}
    if sums["teacher_count"]:
        out["teacher_f1"] = sums["teacher_f1"] / sums["teacher_count"]
    return out


def ndcg_at_k(scores: list[float], relevance: list[float], k: int = 10) -> float:
    """nDCG@k of the ranking by `scores` against graded `relevance` (gain 2^rel - 1, log2 discount)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    dcg = sum((2 ** relevance[i] - 1) / math.log2(rank + 2) for rank, i in enumerate(order))
    ideal = sorted(relevance, reverse=True)[:k]
    idcg = sum((2 ** r - 1) / math.log2(rank + 2) for rank, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


# The reference's judge (bergen, config/evaluator/default_multi_qa.yaml), with the paper's judge model.
JUDGE_MODEL = "upstage/SOLAR-10.7B-Instruct-v1.0"
JUDGE_OPTIONS = {"Correct": 1.0, "Partially correct": 0.5, "Wrong": 0.0}
JUDGE_SYSTEM = "You are an evaluation tool. Answer with one of \n {rubric}."
JUDGE_USER = ("Here is a question, a golden answer and an AI-generated answer. Can you judge whether the "
              "AI-generated answer is correct according to the question and golden answer, simply answer with one "
              "of {rubric}.\n Question: {question}. \nGolden answer: {answer} \n Generated answer: {prediction}")
JUDGE_USER_ALONE = ("You are an evaluation tool. Just answer as following {rubric}. Here is a question, a golden "
                    "answer and an AI-generated answer. Judge whether the AI-generated answer is correct according "
                    "to the question and golden answer, answer with {rubric}.\nQuestion: {question}.\nGolden "
                    "answer: {answer}\nGenerated answer: {prediction}")


class Judge:
    """An LLM judge: the expected score under the softmax over the options' first tokens, at the first answer
    position (one batched forward pass per batch; the reference reads the same logits from `generate`)."""

    def __init__(self, name_or_path: str = JUDGE_MODEL, device: torch.device | str = "cpu",
                 dtype: str | None = None, batch_size: int = 8):
        from scaledown.models.generator import load_causal_lm, load_tokenizer

        device = torch.device(device)
        self.tok = load_tokenizer(name_or_path)
        self.lm = load_causal_lm(name_or_path, dtype or ("bfloat16" if device.type == "cuda" else "float32"))
        self.lm = self.lm.to(device).eval()
        self.batch_size = batch_size
        names = sorted(JUDGE_OPTIONS)
        self.option_ids = [self.tok.encode(n, add_special_tokens=False)[0] for n in names]
        self.values = torch.tensor([JUDGE_OPTIONS[n] for n in names])
        self.rubric = ", ".join(JUDGE_OPTIONS)
        self.with_system = supports_system(self.tok)

    def prompt(self, question: str, golds: list[str], prediction: str) -> str:
        # The reference formats the list of gold labels as Python prints it.
        fields = {"rubric": self.rubric, "question": question, "answer": str(golds), "prediction": prediction}
        if self.with_system:
            messages = [{"role": "system", "content": JUDGE_SYSTEM.format(**fields)},
                        {"role": "user", "content": JUDGE_USER.format(**fields)}]
        else:
            messages = [{"role": "user", "content": JUDGE_USER_ALONE.format(**fields)}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def scores(self, records: list[Record], predictions: list[str]) -> list[float]:
        from scaledown.models.compressor import position_ids_from_mask

        out: list[float] = []
        prompts = [self.prompt(r.query, references(r), p) for r, p in zip(records, predictions)]
        for start in range(0, len(prompts), self.batch_size):
            enc = self.tok(prompts[start:start + self.batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(self.lm.device)
            logits = self.lm(**enc, position_ids=position_ids_from_mask(enc["attention_mask"])).logits[:, -1]
            probs = logits[:, self.option_ids].float().softmax(-1).cpu()
            out += (probs @ self.values).tolist()
        return out


@torch.no_grad()
def generate_answers(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                     num_documents: int | None = None, **generate_kwargs) -> list[str]:
    """Greedy answers of the compressed model, batched; each record reads its first `num_documents` documents."""
    predictions = []
    was_training = model.training
    model.eval()
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        predictions += model.generate([r.query for r in chunk], [r.documents[:num_documents] for r in chunk],
                                      max_new_tokens=max_new_tokens, **generate_kwargs)
    model.train(was_training)
    return predictions


def text_prompt(model, record: Record, num_documents: int | None) -> list[int]:
    """The prompt of the text baselines: the documents as numbered lines (the teacher's prompt), or, with
    `num_documents=0`, the reference's prompt without retrieval."""
    from scaledown.data.prompts import SYSTEM_PROMPT_NO_DOCS, USER_TEMPLATE_NO_DOCS, encode_chat
    from scaledown.data.teacher import teacher_prompt

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
    from scaledown.data.teacher import greedy_answers

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
              num_documents: int | None = None, text: bool = False) -> tuple[float, int]:
    """(summed CE, answer tokens) of the reference answers: given the compressed documents, or with `text=True`
    given the base generator's text prompt (`num_documents=0`: no documents). Sums all-reduce across ranks.
    Records without that reference are run too (with a stand-in answer, not counted): every rank runs as many
    batches as it has records, which ZeRO-3's collective forwards need."""
    from scaledown.data.collate import IGNORE_INDEX, left_pad
    from scaledown.data.prompts import encode_text
    from scaledown.models.compressor import position_ids_from_mask

    chosen = [replace(r, answer=reference_answer(r, reference) or "-", documents=r.documents[:num_documents])
              for r in records]
    counted = torch.tensor([bool(reference_answer(r, reference)) for r in records])
    was_training = model.training
    model.eval()
    device = model.generator.get_input_embeddings().weight.device
    total, count = 0.0, 0
    for i in range(0, len(chosen), batch_size):
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
        ce, n = _ce_sum(logits, labels.to(logits.device), counted[i:i + batch_size].to(logits.device))
        total, count = total + ce, count + n
    model.train(was_training)
    return total, count


def setup_device(requested: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun each rank takes the GPU of its LOCAL_RANK."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {requested}: no CUDA device on this machine")
        if device.index is None:
            from scaledown.data.teacher import local_device

            device = local_device()  # this rank's LOCAL_RANK GPU, made current
        else:
            torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def load_model(path: str, generator: str | None, device: torch.device, dtype: str | None):
    """An export on `device`; on a CPU the default dtype is float32 (no fast bf16 matmul there)."""
    from scaledown.models.model import ScaleDownModel

    dtype = dtype or (None if device.type == "cuda" else "float32")
    return ScaleDownModel.from_pretrained(path, generator=generator, dtype=dtype).to(device).eval()


def parser():
    import argparse

    p = argparse.ArgumentParser(description="Answer metrics of an exported ScaleDown model (the paper's protocol).")
    p.add_argument("--model", required=True, help="an export folder (save_pretrained)")
    p.add_argument("--data", required=True, help="records with gold_answers and/or answer (JSONL or datasets folder)")
    p.add_argument("--generator", default=None, help="base generator path, if it moved since training")
    p.add_argument("--device", default=None, help="cuda (default when available; cuda:LOCAL_RANK under torchrun), cpu")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="default: the model's on a GPU, float32 on a CPU")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-documents", type=int, default=10, help="documents read per query (the paper: 10)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-examples", type=int, default=0, help="0: every record")
    p.add_argument("--uncompressed", action="store_true",
                   help="also evaluate the base generator with the full documents in its prompt")
    p.add_argument("--teacher", default=None,
                   help="records (same ids) whose 'answer' is the teacher's: scored as a system of its own "
                        "(without it, the records' own 'answer' is, when they also carry gold answers)")
    p.add_argument("--judge", nargs="?", const=JUDGE_MODEL, default=None,
                   help=f"LLM judge, a hub id or local path (flag alone: {JUDGE_MODEL})")
    p.add_argument("--judge-batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="write metrics and predictions here (JSON)")
    return p


def main(argv=None):
    from transformers.utils import logging as hf_logging

    args = parser().parse_args(argv)
    hf_logging.set_verbosity_error()
    rank, world, device = setup_device(args.device)
    try:
        table = evaluate_export(args, rank, world, device)
        if world > 1:
            torch.distributed.barrier()  # ranks leave together: rank 0 may still be writing when the others end
        return table
    finally:
        # A rank that exits with its gloo process group alive can abort at interpreter exit ("terminate called
        # without an active exception", SIGABRT) while its threads are destroyed: close it first.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def evaluate_export(args, rank: int, world: int, device: torch.device) -> dict | None:
    import json
    from pathlib import Path

    from scaledown.data.schema import load_records

    records = load_records(args.data, require_answer=False)
    records = records[: args.max_examples] if args.max_examples else records
    for rec in records:
        references(rec)  # every record must have something to score against, checked before any compute
    model = load_model(args.model, args.generator, device, args.dtype)
    mine = list(range(rank, len(records), world))
    shard = [records[i] for i in mine]
    k = args.num_documents
    systems = {"compressed": generate_answers(model, shard, args.batch_size, args.max_new_tokens, k)}
    if args.uncompressed:
        systems["uncompressed"] = generate_uncompressed(model, shard, args.batch_size, args.max_new_tokens, k)
    if args.teacher:
        teacher = {r.id: r.answer for r in load_records(args.teacher)}
        missing = [r.id for r in shard if r.id not in teacher]
        if missing:
            raise SystemExit(f"{args.teacher}: no teacher answer for ids {missing[:5]}")
        systems["teacher"] = [teacher[r.id] for r in shard]
    elif all(r.gold_answers and r.answer for r in records):
        systems["teacher"] = [r.answer for r in shard]
    judged = {}
    if args.judge:
        judge = Judge(args.judge, device, args.dtype, args.judge_batch_size)
        judged = {name: judge.scores(shard, preds) for name, preds in systems.items()}
    ndcg = []
    if model.rerank_head is not None:
        ndcg = [ndcg_at_k(model.rerank_scores([r.query], [r.documents[:k]])[0].tolist(), r.extra["relevance"])
                for r in shard if isinstance(r.extra.get("relevance"), list)]
    rows = [{"index": i, **{name: preds[j] for name, preds in systems.items()},
             **{f"judge/{name}": s[j] for name, s in judged.items()}} for j, i in enumerate(mine)]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (rows, ndcg))
        rows = sorted((r for part, _ in gathered for r in part), key=lambda r: r["index"])
        ndcg = [v for _, part in gathered for v in part]
    if rank != 0:
        return None
    table = {}
    for name in systems:
        table[name] = summarize(score_records([r[name] for r in rows], records))
        if judged:
            table[name]["judge"] = sum(r[f"judge/{name}"] for r in rows) / len(rows)
    if ndcg:
        table["compressed"]["ndcg@10"] = sum(ndcg) / len(ndcg)
    against = "gold answers" if all(r.gold_answers for r in records) else "the records' answers (no gold_answers)"
    print(f"{len(records)} examples from {args.data}, {k} documents each, scored against {against}")
    columns = list(dict.fromkeys(m for row in table.values() for m in row))
    print(f"{'system':<14}" + "".join(f"{m:>12}" for m in columns))
    for name, row in table.items():
        print(f"{name:<14}" + "".join(f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in columns))
    for rec, row in list(zip(records, rows))[:3]:
        print(f"  Q: {rec.query}\n  gold: {references(rec)}\n  pred: {row['compressed']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": table, "predictions": [
            {"id": rec.id, "query": rec.query, "gold": references(rec), **{n: row[n] for n in systems}}
            for rec, row in zip(records, rows)]}, indent=2))
    return table


if __name__ == "__main__":
    main()
