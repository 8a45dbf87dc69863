"""Corpus and query readers (streaming), passage chunking, and the problem log for bad input lines.

Corpora: the KILT knowledge source (`{"wikipedia_id", "wikipedia_title", "text": [paragraphs]}` per line),
generic JSONL (`{"id", "title", "text"}`), a JSON list of such objects, TSV (`id<TAB>text`, the MS MARCO
collection), or a `datasets` folder with those columns; the format is sniffed from the content. Queries: a text file
(one per line), TSV (`qid<TAB>query`), or rows of JSONL, a JSON file or a `datasets` folder in any of the formats
of scaledown/build/sources.py (the paper's QA sets as users hold them), with their gold aliases.
A bad line is logged with its file and line number, counted, and skipped: it never aborts a build.

Large corpora are read in blocks: JSONL and TSV by byte span (`byte_blocks`: each rank reads only its own
blocks, and `count_lines` gives each block its first true line number), a JSON list or a `datasets` folder by
document count (`document_blocks`: every rank streams the whole corpus and keeps its own blocks).
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from scaledown.data.schema import DataError, check_unicode, iter_rows, sniff


@dataclass
class Problems:
    """Bad input lines and per-query failures: counted by kind, with the first messages kept."""

    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    keep: int = 50

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.messages) < self.keep:
            self.messages.append(message)


@dataclass
class Passage:
    id: str
    title: str
    text: str

    def as_document(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text}


@dataclass
class Query:
    id: str
    text: str
    answers: list[str] = field(default_factory=list)
    """Gold aliases (empty when the source has none)."""


def _lines(path: Path, problems: Problems, span: tuple[int, int] | None = None,
           first_line: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line; with `span` (start, end), only the lines that begin in
    [start, end), `start` being a line start and `first_line` its number."""
    start, end = span or (0, None)
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        for lineno, raw in enumerate(f, start=first_line):
            if end is not None and pos >= end:
                return
            pos += len(raw)
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as err:
                problems.add("bad_line", f"{path}:{lineno}: invalid UTF-8 at byte {err.start}")
                continue
            if line.strip():
                yield lineno, line


def tsv_fields(where: str, line: str, names: tuple[str, ...], problems: Problems) -> list[str] | None:
    """The columns of a TSV line (csv's TAB dialect without quoting, as MS MARCO writes it): exactly one per name,
    none empty; otherwise a bad line naming the count. A TAB inside a text would otherwise cut it silently."""
    parts = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(parts) != len(names):
        extra = " (a TAB inside the text?)" if len(parts) > len(names) else ""
        problems.add("bad_line", f"{where}: expected {len(names)} TAB-separated columns ({', '.join(names)}), "
                                 f"found {len(parts)}{extra}")
        return None
    if not all(p.strip() for p in parts):
        problems.add("bad_line", f"{where}: an empty column (expected {', '.join(names)})")
        return None
    return [p.strip() for p in parts]


def byte_blocks(path: str | Path, block_bytes: int) -> list[tuple[int, int]]:
    """The file cut into (start, end) byte spans of about `block_bytes`, each starting at a line start: block j
    begins at the first line that begins at or after j * block_bytes and so holds the line straddling its end.
    The spans depend on the file and `block_bytes` only, never on the number of ranks."""
    size = Path(path).stat().st_size
    starts = [0]
    with open(path, "rb") as f:
        for offset in range(block_bytes, size, block_bytes):
            f.seek(offset - 1)
            f.readline()  # to just past the first newline at or after offset - 1: the next line start
            if f.tell() > starts[-1] and f.tell() < size:
                starts.append(f.tell())
    return list(zip(starts, starts[1:] + [size]))


def count_lines(path: str | Path, span: tuple[int, int], read_bytes: int = 1 << 24) -> int:
    """Newlines in a byte span: the number of lines of a block (its last line may lack one only at the end of
    the file, where no block follows)."""
    start, end = span
    count = 0
    with open(path, "rb") as f:
        f.seek(start)
        while start < end:
            buf = f.read(min(read_bytes, end - start))
            if not buf:
                break
            count += buf.count(b"\n")
            start += len(buf)
    return count


CORPUS_FORMATS = ("JSONL {id, title, text}, KILT JSONL {wikipedia_id, wikipedia_title, text: [paragraphs]}, a JSON "
                  "list of {id, title, text}, TSV id<TAB>text (MS MARCO), or a datasets folder")


