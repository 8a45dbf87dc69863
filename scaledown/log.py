"""The project's own log lines: the `logging` module, one format (time, level, rank, module), rank 0 only unless
a line says `extra=EVERY_RANK`. Command output (tables, JSON results, "wrote ...") stays print on stdout; progress
bars stay tqdm. The level: `--log_level` of `scaledown` / the launchers, or SCALEDOWN_LOG_LEVEL (default INFO).

    from scaledown.log import EVERY_RANK, get_logger
    log = get_logger(__name__)
    log.info("resume from %s", folder)                       # rank 0
    log.info("rank %d on %s", rank, host, extra=EVERY_RANK)    # every rank
"""

from __future__ import annotations

import logging
import os
import sys

EVERY_RANK = {"every_rank": True}


class _Stderr(logging.StreamHandler):
    """sys.stderr as it is at each line (pytest and notebooks swap it), not as it was at start-up."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Ranks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = os.environ.get("RANK", "0")
        return getattr(record, "every_rank", False) or record.rank == "0"


def get_logger(name: str) -> logging.Logger:
    root = logging.getLogger("scaledown")
    if not root.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [rank %(rank)s] %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        handler.addFilter(_Ranks())
        root.addHandler(handler)
        root.propagate = False
        if root.level == logging.NOTSET:  # not set by --log_level already
            set_level(os.environ.get("SCALEDOWN_LOG_LEVEL", "INFO"))
    return logging.getLogger(name)


def set_level(level: str) -> None:
    name = level.upper()
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SystemExit(f"--log_level {level}: expected debug, info, warning, error or critical")
    logging.getLogger("scaledown").setLevel(name)


def pop_log_level(argv: list[str]) -> list[str]:
    """Take `--log_level X` / `--log_level=X` out of a command line and apply it; the rest is returned."""
    out, i = [], 0
    while i < len(argv):
        flag, sep, value = argv[i].partition("=")
        if flag in ("--log_level", "--log-level"):
            if not sep:
                if i + 1 >= len(argv):
                    raise SystemExit(f"{flag} needs a value")
                value, i = argv[i + 1], i + 1
            set_level(value)
        else:
            out.append(argv[i])
        i += 1
    return out


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar on rank 0 when stderr is a terminal; the bare iterable elsewhere (Slurm .out files, pipes)."""
    if os.environ.get("RANK", "0") != "0" or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)
