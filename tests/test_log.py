"""The project's log lines: timestamped, rank 0 unless marked for every rank, level from --log_level."""

import re

import pytest

from scaledown.log import EVERY_RANK, get_logger, pop_log_level


def test_rank_zero_by_default_every_rank_when_marked_and_the_level_flag(monkeypatch, capsys):
    log = get_logger("scaledown.test")
    monkeypatch.setenv("RANK", "1")
    log.info("only rank 0")
    log.info("from every rank", extra=EVERY_RANK)
    monkeypatch.setenv("RANK", "0")
    log.info("rank zero speaks")
    err = capsys.readouterr().err
    assert "only rank 0" not in err
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO \[rank 1\] scaledown.test: from every rank$", err, re.M)
    assert "[rank 0] scaledown.test: rank zero speaks" in err
    try:
        assert pop_log_level(["--x=1", "--log_level", "warning", "--y"]) == ["--x=1", "--y"]
        log.info("hidden at warning")
        log.warning("shown at warning")
        err = capsys.readouterr().err
        assert "hidden" not in err and "shown at warning" in err
        with pytest.raises(SystemExit, match="--log_level loud"):
            pop_log_level(["--log_level=loud"])
    finally:
        pop_log_level(["--log_level=info"])
