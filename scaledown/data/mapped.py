"""The training set on disk, memory-mapped: per-rank host memory does not grow with the number of records.

Any source (JSONL, a JSON list, a `datasets` folder) is validated once, record by record with the file:line:field
errors of scaledown/data/schema.py, and written as one Arrow IPC file of normalised records next to it:
`<source>.records-<size>-<mtime>.arrow` (a folder source: its newest file's size and mtime). Training opens that
file memory-mapped (`datasets.Dataset.from_file`), so the ranks of a node share one copy in the page cache, and
`MappedRecords[i]` builds the one Record the sampler asks for. A changed source gets a new cache file; the
conversion runs on local rank 0 of each node while the others wait, and is written under a temporary name and
renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from scaledown.data.schema import DataError, Record, iter_rows, validate_record

SCHEMA = pa.schema([("id", pa.string()), ("query", pa.string()), ("documents", pa.list_(pa.string())),
                    ("answer", pa.string()), ("reranking_scores", pa.list_(pa.float64())),
                    ("gold_answers", pa.list_(pa.string())), ("extra", pa.string())])
BATCH = 4096  # records per Arrow record batch: bounds the converter's memory, not the reader's


def cache_path(source: str | Path, require_answer: bool = True) -> Path:
    """Where the validated Arrow copy of `source` lives: keyed by size, modification time and whether the
    records were checked for answers (evaluation sets need none)."""
    source = Path(source)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source}: empty folder")
    size = sum(p.stat().st_size for p in files)
    mtime = max(p.stat().st_mtime_ns for p in files)
    kind = "" if require_answer else "-unanswered"
    return source.with_name(f"{source.name}.records-{size}-{mtime}{kind}.arrow")


def convert(source: str | Path, target: str | Path, require_answer: bool = True) -> int:
    """Validate every record of `source` once and write them to `target` (Arrow IPC stream); returns the count.
    Holds one batch and the set of ids, never the records."""
    source, target = Path(source), Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    first_seen: dict[str, str] = {}
    count = 0
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            for where, position, obj in iter_rows(source):
                rec = validate_record(obj, where, require_answer, default_id=str(position))
                if rec.id in first_seen:
                    raise DataError(f"{where}: field 'id': {rec.id!r} repeats the record at {first_seen[rec.id]}")
                first_seen[rec.id] = where
                for name, value in (("id", rec.id), ("query", rec.query), ("documents", rec.documents),
                                    ("answer", rec.answer), ("reranking_scores", rec.reranking_scores),
                                    ("gold_answers", rec.gold_answers),
                                    ("extra", json.dumps(rec.extra) if rec.extra else None)):
                    columns[name].append(value)
                count += 1
                if len(columns["id"]) == BATCH:
                    writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
                    columns = {name: [] for name in SCHEMA.names}
            if columns["id"]:
                writer.write_batch(pa.record_batch(columns, schema=SCHEMA))
        if not count:
            raise DataError(f"{source}: no records")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return count


class MappedRecords:
    """Validated records, memory-mapped from their Arrow cache; indexable by the sampler like a list."""

    def __init__(self, path: str | Path):
        import datasets

        self.path = Path(path)
        self.table = datasets.Dataset.from_file(str(self.path), in_memory=False)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> Record:
        row = self.table[int(i)]
        extra = json.loads(row["extra"]) if row["extra"] else {}
        return Record(query=row["query"], documents=row["documents"], answer=row["answer"],
                      reranking_scores=row["reranking_scores"], id=row["id"], gold_answers=row["gold_answers"],
                      extra=extra)

    def missing_scores(self) -> tuple[int, str | None]:
        """How many records have no reranking_scores, and the first one's id (Arrow's null count: no scan in
        Python)."""
        column = self.table.data.column("reranking_scores")
        if not column.null_count:
            return 0, None
        first = next(i for i, chunk_valid in enumerate(column.is_null().to_pylist()) if chunk_valid)
        return column.null_count, self.table[first]["id"]


def open_records(source: str | Path, barrier=lambda: None, local_rank: int = 0,
                 require_answer: bool = True) -> MappedRecords:
    """The memory-mapped training set of `source`, converting it first when its cache is missing or stale.
    `barrier` synchronises the ranks: local rank 0 converts, every rank opens after it."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    target = cache_path(source, require_answer)
    if local_rank == 0 and not target.exists():
        convert(source, target, require_answer)
    barrier()
    return MappedRecords(target)
