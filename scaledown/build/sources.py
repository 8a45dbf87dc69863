"""The paper's QA benchmarks (NQ, TriviaQA, HotpotQA, ASQA, PopQA, BioASQ-12B) as build queries with gold aliases.

Each row is read in the shape users hold it in: a `datasets` folder saved from the hub (`save_to_disk`, a
DatasetDict with `--split`), JSONL, or a JSON file. The format is detected from the row's fields (or named with
`--queries-format`), and gold answers become a list of aliases, as the reference evaluation (bergen) takes them:

  kilt      KILT tasks: NQ, HotpotQA, TriviaQA (questions filled in)  {id, input, output: [{answer}]}
  nq_open   NQ-open                                                  {question, answer: [aliases]}
  triviaqa  trivia_qa (rc / unfiltered)                              {question_id, question, answer: {value, aliases}}
  hotpotqa  hotpot_qa                                                {id, question, answer}
  asqa      ASQA                                    {sample_id, ambiguous_question, qa_pairs: [{short_answers}]}
  popqa     PopQA                                        {id, question, possible_answers: '["a", "b"]' (JSON text)}
  bioasq    BioASQ-12B, the challenge's JSON {"questions": [{id, body, type, exact_answer, ideal_answer}]}
  bergen    bergen's processed sets                                  {id, content, label: [aliases]}
  plain     ScaleDown's own                                          {id, query, answer | answers | gold_answers}
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Callable

from scaledown.data.schema import DataError, answer_list

Row = dict[str, Any]


def _kilt(row: Row) -> tuple[Any, str, Any]:
    return row.get("id"), row["input"], [o.get("answer") for o in row.get("output") or [] if o.get("answer")]


def _triviaqa(row: Row):
    answer = row["answer"]
    return row.get("question_id"), row["question"], [answer.get("value")] + list(answer.get("aliases") or [])


def _asqa(row: Row):
    shorts = [a for qa in row.get("qa_pairs") or [] for a in qa.get("short_answers") or []]
    return row.get("sample_id"), row["ambiguous_question"], list(dict.fromkeys(shorts))


def _popqa(row: Row):
    answers = row["possible_answers"]
    if isinstance(answers, str):
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError:
            raise DataError(f"field 'possible_answers': not a JSON list: {answers[:60]!r}") from None
    return row.get("id"), row["question"], answers


def bioasq_answers(row: Row) -> list[str]:
    """The reference's BioASQ labels: factoid/yesno the exact answer(s); list questions every combination of one
    synonym per item, joined by ', ' (capped as the reference does); summary questions their ideal answers."""
    kind, exact = row.get("type"), row.get("exact_answer")
    if kind == "summary":
        return answer_list(row.get("ideal_answer"), "field 'ideal_answer'")
    if kind == "list":
        items = [answer_list(e, "field 'exact_answer'") for e in exact]
        if math.prod(map(len, items)) > 1000:
            items = [e[:10] for e in items]
        if math.prod(map(len, items)) > 1000:
            items = [e[:2] for e in items][:10]
        return [", ".join(c) for c in itertools.product(*items)]
    if kind in ("factoid", "yesno"):
        return answer_list(exact, "field 'exact_answer'")
    raise DataError(f"field 'type': {kind!r} is not a BioASQ question type")


def _bioasq(row: Row):
    return row.get("id"), row["body"], bioasq_answers(row)


def _plain(row: Row):
    key = next((k for k in ("gold_answers", "answers", "answer") if row.get(k) is not None), None)
    return row.get("id"), row["query"], row[key] if key else []


# (name, fields that identify it, converter); the first match wins, so the more specific shapes come first.
FORMATS: list[tuple[str, tuple[str, ...], Callable[[Row], tuple]]] = [
    ("kilt", ("input", "output"), _kilt),
    ("asqa", ("ambiguous_question", "qa_pairs"), _asqa),
    ("popqa", ("question", "possible_answers"), _popqa),
    ("triviaqa", ("question_id", "question", "answer"), _triviaqa),
    ("bioasq", ("body", "type"), _bioasq),
    ("bergen", ("content", "label"), lambda r: (r.get("id"), r["content"], r["label"])),
    ("hotpotqa", ("question", "answer", "supporting_facts"), lambda r: (r.get("id"), r["question"], r["answer"])),
    ("nq_open", ("question", "answer"), lambda r: (r.get("id"), r["question"], r["answer"])),
    ("plain", ("query",), _plain),
]
NAMES = [name for name, _, _ in FORMATS]
CONVERTERS = {name: convert for name, _, convert in FORMATS}


def detect(row: Row) -> str:
    for name, fields, _ in FORMATS:
        if all(f in row for f in fields):
            return name
    shapes = "; ".join(f"{name}: {{{', '.join(fields)}}}" for name, fields, _ in FORMATS)
    raise DataError(f"fields {sorted(row)[:12]} match none of the query formats ({shapes})")


def convert(row: Row, fmt: str, position: int) -> tuple[str, str, list[str]]:
    """(query id, question, gold aliases) of one row; the id defaults to the row's position."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    fmt = detect(row) if fmt == "auto" else fmt
    try:
        qid, text, answers = CONVERTERS[fmt](row)
    except KeyError as err:
        raise DataError(f"format {fmt}: field {err.args[0]!r} missing") from None
    except (TypeError, AttributeError) as err:  # a field of the wrong shape (null, a string for a dict, ...)
        raise DataError(f"format {fmt}: a field has the wrong type ({err})") from None
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"format {fmt}: the question is missing or empty")
    return str(position if qid is None else qid), text.strip(), answer_list(answers, f"format {fmt}: answers")
