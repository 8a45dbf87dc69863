"""Answer metrics (SQuAD-style normalisation) and evaluation of a model on records with gold answers."""

from __future__ import annotations

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

    tok, cfg = model.tokenizer, model.config
    lm = model.generator
    predictions = []
    with lm.disable_adapter():
        for i in range(0, len(records), batch_size):
            chunk = records[i:i + batch_size]
            prompts = [tok.apply_chat_template(generator_messages(cfg.instruction, r.query, r.documents),
                                               tokenize=False, add_generation_prompt=True) for r in chunk]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(lm.device) for k, v in enc.items()}
            out = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            predictions += [t.strip() for t in
                            tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    return predictions


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
    parser.add_argument("--out", default=None, help="write metrics and predictions here (JSON)")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    model = ScaleDownModel.from_pretrained(args.model, generator=args.generator)
    records = load_records(args.data)[: args.max_examples]
    golds = [r.answer for r in records]
    systems = {"compressed": generate_answers(model, records, args.batch_size, args.max_new_tokens)}
    if args.uncompressed:
        systems["uncompressed"] = generate_uncompressed(model, records, args.batch_size, args.max_new_tokens)
    table = {}
    for name, preds in systems.items():
        sums = score_answers(preds, golds)
        table[name] = {k: v / sums["count"] for k, v in sums.items() if k != "count"}
    print(f"{len(records)} examples from {args.data}")
    print(f"{'system':<14}" + "".join(f"{m:>12}" for m in METRICS))
    for name, row in table.items():
        print(f"{name:<14}" + "".join(f"{row[m]:>12.4f}" for m in METRICS))
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
