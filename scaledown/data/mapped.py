"""The training set on disk: per-rank host memory does not grow with the number of records.

Any source (JSONL, a JSON list, a `datasets` folder) is validated once, record by record with the file:line:field
errors of scaledown/data/schema.py, and written as one Arrow IPC file of normalised records next to it,
`<source>.records-<content hash>.arrow`, in record batches of 64 rows, with a small `.json` beside it (row count,
records without reranking scores). A changed source gets a new cache file; a damaged one is rebuilt; the
conversion runs on local rank 0 of each node while the others wait, and is written under a temporary name and
renamed.

`MappedRecords[i]` reads the one 64-row batch holding record i (Arrow's file reader: a positioned read of ~200 KB)
and builds that Record. The file stays in the page cache, shared by the ranks of a node; nothing is kept in the
process. Not a memory map: the kernel's read-ahead and fault-around map ~1 MB of a mapped file per random record
into the process (measured: 2,000 sampled records of a 0.3 GB file left 0.3 GB resident), so a rank's RSS would
grow to the whole file over an epoch.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pyarrow as pa

from scaledown.data.schema import DataError, Record, iter_rows, validated
from scaledown.log import EVERY_RANK, get_logger

log = get_logger(__name__)

SCHEMA = pa.schema([("id", pa.string()), ("query", pa.string()), ("documents", pa.list_(pa.string())),
                    ("answer", pa.string()), ("reranking_scores", pa.list_(pa.float64())),
                    ("gold_answers", pa.list_(pa.string())), ("extra", pa.string())])
BATCH = 64  # records per Arrow record batch: one random read per record fetches one batch


def content_fingerprint(source: str | Path) -> str:
    """xxh3-128 of the bytes of `source` (a file, or every file of a folder with its relative name): the training
    data's identity in its cache's name and in checkpoints, and each checkpoint file's checksum. A replaced file
    of the same size and timestamp gets another fingerprint; 0.3 s per GiB here (benchmarks/RESULTS.md)."""
    import xxhash

    source = Path(source)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    if not files:
        raise DataError(f"{source}: empty folder")
    digest = xxhash.xxh3_128()
    for path in files:
        digest.update(str(path.relative_to(source) if source.is_dir() else path.name).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def cache_path(source: str | Path, require_answer: bool = True, fingerprint: str | None = None) -> Path:
    """Where the validated Arrow copy of `source` lives: keyed by its content and whether the records were
    checked for answers (evaluation sets need none)."""
    source = Path(source)
    fingerprint = fingerprint or content_fingerprint(source)
    kind = "" if require_answer else "-unanswered"
    return source.with_name(f"{source.name}.records-{fingerprint[:24]}{kind}.arrow")


def usable(target: Path) -> str | None:
    """Why an existing cache cannot be read (truncated, damaged, its summary missing), or None when it can: the
    footer opens (a truncated file has none), the batch count fits the summary and the last batch reads."""
    try:
        summary = json.loads(summary_path(target).read_text())
        reader = pa.ipc.open_file(pa.OSFile(str(target)))
        rows, per_batch = summary["rows"], summary["batch_rows"]
        batches = -(-rows // per_batch)
        if reader.num_record_batches != batches:
            return f"{reader.num_record_batches} record batches, the summary says {batches}"
        if batches and reader.get_batch(batches - 1).num_rows != rows - (batches - 1) * per_batch:
            return "its last record batch does not hold the summary's rows"
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        return f"{type(err).__name__}: {err}"
    return None


def convert(source: str | Path, target: str | Path, require_answer: bool = True) -> int:
    """Validate every record of `source` once and write them to `target` (Arrow IPC file); returns the count.
    Holds one batch and the set of ids, never the records."""
    source, target = Path(source), Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{socket.gethostname()}-{os.getpid()}")  # unique across nodes
    count, missing, first_missing = 0, 0, None
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            for rec in validated(iter_rows(source), str(source), require_answer):
                if rec.reranking_scores is None:
                    missing, first_missing = missing + 1, first_missing or rec.id
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
        summary = {"rows": count, "batch_rows": BATCH, "missing_scores": missing, "first_missing": first_missing}
        tmp_summary = tmp.with_name(tmp.name + ".json")
        tmp_summary.write_text(json.dumps(summary))
        tmp_summary.replace(summary_path(target))
        tmp.replace(target)  # last: the Arrow file's presence marks the conversion complete
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".json").unlink(missing_ok=True)
    return count


def summary_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


class MappedRecords:
    """Validated records read from their Arrow cache one batch at a time; indexable by the sampler like a list."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.summary = json.loads(summary_path(self.path).read_text())
        self._reader, self._pid = None, None
        self.fingerprint: str | None = None  # the source's content_fingerprint (open_records sets it)

    def _batches(self):
        if self._pid != os.getpid():  # a DataLoader worker opens its own file: no shared file position
            self._reader, self._pid = pa.ipc.open_file(pa.OSFile(str(self.path))), os.getpid()
        return self._reader

    def __len__(self) -> int:
        return self.summary["rows"]

    def __getitem__(self, i: int) -> Record:
        if not 0 <= i < len(self):
            raise IndexError(i)
        batch, row = divmod(int(i), self.summary["batch_rows"])
        rec = self._batches().get_batch(batch).slice(row, 1).to_pylist()[0]
        extra = json.loads(rec["extra"]) if rec["extra"] else {}
        return Record(query=rec["query"], documents=rec["documents"], answer=rec["answer"],
                      reranking_scores=rec["reranking_scores"], id=rec["id"], gold_answers=rec["gold_answers"],
                      extra=extra)

    def missing_scores(self) -> tuple[int, str | None]:
        """How many records have no reranking_scores, and the first one's id (counted at conversion)."""
        return self.summary["missing_scores"], self.summary["first_missing"]