def detect_format(path: Path) -> str:
    """`datasets`, `tsv`, `text`, or `jsonl` for every JSON form (lines, a list, one document): from the content,
    the `.tsv` name deciding only between TSV and plain text."""
    kind = sniff(path)
    if kind in ("json_list", "json", "jsonl", "datasets", "empty"):
        return "jsonl" if kind != "datasets" else "datasets"
    return "tsv" if kind == "tsv" or path.name.lower().endswith(".tsv") else "text"


def splittable(path: str | Path, fmt: str = "auto") -> bool:
    """Whether the corpus can be read by byte blocks: JSONL and TSV, one document per line. A JSON list and a
    `datasets` folder cannot be cut without parsing what comes before (see `document_blocks`)."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    return path.is_file() and (fmt == "tsv" or (fmt == "jsonl" and sniff(path) == "jsonl"))


def read_corpus(path: str | Path, problems: Problems, fmt: str = "auto", span: tuple[int, int] | None = None,
                first_line: int = 1) -> Iterator[tuple[str, str, str]]:
    """(document id, title, text) for each document, streamed line by line; invalid Unicode is a bad line.
    With `span`, a block of a `splittable` corpus: the lines beginning in [start, end), the first being line
    `first_line` of the file (so that bad lines are reported with their true line number)."""
    for where, doc_id, title, text in _corpus_rows(Path(path), problems, fmt, span, first_line):
        try:
            check_unicode([title, text], where, "text")
        except DataError as err:
            problems.add("bad_line", str(err))
            continue
        yield doc_id, title, text


def where_documents(path: str | Path, ids: set[str], fmt: str = "auto") -> dict[str, list[str]]:
    """The file:line (or row) of every document whose id is in `ids`: for naming repeats (the error path)."""
    found: dict[str, list[str]] = {}
    for where, doc_id, _, _ in _corpus_rows(Path(path), Problems(), fmt):
        if doc_id in ids:
            found.setdefault(doc_id, []).append(where)
    return found


def document_blocks(documents: Iterable, block_docs: int, rank: int, world_size: int) -> Iterator[tuple[int, Iterator]]:
    """(block number, its documents) for this rank's blocks of a corpus that must be streamed whole: block j is
    documents [j * block_docs, (j + 1) * block_docs) and belongs to rank j % world_size. Every rank parses the
    whole stream (cheap next to tokenizing and encoding, which only the owner does). A block left unread by the
    caller (already on disk) is skipped over."""
    documents = iter(documents)
    for number in itertools.count():
        first = next(documents, None)
        if first is None:
            return
        block = itertools.chain([first], itertools.islice(documents, block_docs - 1))
        if number % world_size == rank:
            yield number, block
        for _ in block:  # the rest of a block the caller skipped, or another rank's
            pass


def _corpus_rows(path: Path, problems: Problems, fmt: str, span: tuple[int, int] | None = None,
                 first_line: int = 1) -> Iterator[tuple[str, str, str, str]]:
    if not path.exists():
        raise SystemExit(f"{path}: no such corpus file or folder")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "text":
        raise SystemExit(f"{path}: not a corpus format this build reads; expected {CORPUS_FORMATS}")
    if fmt == "tsv":
        for lineno, line in _lines(path, problems, span, first_line):
            fields = tsv_fields(f"{path}:{lineno}", line, ("id", "text"), problems)
            if fields:
                yield f"{path}:{lineno}", fields[0], "", fields[1]
        return
    if span is not None:  # a block of a JSONL corpus
        for lineno, line in _lines(path, problems, span, first_line):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:  # the message of schema.iter_jsonl, which reads whole files
                problems.add("bad_line", f"{path}:{lineno}: invalid JSON: {err.msg} at column {err.colno}")
                continue
            row = _corpus_row(f"{path}:{lineno}", obj, problems)
            if row:
                yield row
        return
    try:
        for where, _, obj in iter_rows(path, bad=lambda message: problems.add("bad_line", message)):
            row = _corpus_row(where, obj, problems)
            if row:
                yield row
    except DataError as err:
        raise SystemExit(str(err)) from None


def _corpus_row(where: str, obj, problems: Problems) -> tuple[str, str, str, str] | None:
    if not isinstance(obj, dict):
        problems.add("bad_line", f"{where}: expected a JSON object with id and text, got {type(obj).__name__}")
        return None
    if "wikipedia_id" in obj:  # KILT knowledge source
        paragraphs = obj.get("text")
        if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
            problems.add("bad_line", f"{where}: field 'text': expected a list of paragraphs")
            return None
        # KILT's first paragraph repeats the title.
        body = "\n".join(p.strip() for p in paragraphs[1:] if p.strip())
        return where, str(obj["wikipedia_id"]), str(obj.get("wikipedia_title") or ""), body
    text = obj.get("text")
    if obj.get("id") is None or not isinstance(text, str) or not text.strip():
        problems.add("bad_line", f"{where}: fields 'id' and 'text' (a non-empty string) are required")
        return None
    return where, str(obj["id"]), str(obj.get("title") or ""), text


def chunk_passages(documents, tokenizer, max_tokens: int = 128) -> Iterator[Passage]:
    """Cut each document into passages of at most `max_tokens` tokens of `title\\ntext`; ids `docid-N`."""
    for doc_id, title, text in documents:
        prefix = len(tokenizer(f"{title}\n", add_special_tokens=False)["input_ids"]) if title else 0
        budget = max(16, max_tokens - prefix)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for n, start in enumerate(range(0, max(len(ids), 1), budget)):
            piece = tokenizer.decode(ids[start:start + budget]).strip()
            if piece:
                yield Passage(f"{doc_id}-{n}", title, piece)


def _rows(path: Path, fmt: str, split: str | None, problems: Problems) -> Iterator[tuple[str, object]]:
    """(where, row) of a `datasets` folder, JSONL, a JSON list, or a JSON document holding one (BioASQ's
    {"questions": [...]})."""
    try:
        for where, _, row in iter_rows(path, bad=lambda message: problems.add("bad_line", message), split=split):
            yield where, row
    except DataError as err:
        raise SystemExit(str(err)) from None


def read_queries(path: str | Path, problems: Problems, fmt: str = "auto", split: str | None = None) -> list[Query]:
    """All queries (a query list fits in memory: 893k queries are about 50 MB), with gold aliases if any."""
    from scaledown.build.sources import NAMES

    path = Path(path)
    if not path.exists():
        raise SystemExit(f"{path}: no such queries file or folder")
    kind = detect_format(path) if fmt in ("auto", *NAMES) else fmt
    if kind in ("text", "tsv"):
        found = (_text_query(path, kind, lineno, line, problems) for lineno, line in _lines(path, problems))
    else:
        row_format = fmt if fmt in NAMES else "auto"
        found = (_row_query(where, row, row_format, position, problems)
                 for position, (where, row) in enumerate(_rows(path, kind, split, problems)))
    queries, first_seen = [], {}
    for where, query in filter(None, found):
        if query.id in first_seen:
            raise SystemExit(f"{where}: query id {query.id!r} repeats the query at {first_seen[query.id]}")
        first_seen[query.id] = where
        queries.append(query)
    if not queries:
        bad = f"; {problems.counts.get('bad_line', 0)} bad lines, first: {problems.messages[0]}" \
            if problems.messages else ""
        raise SystemExit(f"{path}: no queries in this file{bad}")
    return queries


def _text_query(path: Path, kind: str, lineno: int, line: str, problems: Problems) -> tuple[str, Query] | None:
    where = f"{path}:{lineno}"
    if kind == "text":
        # The file's name and the line: chunks of one query list, built apart and merged, keep distinct ids.
        return where, Query(f"{path.name}:{lineno}", line.strip())
    fields = tsv_fields(where, line, ("qid", "query"), problems)
    return (where, Query(*fields)) if fields else None


def _row_query(where: str, row, fmt: str, position: int, problems: Problems) -> tuple[str, Query] | None:
    from scaledown.build.sources import convert

    try:
        qid, text, answers = convert(row, fmt, position)
    except DataError as err:
        problems.add("bad_line", f"{where}: {err}")
        return None
    try:
        check_unicode(text, where, "query")
        check_unicode(answers, where, "answers")
    except DataError as err:
        problems.add("bad_line", str(err))
        return None
    return where, Query(qid, text, answers)


def synthetic_queries(passages: Sequence[Passage], n: int, seed: int = 0) -> list[Query]:
    """Quick-test queries made from the corpus: a passage's title and a few of its words."""
    rng = random.Random(seed)
    picks = rng.sample(passages, min(n, len(passages)))
    out = []
    for i, p in enumerate(picks):
        words = p.text.split()
        start = rng.randrange(max(1, len(words) - 6))
        out.append(Query(f"syn-{i}", f"What about {p.title or 'this'}: {' '.join(words[start:start + 6])}?"))
    return out
