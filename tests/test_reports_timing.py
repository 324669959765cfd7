"""One definition of the run figures: the whole command's time, Ray start included and labelled."""

from __future__ import annotations

from pathlib import Path

from ser_batch.models.training_overlap import TrainingOverlap
from ser_batch.pipeline.extract import ExtractSummary
from ser_batch.pipeline.score import ScoreSummary
from ser_batch.reports import timing


def test_realtime_factor_divides_by_the_whole_command() -> None:
    assert timing.realtime_factor(630.0, 14.7) == 630.0 / 14.7
    assert timing.realtime_factor(630.0, 0.0) == 0.0
    assert timing.per_core_factor(630.0, 2.0) == 315.0
    assert timing.timing(14.7, 9.1, 630.0) == "in 14.7 s (43x realtime over the whole run incl. Ray start 9.1 s)"
    assert timing.timing(0.4, None, 0.0) == "in 0.4 s (0x realtime over the whole run)"
    assert timing.timing(3.0, None) == "in 3.0 s"


def test_score_and_extract_lines_say_the_same_thing() -> None:
    score = ScoreSummary(out=Path("out"), files_scored=2, audio_s=630.0, wall_s=14.7, ray_start_s=9.1)
    assert score.line() == ("2 files scored (0 already done), 0 errors, 0.17 h of audio in 14.7 s "
                            "(43x realtime over the whole run incl. Ray start 9.1 s) -> out")
    extract = ExtractSummary(Path("out"), 1200, 0, 38, 0, 13.5, ray_start_s=4.1)
    assert extract.line() == ("1200 files, 0 errors, 38 parts in 13.5 s (88.9 files/s over the whole run "
                              "incl. Ray start 4.1 s) -> out")


def test_overlap_note_comes_first_and_only_when_there_is_one() -> None:
    score = ScoreSummary(out=Path("out"), files_total=3,
                         training_overlap=TrainingOverlap(files=2, by_path=2, by_content=0, total=3))
    assert score.notes() == [("2 of 3 files were in the bundle's training data (by path): their labels say nothing "
                              "about accuracy")]
    assert ScoreSummary(out=Path("out"), training_overlap=TrainingOverlap(total=3)).notes() == []