def text_lengths(records) -> list[int]:
    """Characters of each record's query and answer, what sets the length of its generator row (the documents are
    cut to model.max_doc_tokens): the sort key of data.group_by_length. A mapped set's two columns are read
    straight from its memory-mapped Arrow file, not record by record."""
    if not isinstance(records, MappedRecords):
        return [len(r.query) + len(r.answer or "") for r in records]
    import pyarrow.compute as pc

    lengths = []
    with pa.memory_map(str(records.path)) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            both = pc.add(pc.utf8_length(batch.column("query")), pc.utf8_length(batch.column("answer")).fill_null(0))
            lengths += both.to_pylist()
    return lengths


def open_records(source: str | Path, barrier=lambda: None, rank: int = 0, local_rank: int = 0,
                 require_answer: bool = True) -> MappedRecords:
    """The training set of `source`, converting it first when its cache is missing or stale. Rank 0 converts
    while the others wait; on a node-local file system (no cache visible after that), each node's local rank 0
    converts its own. A bad record fails every rank with the same file:line:field error, none is left waiting."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    fingerprint = content_fingerprint(source)
    target = cache_path(source, require_answer, fingerprint)
    error = target.with_name(target.name + ".error")
    if rank == 0 and target.exists() and (why := usable(target)):
        # A damaged cache (a crash of the file system, a copy cut short) is rebuilt, before any model loads.
        log.warning("%s: unreadable (%s); converting %s again", target, why, source, extra=EVERY_RANK)
        target.unlink()
    if rank == 0 and not target.exists():
        _convert_or_record(source, target, error, require_answer)
    barrier()
    if local_rank == 0 and not target.exists() and not error.exists():
        _convert_or_record(source, target, error, require_answer)
    barrier()
    if error.exists():
        raise DataError(error.read_text())
    records = MappedRecords(target)
    records.fingerprint = fingerprint
    return records


def _convert_or_record(source: Path, target: Path, error: Path, require_answer: bool) -> None:
    """Convert; a DataError is written where the other ranks read it (after the barrier), not raised here."""
    try:
        convert(source, target, require_answer)
        error.unlink(missing_ok=True)
    except DataError as err:
        error.write_text(str(err))
