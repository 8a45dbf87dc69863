"""SQuAD as a small real training set, the way the original code's `prepare_small_real_dataset.py` made one: each
question with its own paragraph as the one document and the first gold answer as the label (no retrieval, no
teacher). Reads SQuAD in the shapes people hold it: the official JSON (`{"data": [{"title", "paragraphs":
[{"context", "qas": [{"id", "question", "answers": [{"text"}]}]}]}]}`), or the hub's rows (`rajpurkar/squad`:
`{id, title, context, question, answers: {text: [...]}}`) as JSONL, a JSON list or a `datasets` folder.

    python launchers/prepare_small_real_dataset.py --dataset squad --num_examples 500 --squad_path dev-v1.1.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from scaledown.data.schema import DataError, answer_list, iter_rows


def _answers(answers: Any, where: str) -> list[str]:
    texts = answers.get("text") if isinstance(answers, dict) else [a.get("text") for a in answers or []
                                                                      if isinstance(a, dict)]
    return list(dict.fromkeys(answer_list(texts, f"{where}: field 'answers'")))  # SQuAD repeats its aliases


def squad_rows(path: str | Path, split: str | None = None) -> Iterator[tuple[str, dict]]:
    """(where, {id, title, context, question, answers}) of every question, either shape; a row of neither shape
    is an error naming its place and the fields it lacks."""
    for where, _, row in iter_rows(path, split=split):
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if "paragraphs" in row:  # an article of the official JSON
            for p, paragraph in enumerate(row["paragraphs"]):
                for qa in paragraph.get("qas", []):
                    at = f"{where} paragraph {p} question {qa.get('id')}"
                    yield at, {"id": qa.get("id"), "title": row.get("title", ""), "context": paragraph["context"],
                               "question": qa["question"], "answers": _answers(qa.get("answers"), at)}
            continue
        missing = [f for f in ("context", "question", "answers") if f not in row]
        if missing:
            raise DataError(f"{where}: not a SQuAD row (missing {', '.join(missing)}; expected the official JSON or "
                            "{id, title, context, question, answers})")
        yield where, {**row, "answers": _answers(row["answers"], where)}


def small_real_records(path: str | Path, num_examples: int, split: str | None = None) -> list[dict]:
    """The first `num_examples` answerable questions as training records: the paragraph is the document, the
    first gold answer the label, every alias in `gold_answers`."""
    records = []
    for where, row in squad_rows(path, split):
        if not row["answers"]:  # SQuAD 2.0's unanswerable questions carry no label
            continue
        if not str(row.get("question", "")).strip() or not str(row.get("context", "")).strip():
            raise DataError(f"{where}: empty question or context")
        records.append({"id": str(row.get("id") or len(records)), "query": row["question"].strip(),
                        "documents": [{"title": row.get("title") or "", "text": row["context"]}],
                        "answer": row["answers"][0], "gold_answers": row["answers"]})
        if len(records) == num_examples:
            break
    if not records:
        raise DataError(f"{path}: no answerable SQuAD questions")
    return records
