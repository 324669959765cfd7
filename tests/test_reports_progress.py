"""Progress of long jobs (ser_batch/reports/progress.py): plain lines when stderr is not a terminal."""

from __future__ import annotations

import pytest

from ser_batch.reports import progress


def test_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    bar = progress.progress_bar(total=3, desc="score", enabled=True)
    assert isinstance(bar, progress.PlainProgress)  # capsys's stderr is no terminal
    for _ in range(3):
        bar.update(1)
        bar.set_postfix_str("0.01 h audio", refresh=False)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "score: 1/3 files (33%), 0 s"
    assert lines[-1] == "score: 3/3 files (100%), 0.01 h audio, 0 s" and len(lines) == 3


def test_plain_lines_come_every_few_seconds_and_not_at_all_when_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress.progress_bar(total=100, desc="extract", enabled=True, every_s=3600)
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""  # a run shorter than the interval prints no line
    quiet = progress.progress_bar(total=2, desc="score", enabled=False)
    quiet.update(2)
    quiet.close()
    announced = progress.progress_bar(total=2, desc="train", enabled=True, unit="model", every_s=0, announce=True)
    announced.close()
    assert capsys.readouterr().err == "train: 0/2 models (0%), 0 s\n"
