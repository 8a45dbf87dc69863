"""The training record and its loaders.

One record per query:
    {"id": "q1",                                   # optional; the line or row number otherwise
     "query": "who wrote ...",
     "documents": ["text", {"title": "...", "text": "..."}, ...],
     "answer": "the teacher's answer",             # optional at inference
     "gold_answers": ["1960", "in 1960"],          # optional: gold aliases (a single string is accepted)
     "reranking_scores": [3.2, -1.0, ...]}         # optional: one cross-encoder score per document

Records live in a JSONL file (one per line) or a Hugging Face `datasets` folder (`save_to_disk`). A bad record
raises `DataError` naming the file, the line (or row) and the field.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """A record is malformed; the message names the file, line and field."""


@dataclass
class Record:
    query: str
    documents: list[str]
    answer: str | None = None
    reranking_scores: list[float] | None = None
    id: str = ""
    gold_answers: list[str] | None = None
    """Gold aliases (evaluation scores against these when present, else against `answer`)."""
    extra: dict[str, Any] = field(default_factory=dict)


def document_text(doc: str | dict[str, Any]) -> str:
    """A document as the compressor reads it: `title\\ntext` when it has a title."""
    if isinstance(doc, str):
        return doc
    title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title}\n{text}" if title else text


def answer_list(value: Any, where: str) -> list[str]:
    """Gold answers as a list of non-empty strings: a string, a number, or a (nested) list of them."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, list)):
        raise DataError(f"{where}: expected a string, a number or a list of them, got {type(value).__name__}")
    if isinstance(value, list):
        out = [a for item in value for a in answer_list(item, where)]
    else:
        out = [value.strip() if isinstance(value, str) else str(value)]
    return [a for a in out if a]


def check_unicode(value: Any, where: str, name: str) -> None:
    """Strings must be valid Unicode: JSON's `\\ud800` escapes decode to lone surrogates no tokenizer takes."""
    texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    for text in texts:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise DataError(f"{where}: field '{name}': invalid Unicode (a lone surrogate at character "
                                f"{err.start})") from None


