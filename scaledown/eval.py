"""Answer metrics (SQuAD-style normalisation) and evaluation of a model on records with gold answers."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

import torch

from scaledown.data.schema import Record

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, NFKC unicode, no punctuation (ASCII or unicode), no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch
                   for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def substring_match(prediction: str, gold: str) -> float:
    """The paper's accuracy: the normalised gold answer appears in the normalised prediction."""
    g = normalize_answer(gold)
    return float(bool(g) and f" {g} " in f" {normalize_answer(prediction)} ")


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F1 over normalised tokens (longest common subsequence)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    prev = [0] * (len(g) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(g):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


METRICS = {"accuracy": substring_match, "exact_match": exact_match, "f1": token_f1, "rouge_l": rouge_l}


def ndcg_at_k(scores: list[float], relevance: list[float], k: int = 10) -> float:
    """nDCG@k of the ranking by `scores` against graded `relevance` (gain 2^rel - 1, log2 discount)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    dcg = sum((2 ** relevance[i] - 1) / math.log2(rank + 2) for rank, i in enumerate(order))
    ideal = sorted(relevance, reverse=True)[:k]
    idcg = sum((2 ** r - 1) / math.log2(rank + 2) for rank, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


JUDGE_PROMPT = (
    "You grade answers to questions. Question: {question}\nReference answer: {gold}\nCandidate answer: {pred}\n"
    "Reply with one number: 1 if the candidate is correct and complete, 0.5 if it is partly correct, "
    "0 if it is wrong."
)


class Judge:
    """An LLM judge (a local causal LM with a chat template) scoring each prediction 1 / 0.5 / 0; loaded once."""

    def __init__(self, path: str, max_new_tokens: int = 4):
        from scaledown.models.generator import load_causal_lm, load_tokenizer

        self.tok = load_tokenizer(path)
        self.lm = load_causal_lm(path, "float32" if not torch.cuda.is_available() else "bfloat16").eval()
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def scores(self, records: list[Record], predictions: list[str]) -> list[float]:
        out = []
        for rec, pred in zip(records, predictions):
            content = JUDGE_PROMPT.format(question=rec.query, gold=rec.answer, pred=pred)
            ids = self.tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
            reply = self.lm.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=self.tok.pad_token_id)
            out.append(parse_judgement(self.tok.decode(reply[0, ids["input_ids"].shape[1]:],
                                                       skip_special_tokens=True)))
        return out


def parse_judgement(reply: str) -> float:
    """The first of 1 / 0.5 / 0 in the judge's reply; anything else scores 0."""
    match = re.search(r"(0?\.5|1(?:\.0)?|0(?:\.0)?)", reply)
    return float(match.group(1)) if match else 0.0


def score_answers(predictions: list[str], golds: list[str]) -> dict[str, float]:
    """Sums (not means) of each metric, plus the count: sums all-reduce correctly across ranks."""
    out = {name: sum(fn(p, g) for p, g in zip(predictions, golds)) for name, fn in METRICS.items()}
    out["count"] = float(len(predictions))
    return out


@torch.no_grad()
def generate_answers(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32,
                     **generate_kwargs) -> list[str]:
    predictions = []
    was_training = model.training
    model.eval()
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        predictions += model.generate([r.query for r in chunk], [r.documents for r in chunk],
                                      max_new_tokens=max_new_tokens, **generate_kwargs)
    model.train(was_training)
    return predictions


@torch.no_grad()
def generate_uncompressed(model, records: list[Record], batch_size: int = 8, max_new_tokens: int = 32) -> list[str]:
    """The baseline: the base generator (LoRA off) with the full documents as text in the same prompt shape."""
    from scaledown.data.collate import generator_messages
    from scaledown.data.teacher import greedy_answers

    tok = model.tokenizer
    prompts = [tok.apply_chat_template(generator_messages(model.config.instruction, r.query, r.documents),
                                       tokenize=False, add_generation_prompt=True) for r in records]
    with model.generator.disable_adapter():
        return greedy_answers(model.generator, tok, prompts, max_new_tokens, batch_size)


def main(argv=None):
    import argparse
    import json
    from pathlib import Path

    from transformers.utils import logging as hf_logging

    from scaledown.data.schema import load_records
    from scaledown.models.model import ScaleDownModel

    parser = argparse.ArgumentParser(description="Answer metrics of an exported ScaleDown model.")
    parser.add_argument("--model", required=True, help="an export folder (save_pretrained)")
    parser.add_argument("--data", required=True, help="records with gold answers (JSONL or datasets folder)")
    parser.add_argument("--generator", default=None, help="base generator path, if it moved since training")
    parser.add_argument("--max-examples", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--uncompressed", action="store_true",
                        help="also evaluate the base generator with the full documents in its prompt")
    parser.add_argument("--teacher", default=None,
                        help="records (same ids) whose 'answer' is the teacher's: scored as a third system")
    parser.add_argument("--judge", default=None, help="local path of an LLM judge (1 / 0.5 / 0 rubric)")
    parser.add_argument("--out", default=None, help="write metrics and predictions here (JSON)")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    model = ScaleDownModel.from_pretrained(args.model, generator=args.generator)
    records = load_records(args.data)[: args.max_examples]
    golds = [r.answer for r in records]
    systems = {"compressed": generate_answers(model, records, args.batch_size, args.max_new_tokens)}
    if args.uncompressed:
        systems["uncompressed"] = generate_uncompressed(model, records, args.batch_size, args.max_new_tokens)
    if args.teacher:
        teacher = {r.id: r.answer for r in load_records(args.teacher)}
        missing = [r.id for r in records if r.id not in teacher]
        if missing:
            raise SystemExit(f"{args.teacher}: no teacher answer for ids {missing[:5]}")
        systems["teacher"] = [teacher[r.id] for r in records]
    table = {}
    judge = Judge(args.judge) if args.judge else None
    for name, preds in systems.items():
        sums = score_answers(preds, golds)
        table[name] = {k: v / sums["count"] for k, v in sums.items() if k != "count"}
        if judge:
            table[name]["judge"] = sum(judge.scores(records, preds)) / len(records)
    ranked = [r for r in records if isinstance(r.extra.get("relevance"), list)]
    if model.rerank_head is not None and ranked:
        ndcg = [ndcg_at_k(model.rerank_scores([r.query], [r.documents])[0].tolist(), r.extra["relevance"])
                for r in ranked]
        table["compressed"]["ndcg@10"] = sum(ndcg) / len(ndcg)
    print(f"{len(records)} examples from {args.data}")
    columns = list(dict.fromkeys(m for row in table.values() for m in row))
    print(f"{'system':<14}" + "".join(f"{m:>12}" for m in columns))
    for name, row in table.items():
        print(f"{name:<14}" + "".join(f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in columns))
    preds = systems["compressed"]
    for rec, pred in list(zip(records, preds))[:3]:
        print(f"  Q: {rec.query}\n  gold: {rec.answer}\n  pred: {pred}")
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": table, "predictions": [
            {"id": r.id, "query": r.query, "gold": r.answer, "prediction": p} for r, p in zip(records, preds)]},
            indent=2))
    return table


if __name__ == "__main__":
    main()
