"""The one answer-slot rule (issue 20, item 3 and 4): what a model wrote after the cue, read the same
way for a_full and for every variant, and the gold answer written in a_full's own format."""

from __future__ import annotations

import pytest

from faithcb.answers import SlotReading, answer_in_format, extract_answer, read_answer_slot


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\n72\n", "72"),
        ("\n\n72.\n", "72"),
        (":\n\n**72**\n", "72"),
        ("  \n  \n 72 apples\n", "72"),
        ("\n\n$1,250.\n", "1250"),
    ],
)
def test_an_answer_on_a_new_line_is_read(text: str, expected: str) -> None:
    """Blank lines (and lines of markup or a colon) before the answer are skipped; they used to
    leave the slot empty (unparsed, and a variant's disagreement)."""
    assert read_answer_slot(text).answer == expected
    assert extract_answer(text, after_cue=True) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        (" 3/4 of 12 = 9", "computed"),
        (" 50% of 40 = 20", "computed"),
        (" 50 percent of 40", "computed"),
        (" 12 dollars and 50 cents", "ambiguous"),
        (" 2 and a half", "ambiguous"),
        (" 1.5 million", "ambiguous"),
        (" 2 dozen", "ambiguous"),
        (" 100 000", "ambiguous"),
        (" 3e5", "ambiguous"),
    ],
)
def test_forms_whose_first_number_is_not_the_answer_are_unparsed(text: str, reason: str) -> None:
    """They read 0.75, 50, 12, 1.5, 100 and 3 before: better unparsed (and counted) than wrong."""
    reading = read_answer_slot(text + ".\n")
    assert reading.answer is None and reading.reason == reason
    assert extract_answer(text, after_cue=True) is None


@pytest.mark.parametrize(
    "text",
    [" 72", " 72 apples", " 18 dollars per 2 days", " 72 (48 + 24).", " 12 hours, or 720 minutes", " 72-year-old",
     " 2 1/2 miles", " 12 of them"],
)
def test_the_first_number_still_reads_where_it_is_the_answer(text: str) -> None:
    assert read_answer_slot(text + "\n").answer is not None and read_answer_slot(text + "\n").reason is None


@pytest.mark.parametrize(
    "window, expected, reason",
    [
        # the first number runs into the end of the window: it may be a prefix
        (" 1,250,0", None, "cut"),
        (" 1,250", None, "cut"),
        (" 72", None, "cut"),
        (" 72.", None, "cut"),  # may go on as 72.5
        (" 100 0", None, "cut"),
        (" 3e", None, "cut"),
        (" 1.5 mil", None, "cut"),
        (" 12 dollars and", None, "cut"),
        ("\n", None, "cut"),
        ("\n\n", None, "cut"),
        # the first number is complete: the window's end does not matter
        (" 72 apples because he bought", "72", None),
        (" 72 (48 +", "72", None),
        ("\n\n72. Then he", "72", None),
        (" 9 * 2 = 1", None, "computed"),
    ],
)
def test_a_window_is_cut_only_where_its_first_number_runs_into_its_end(window, expected, reason) -> None:
    """One rule for a_full and every variant: " 1,250,0" was read 1250 for a variant (a false
    agreement with a_full 1250) while a_full without its terminator was always unparsed."""
    reading = read_answer_slot(window, ended=False)
    assert (reading.answer, reading.reason) == (expected, reason)


def test_the_same_window_with_its_terminator_reads_whole() -> None:
    assert read_answer_slot(" 1,250,000\n", ended=True).answer == "1250000"
    assert read_answer_slot(" 72.", ended=True).answer == "72"


@pytest.mark.parametrize(
    "a_full, gold, expected",
    [
        (" 68.\n", "72", " 72.\n"),
        ("\n\n**68**\n", "72", "\n\n**72**\n"),
        (" $1,150.\n", "1250", " $1,250.\n"),
        (" 68 apples\n", "72", " 72 apples\n"),
        (" 72.\n", "72", " 72.\n"),
    ],
)
def test_the_gold_answer_is_written_in_a_full_s_format(a_full: str, gold: str, expected: str) -> None:
    assert answer_in_format(a_full, read_answer_slot(a_full), gold) == expected


def test_no_format_without_a_place_for_the_answer() -> None:
    assert answer_in_format(" ??\n", read_answer_slot(" ??\n"), "72") is None
    assert answer_in_format(" x", SlotReading("7"), "72") is None
