"""Answer metrics, each the best over a record's gold aliases (as in the reference evaluation, bergen's
metrics.py), and nDCG@10 of the rerank head. Normalisation (SQuAD's): lower case, ASCII punctuation removed,
articles removed, whitespace collapsed."""

from __future__ import annotations

import math
import re
import string
from collections import Counter

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
