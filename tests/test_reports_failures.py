"""Tests for :mod:`ser_batch.reports.failures`: the failed-files report every job prints."""

from __future__ import annotations

import pytest

from ser_batch.reports.failures import SHOWN, counted, format_failures


@pytest.mark.parametrize(("n", "expected"), [(0, "0 files"), (1, "1 file"), (2, "2 files")])
def test_counted(n: int, expected: str) -> None:
    assert counted(n, "file") == expected


def test_counted_irregular_plural() -> None:
    assert counted(1, "class", "classes") == "1 class" and counted(3, "class", "classes") == "3 classes"


def test_nothing_failed_is_empty() -> None:
    assert format_failures([], total=10) == ""
    assert format_failures([], total=10, failed=0) == ""


def test_one_of_several() -> None:
    assert format_failures([("a/b.wav", "empty file")], total=3) == "1 of 3 files failed:\n  a/b.wav: empty file"


def test_singular_and_all() -> None:
    assert format_failures([("x.wav", "broken link")], total=1) == "1 file failed:\n  x.wav: broken link"
    text = format_failures([("x.wav", "broken link"), ("y.wav", "empty file")], total=2)
    assert text.splitlines()[0] == "all 2 files failed:"


def test_more_than_shown_says_where_the_rest_are() -> None:
    pairs = [(f"{i}.wav", "empty file") for i in range(8)]
    lines = format_failures(pairs, total=1200, where="the `error` column of out").splitlines()
    assert lines[0] == f"8 of 1200 files failed; the first {SHOWN}:"
    assert lines[1:-1] == [f"  {i}.wav: empty file" for i in range(SHOWN)]
    assert lines[-1] == "  ... and 3 more: every failed file and its reason is in the `error` column of out"


def test_only_the_first_few_given_with_the_total_failed() -> None:
    # A job keeps just the first few pairs and passes the count of all failures.
    lines = format_failures([("a.wav", "x"), ("b.wav", "y")], total=50, failed=9, shown=2).splitlines()
    assert lines == ["9 of 50 files failed; the first 2:", "  a.wav: x", "  b.wav: y",
                     "  ... and 7 more: every failed file and its reason is in the `error` column of the output"]


def test_one_more_is_singular_too() -> None:
    lines = format_failures([(f"{i}.wav", "x") for i in range(3)], total=9, shown=2).splitlines()
    assert lines[-1].startswith("  ... and 1 more:")


def test_no_pairs_but_a_count() -> None:
    assert format_failures([], total=5, failed=2, where="W") == "2 of 5 files failed: see W"