def record_id(obj: dict, where: str, default: str) -> str:
    """The record's id: a non-empty string or an integer; `default` (its line or row) when the key is absent."""
    if "id" not in obj:
        return default
    rid = obj["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
        raise DataError(f"{where}: field 'id': expected a non-empty string or an integer, got {rid!r}")
    return str(rid)


def validate_record(obj: Any, where: str, require_answer: bool = True, default_id: str = "") -> Record:
    """Check one decoded record; `where` is `file:line` for the error messages. Empty documents are kept as
    empty strings: the collator masks them like missing ones."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: record must be a JSON object, got {type(obj).__name__}")
    rid = record_id(obj, where, default_id)
    query = obj.get("query")
    if not isinstance(query, str):
        raise DataError(f"{where}: field 'query': expected a string, got {type(query).__name__}")
    if not query.strip():
        raise DataError(f"{where}: field 'query': empty")
    docs = obj.get("documents")
    if not isinstance(docs, list):
        raise DataError(f"{where}: field 'documents': expected a list, got {type(docs).__name__}")
    if not docs:
        raise DataError(f"{where}: field 'documents': no documents")
    texts = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict):
            for key in ("title", "text"):
                if doc.get(key) is not None and not isinstance(doc[key], str):
                    raise DataError(f"{where}: field 'documents[{i}].{key}': expected a string, "
                                    f"got {type(doc[key]).__name__}")
            if not isinstance(doc.get("text"), str):
                raise DataError(f"{where}: field 'documents[{i}].text': missing")
        elif not isinstance(doc, str):
            raise DataError(f"{where}: field 'documents[{i}]': expected a string or {{title, text}}, "
                            f"got {type(doc).__name__}")
        texts.append(document_text(doc))
        check_unicode(texts[-1], where, f"documents[{i}]")
    check_unicode(query, where, "query")
    answer = obj.get("answer")
    check_unicode(answer, where, "answer")
    if answer is None and require_answer:
        raise DataError(f"{where}: field 'answer': missing (training records need the teacher's answer)")
    if answer is not None and not isinstance(answer, str):
        raise DataError(f"{where}: field 'answer': expected a string, got {type(answer).__name__}")
    if require_answer and not answer.strip():
        raise DataError(f"{where}: field 'answer': empty")
    scores = obj.get("reranking_scores")
    if scores is not None:
        if not isinstance(scores, list) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            raise DataError(f"{where}: field 'reranking_scores': expected a list of numbers")
        if len(scores) != len(docs):
            raise DataError(f"{where}: field 'reranking_scores': {len(scores)} scores for {len(docs)} documents")
        if not all(math.isfinite(s) for s in scores):
            raise DataError(f"{where}: field 'reranking_scores': not finite")
        scores = [float(s) for s in scores]
    gold = None
    for key in ("gold_answers", "gold_answer"):  # gold_answer: the single-string field of earlier builds
        if obj.get(key) is not None:
            gold = answer_list(obj[key], f"{where}: field '{key}'")
            check_unicode(gold, where, key)
            if not gold:
                raise DataError(f"{where}: field '{key}': no non-empty answer")
            break
    extra = {k: v for k, v in obj.items() if k not in _FIELDS}
    return Record(query=query, documents=texts, answer=answer, reranking_scores=scores, id=str(rid),
                  gold_answers=gold, extra=extra)


_FIELDS = ("id", "query", "documents", "answer", "reranking_scores", "gold_answers", "gold_answer")


def iter_jsonl(path: str | Path, bad=None) -> Iterator[tuple[int, Any]]:
    """(line number, decoded object) for each non-blank line; bad UTF-8 or JSON raises with the line (or, with
    `bad`, is passed to it and skipped)."""
    def problem(message):
        if bad is None:
            raise DataError(message)
        bad(message)

    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a byte-order mark is not data
            except UnicodeDecodeError as err:
                problem(f"{path}:{lineno}: invalid UTF-8 at byte {err.start}")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problem(f"{path}:{lineno}: invalid JSON: {err.msg} at column {err.colno}")
                continue
            yield lineno, obj


ROW_FORMATS = "JSONL (one object per line), a JSON list of objects, or a Hugging Face `datasets` folder"


def sniff(path: str | Path) -> str:
    """The format of a data file from its content: `datasets` (a folder), `json_list` (`[...]`), `jsonl` (the
    first line is a whole JSON value), `json` (one JSON document over several lines), `tsv` or `text`."""
    path = Path(path)
    if path.is_dir():
        return "datasets"
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
        while first and not first.strip():
            first = f.readline().decode("utf-8", errors="replace")
    head = first.lstrip()
    if not head:
        return "empty"
    if head.startswith("["):
        return "json_list"
    if head.startswith("{"):
        try:
            obj = json.loads(head)
        except json.JSONDecodeError:
            return "json"
        return "json" if _holds_list(obj) else "jsonl"
    return "tsv" if "\t" in first else "text"


def _holds_list(obj) -> bool:
    """A JSON document whose rows are a list inside it: BioASQ's {"questions": [...]}, or {"data": [...]}."""
    return isinstance(obj, dict) and any(isinstance(obj.get(k), list) for k in ("questions", "data"))


def _json_list(path: Path, bad=None) -> Iterator[tuple[str, int, Any]]:
    """The items of a JSON list, decoded one by one so that each names the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: invalid UTF-8 at byte {err.start}") from None
    decoder, pos, line, seen = json.JSONDecoder(), text.index("[") + 1, 1 + text.count("\n", 0, text.index("[")), 0
    for i in itertools.count():
        while pos < len(text) and text[pos] in " \t\r\n,":
            line += text[pos] == "\n"
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            message = f"{path}:{err.lineno}: invalid JSON: {err.msg} at column {err.colno}"
            if bad is None:
                raise DataError(message) from None
            bad(message + " (the rest of the list is unreadable)")
            return
        yield f"{path}:{line}", i, obj
        line += text.count("\n", pos, end)
        pos, seen = end, seen + 1


def iter_rows(path: str | Path, bad=None, split: str | None = None) -> Iterator[tuple[str, int, Any]]:
    """(where, position, row) of every row of a JSONL file, a JSON list, a JSON document holding a list
    (`{"questions": [...]}` or `{"data": [...]}`), or a `datasets` folder, sniffed from the content. `where` is
    `file:line` (`folder: row i` for datasets). A bad line raises DataError, or goes to `bad(message)` when given."""
    path = Path(path)
    kind = sniff(path)
    if kind == "datasets":
        import datasets  # a `datasets` folder needs the package; JSON does not

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DataError(f"{path}: a DatasetDict with splits {sorted(data)}: choose one with --split")
            data = data[split]
        for i, row in enumerate(data):
            yield f"{path}: row {i}", i, row
    elif kind == "json_list":
        yield from _json_list(path, bad)
    elif kind == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: not JSONL, and not one JSON document either: {err}") from None
        if _holds_list(data):
            data = data["questions"] if isinstance(data.get("questions"), list) else data["data"]
        for i, row in enumerate(data if isinstance(data, list) else [data]):
            yield f"{path}: item {i}", i, row
    elif kind == "jsonl":
        lines = iter_jsonl(path, bad)
        for lineno, obj in lines:
            yield f"{path}:{lineno}", lineno, obj
    elif kind != "empty":
        raise DataError(f"{path}: not a format for rows (it looks like {kind}); expected {ROW_FORMATS}")


def validated(rows: Iterable[tuple[str, Any, Any]], source: str, require_answer: bool = True) -> Iterator[Record]:
    """Records of (where, position, row) triples (`iter_rows`), validated one by one; a repeated id names both
    places, and no record at all is an error. Holds the ids seen, never the records."""
    first_seen: dict[str, str] = {}
    for where, position, obj in rows:
        rec = validate_record(obj, where, require_answer, default_id=str(position))
        if rec.id in first_seen:
            hint = ""
            if rec.id.isdigit():  # line numbers: files built apart and then concatenated (the old split-and-merge)
                hint = ("; ids made from line numbers repeat across files built apart: build all the queries in one "
                        "sharded command instead (torchrun --nproc_per_node N launchers/build_dataset.py --queries "
                        "ALL ...), which gives each rank its share")
            raise DataError(f"{where}: field 'id': {rec.id!r} repeats the record at {first_seen[rec.id]}{hint}")
        first_seen[rec.id] = where
        yield rec
    if not first_seen:
        raise DataError(f"{source}: no records")


def load_records(path: str | Path, require_answer: bool = True) -> list[Record]:
    """All records of a JSONL file, a JSON list or a `datasets` folder, validated."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return list(validated(iter_rows(path), str(path), require_answer))


def atomic_write(path: str | Path, text: str) -> None:
    """Write under a temporary name, then rename: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def umask_modes(folder: str | Path) -> None:
    """Give every file under `folder` the mode a plain `open()` would (0644 under umask 022): safetensors writes
    0600, which teammates on a shared cluster cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for file in Path(folder).rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~mask)


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> None:
    """One JSON object per line, written atomically."""
    atomic_write(path, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))
