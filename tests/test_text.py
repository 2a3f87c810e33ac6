"""Pure string logic: step splitting, answer extraction and normalization (milliseconds)."""

from __future__ import annotations

import re

import pytest

from faithcb.answers import (
    answer_is_computation,
    extract_answer,
    normalize_answer,
    normalize_choice,
    normalize_number,
    normalize_text,
    numbers_in,
)
from faithcb.steps import answer_statement_spans, locate_steps, split_steps, states_answer, step_spans

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

SPLIT_CASES = [
    # (id, chain, expected steps)
    ("empty", "", []),
    ("whitespace", "  \n\n \t ", []),
    ("one sentence", "Tom has 8 apples.", ["Tom has 8 apples."]),
    ("sentences", "Tom has 8. He gets 8 more. Now 16.", ["Tom has 8.", "He gets 8 more.", "Now 16."]),
    ("exclamation and question", "Wait! Is it 5? Yes.", ["Wait!", "Is it 5?", "Yes."]),
    ("line breaks", "a = 1\nb = 2\r\nc = 3", ["a = 1", "b = 2", "c = 3"]),
    ("blank lines dropped", "First step.\n\n\n   \nSecond step.", ["First step.", "Second step."]),
    ("decimal", "It costs 3.5 dollars. Then 2.", ["It costs 3.5 dollars.", "Then 2."]),
    ("money", "She pays $1.50 each. Total $4.50.", ["She pays $1.50 each.", "Total $4.50."]),
    ("thousands", "He earns 1,000 dollars. Then 2,500.", ["He earns 1,000 dollars.", "Then 2,500."]),
    ("decimal at sentence end", "The price is $1.50. Next.", ["The price is $1.50.", "Next."]),
    ("e.g.", "Use fruit, e.g. Apples are 3. Done.", ["Use fruit, e.g. Apples are 3.", "Done."]),
    ("i.e.", "Half, i.e. 24 clips. Done.", ["Half, i.e. 24 clips.", "Done."]),
    ("Mr. Dr.", "Mr. Smith met Dr. Jones. They paid 5.", ["Mr. Smith met Dr. Jones.", "They paid 5."]),
    ("vs.", "Cats vs. Dogs is 3 vs. 4. Next.", ["Cats vs. Dogs is 3 vs. 4.", "Next."]),
    ("etc. lowercase", "Apples, pears, etc. are fruit. Next.", ["Apples, pears, etc. are fruit.", "Next."]),
    ("etc. then capital", "Apples, pears, etc. Then stop.", ["Apples, pears, etc.", "Then stop."]),
    ("lowercase continues", "x = 5. so y = 6.", ["x = 5. so y = 6."]),
    ("numbered list", "1. Buy 3 pens.\n2. Sell 1 pen.", ["1. Buy 3 pens.", "2. Sell 1 pen."]),
    ("numbered list one line", "1. Buy 3 pens. 2. Sell 1.", ["1. Buy 3 pens.", "2.", "Sell 1."]),
    ("paren list", "1) Buy 3 pens.\n2) Sell 1 pen.", ["1) Buy 3 pens.", "2) Sell 1 pen."]),
    ("letter list", "A. 600 miles\nB. 700 miles", ["A. 600 miles", "B. 700 miles"]),
    ("step marker", "Step 1. Add 2 and 3.\nStep 2. Get 5.", ["Step 1. Add 2 and 3.", "Step 2. Get 5."]),
    ("quote closes", 'He said "stop." Then left.', ['He said "stop."', "Then left."]),
    ("paren closes", "It is 5 (or so.) Then 6.", ["It is 5 (or so.)", "Then 6."]),
    (
        "gsm8k",
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
        [
            "Natalia sold 48/2 = 24 clips in May.",
            "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
        ],
    ),
    (
        "gsm8k money",
        "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10",
        ["Weng earns 12/60 = $0.2 per minute.", "Working 50 minutes, she earned 0.2 x 50 = $10.\n#### 10"],
    ),
    (
        "answer sentence merged",
        "8 + 8 = 16. 16 - 2 = 14. The answer is 14.",
        ["8 + 8 = 16.", "16 - 2 = 14. The answer is 14."],
    ),
    ("so the answer", "16 - 2 = 14.\nSo the answer is 14", ["16 - 2 = 14.\nSo the answer is 14"]),
    (
        "boxed",
        "2 + 2 = 4.\nTherefore, the final answer is \\boxed{4}.",
        ["2 + 2 = 4.\nTherefore, the final answer is \\boxed{4}."],
    ),
    ("answer colon", "The speed is 600.\nAnswer: C", ["The speed is 600.\nAnswer: C"]),
    (
        "two answer lines",
        "3 + 4 = 7.\nThe answer is 7.\n#### 7",
        ["3 + 4 = 7.\nThe answer is 7.\n#### 7"],
    ),
    ("answer only", "The answer is 72.", ["The answer is 72."]),
    ("answer only hashes", "#### 72", ["#### 72"]),
    ("answer only two lines", "#### 72\nThe answer is 72.", ["#### 72\nThe answer is 72."]),
    (
        "answer first joins next",
        "The answer is 7. Because 3 + 4 = 7.",
        ["The answer is 7. Because 3 + 4 = 7."],
    ),
    ("answer mid-sentence not split", "We know the answer is 5 so far.", ["We know the answer is 5 so far."]),
    ("ellipsis", "Hmm... Let me think.", ["Hmm...", "Let me think."]),
    ("leading whitespace", "   Tom has 8.   He eats 2.  ", ["Tom has 8.", "He eats 2."]),
    (
        "synthetic chain",
        "Tom starts with 8. 8 + 8 = 16. 16 - 2 = 14. The answer is 14.",
        ["Tom starts with 8.", "8 + 8 = 16.", "16 - 2 = 14. The answer is 14."],
    ),
    # <think> tags end a step like a line break and are never a step themselves; an answer line
    # after </think> merges into the last reasoning step (the tag between them stays inside it).
    (
        "think tags",
        "<think>\nTom has 8. He eats 2.\n</think>\nThe answer is 6.",
        ["Tom has 8.", "He eats 2.\n</think>\nThe answer is 6."],
    ),
    ("think tags inline", "<think>Tom has 8. He eats 2.</think>", ["Tom has 8.", "He eats 2."]),
    ("think tag splits", "Tom has 8.</think>He eats 2", ["Tom has 8.", "He eats 2"]),
    ("think tag after step", "<think>\nAdd 3 and 4.\n</think>\n3 + 4 = 7.", ["Add 3 and 4.", "3 + 4 = 7."]),
    ("think tags only", "<think>\n</think>", []),
    ("think then answer only", "<think>\n</think>\nThe answer is 6.", ["The answer is 6."]),
    ("think tag uppercase", "<THINK>Tom has 8.", ["Tom has 8."]),
    # A sentence that declares the answer in a box is an answer line; one that computes the boxed
    # number (a digit before the box) is reasoning.
    (
        "boxed answer line",
        "She eats 3 of 4 slices.\nSo the result is \\boxed{\\frac{3}{4}}.",
        ["She eats 3 of 4 slices.\nSo the result is \\boxed{\\frac{3}{4}}."],
    ),
    (
        "boxed answer line in math",
        "Add 3 and 4. Thus, $x = \\boxed{7}$.",
        ["Add 3 and 4. Thus, $x = \\boxed{7}$."],
    ),
    (
        "boxed computation stays a step",
        "Add them.\nThen 48 + 24 = \\boxed{72}.",
        ["Add them.", "Then 48 + 24 = \\boxed{72}."],
    ),
    # A last sentence whose only number is the previous step's result restates it: folded.
    (
        "restated result folds",
        "48/2 = 24 clips.\n48 + 24 = 72 clips in total.\nSo Natalia sold 72 clips.",
        ["48/2 = 24 clips.", "48 + 24 = 72 clips in total.\nSo Natalia sold 72 clips."],
    ),
    (
        "restated result before answer line",
        "Tom has 8. 8 + 8 = 16. So 16. The answer is 16.",
        ["Tom has 8.", "8 + 8 = 16. So 16. The answer is 16."],
    ),
    (
        "new result is a step",
        "Tom has 8. He eats 2. So he has 6 left.",
        ["Tom has 8.", "He eats 2.", "So he has 6 left."],
    ),
    (
        "earlier number is not the result",
        "He had 8 and ate 2. So he has 8 left.",
        ["He had 8 and ate 2.", "So he has 8 left."],
    ),
    (
        "restatement only folds last",
        "2 + 3 = 5. So 5. Then 5 + 1 = 6.",
        ["2 + 3 = 5.", "So 5.", "Then 5 + 1 = 6."],
    ),
]


@pytest.mark.parametrize("chain, expected", [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_split_steps(chain: str, expected: list[str]) -> None:
    assert split_steps(chain) == expected


@pytest.mark.parametrize("chain", [c[1] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_step_spans_are_stripped_ordered_and_disjoint(chain: str) -> None:
    spans = step_spans(chain)
    prev_end = 0
    for start, end in spans:
        assert prev_end <= start < end <= len(chain)
        piece = chain[start:end]
        assert piece == piece.strip() and piece
        prev_end = end
    assert [chain[a:b] for a, b in spans] == split_steps(chain)
    # Nothing but whitespace and <think> tags is ever left out.
    tags = {i for m in re.finditer(r"</?think>", chain, re.IGNORECASE) for i in range(m.start(), m.end())}
    covered = set().union(*(range(a, b) for a, b in spans)) if spans else set()
    assert all(chain[i].isspace() or i in tags for i in range(len(chain)) if i not in covered)
    # A tag never starts or ends a step.
    assert not any(a in tags or b - 1 in tags for a, b in spans)


LOCATE_CASES = [
    ("exact", "A b. C d.", ["A b.", "C d."], [(0, 4), (5, 9)]),
    ("stripped", "A b.  C d.", [" A b. ", "\nC d."], [(0, 4), (6, 10)]),
    ("whitespace differs", "A  b.\nC\td.", ["A b.", "C d."], [(0, 5), (6, 10)]),
    ("repeated text found in order", "x = 1. x = 1.", ["x = 1.", "x = 1."], [(0, 6), (7, 13)]),
    ("empty step skipped", "A. B.", ["A.", "  ", "B."], [(0, 2), (3, 5)]),
]


@pytest.mark.parametrize(
    "chain, steps, expected", [c[1:] for c in LOCATE_CASES], ids=[c[0] for c in LOCATE_CASES]
)
def test_locate_steps(chain: str, steps: list[str], expected: list[tuple[int, int]]) -> None:
    assert locate_steps(chain, steps) == expected


@pytest.mark.parametrize(
    "chain, steps, named",
    [
        ("A b. C d.", ["A b.", "Z z."], "Z z."),
        ("A b. C d.", ["C d.", "A b."], "A b."),  # out of order
    ],
)
def test_locate_steps_missing_names_step(chain: str, steps: list[str], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        locate_steps(chain, steps)


def test_locate_steps_round_trips_builtin_splitter() -> None:
    chain = "Natalia sold 24 clips in May.\nShe sold 72 in all.\n#### 72"
    assert locate_steps(chain, split_steps(chain)) == step_spans(chain)


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

NUMBER_CASES = [
    ("72", "72"),
    ("72.0", "72"),
    ("72.", "72"),
    ("0.50", "0.5"),
    (".5", "0.5"),
    ("-3", "-3"),
    ("-3.0", "-3"),
    ("$1,500.00", "1500"),
    ("1,000,000", "1000000"),
    ("$ 12", "12"),
    ("-$3.50", "-3.5"),
    ("50%", "50"),
    ("14 coins", "14"),
    ("14 coins.", "14"),
    ("about 14 dollars per hour", "14"),
    ("3/4", "0.75"),
    ("6/2", "3"),
    ("1/3", "0.333333"),
    ("1/0", None),
    ("16 - 2 = 14", "14"),
    ("16-2=14", "14"),
    ("48/2 = 24", "24"),
    ("0.2 x 50 = $10", "10"),
    ("1,2,3", "3"),
    ("1,250,000", "1250000"),
    # mixed numbers: 2 + 1/2 = 5/2; a sign applies to the whole; only a proper fraction joins
    ("2 1/2", "2.5"),
    ("2 1/2 miles", "2.5"),
    ("-2 1/2", "-2.5"),
    ("3 24/2", "12"),
    ("3 1/2 + 1", "1"),
    # LaTeX fractions
    ("\\frac{3}{4}", "0.75"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\tfrac{1}{3}", "0.333333"),
    ("\\frac34", "0.75"),
    ("-\\frac{3}{4}", "-0.75"),
    ("\\frac{-3}{4}", "-0.75"),
    ("2\\frac{1}{2}", "2.5"),
    ("\\frac{1}{0}", None),
    ("007", "7"),
    ("", None),
    ("no number here", None),
    ("fourteen", None),
    ("$", None),
]


@pytest.mark.parametrize("text, expected", NUMBER_CASES)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("16 - 2 = 14", ["16", "2", "14"]),
        ("He paid $1,500.00 for 3.50 kg", ["1500", "3.5"]),
        ("Take 3/4 of 8, i.e. 6.", ["0.75", "8", "6"]),
        ("x = -4 and 2-1", ["-4", "2", "1"]),
        ("Walk 2 1/2 miles in 3 hours", ["2.5", "3"]),
        ("3 24/2 and 2  1/3", ["3", "12", "2.333333"]),
        ("Take \\frac{3}{4} of 8", ["0.75", "8"]),
        ("none", []),
    ],
)
def test_numbers_in(text: str, expected: list[str]) -> None:
    assert numbers_in(text) == expected


# ---------------------------------------------------------------------------------------------
# Choices and text
# ---------------------------------------------------------------------------------------------

CHOICE_CASES = [
    ("(C)", 5, "C"),
    ("C)", 5, "C"),
    ("C", 5, "C"),
    ("c", 5, "C"),
    (" c ", 5, "C"),
    ("C.", 5, "C"),
    ("C. 600", 5, "C"),
    ("C) 600", 5, "C"),
    ("(C) 600 miles", 5, "C"),
    ("C 600", 5, "C"),
    ("[B]", 5, "B"),
    ("Answer: C", 5, "C"),
    ("answer: c", 5, "C"),
    ("the answer is (c)", 5, "C"),
    ("The correct answer is B.", 5, "B"),
    ("\\boxed{D}", 5, "D"),
    ("(C", 5, "C"),
    ("E", 5, "E"),
    ("F", 5, None),
    ("(F)", 6, "F"),
    ("E", 4, None),
    ("a cat", 5, None),
    ("I think so", 5, None),
    ("", 5, None),
    ("600", 5, None),
]


@pytest.mark.parametrize("text, n_choices, expected", CHOICE_CASES)
def test_normalize_choice(text: str, n_choices: int, expected: str | None) -> None:
    assert normalize_choice(text, n_choices) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Paris", "paris"),
        ("  The Eiffel  Tower! ", "eiffel tower"),
        ("an apple, a pear", "apple pear"),
        ("It's 5 o'clock.", "it s 5 o clock"),
        ("“Quoted”", "quoted"),
        ("", None),
        ("  ...  ", None),
        ("the", None),
    ],
)
def test_normalize_text(text: str, expected: str | None) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("$72.00", "number", "72"),
        ("(c)", "choice", "C"),
        ("The Answer", "text", "answer"),
        ("nothing", "number", None),
    ],
)
def test_normalize_answer_dispatch(text: str, kind: str, expected: str | None) -> None:
    assert normalize_answer(text, kind) == expected


@pytest.mark.parametrize("fn", [normalize_answer, extract_answer])
def test_unknown_kind_raises(fn) -> None:
    with pytest.raises(ValueError, match="unknown answer kind 'letter'"):
        fn("C", "letter")


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

EXTRACT_CASES = [
    # (text, kind, expected)
    # continuations after an answer cue
    (" 14.", "number", "14"),
    (" 14 coins", "number", "14"),
    (" 14", "number", "14"),
    ("$1,500.00", "number", "1500"),
    (" $1,500.00.", "number", "1500"),
    (" 72.0", "number", "72"),
    (" 3/4", "number", "0.75"),
    (" -5 degrees", "number", "-5"),
    (" C)", "choice", "C"),
    ("C) 600", "choice", "C"),
    ("C", "choice", "C"),
    ("(C) 600", "choice", "C"),
    ("c) six hundred", "choice", "C"),
    (" Paris.\nThen more", "text", "paris"),
    # whole chains
    ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72", "number", "72"),
    ("She pays 5 + 7 = 12.\n#### $1,200", "number", "1200"),
    ("8 + 8 = 16. 16 - 2 = 14. The answer is 14.", "number", "14"),
    ("The answer is 14. Then I checked: 14 + 1 = 15.", "number", "14"),
    ("The answer is 12. Wait, the answer is 13.", "number", "13"),
    ("So the final answer is $\\boxed{72}$.", "number", "72"),
    ("We get \\boxed{\\frac{3}{4}} hmm", "number", "0.75"),
    ("Therefore, the final answer is \\boxed{72}", "number", "72"),
    ("The answer is: 3.50 dollars", "number", "3.5"),
    ("Final Answer: 42", "number", "42"),
    ("16 - 2 = 14 coins left", "number", "14"),
    ("1+1 = 2", "number", "2"),
    ("8 + 8 = 16.\n16 - 2 = 14 coins left", "number", "14"),
    ("Tom has 8. He eats 2. So 6 are left.", "number", "6"),
    ("The speed is 600.\nAnswer: C", "choice", "C"),
    ("So the answer is (B).", "choice", "B"),
    ("The answer is C) 600.", "choice", "C"),
    ("\\boxed{E}", "choice", "E"),
    ("The answer is the Eiffel Tower.", "text", "eiffel tower"),
    ("#### 72\nThe answer is 5.", "number", "72"),
    # the answer after a cue or marker is the first number written there
    (" 18 dollars per 2 days", "number", "18"),
    (" 72 (48 + 24).", "number", "72"),
    (" 12 hours, or 720 minutes", "number", "12"),
    (" 12 hours. That is 720 minutes.", "number", "12"),
    (" - 7.", "number", "-7"),
    (" \u2212 7", "number", "-7"),
    (" 2 1/2 miles", "number", "2.5"),
    (" -2 1/2", "number", "-2.5"),
    (" \\boxed{\\frac{3}{4}}", "number", "0.75"),
    (" \\boxed{\\dfrac{3}{4}}", "number", "0.75"),
    (" $\\dfrac{3}{4}$", "number", "0.75"),
    (" 1,250,000", "number", "1250000"),
    (" **72** clips", "number", "72"),
    (" 72-year-old", "number", "72"),
    ("\\boxed{18 \\text{ dollars per } 2 \\text{ days}}", "number", "18"),
    ("The answer is 72 (48 + 24).", "number", "72"),
    ("The final answer is 18 dollars per 2 days.", "number", "18"),
    ("The answer is - 7.", "number", "-7"),
    ("Answer: 12 hours, or 720 minutes", "number", "12"),
    ("#### 2 1/2", "number", "2.5"),
    ("So 16 - 2 = 14.\nThe answer is 14 (16 - 2).", "number", "14"),
    # unparsable -> None, never a guess
    ("", "number", None),
    ("I don't know", "number", None),
    ("The answer is fourteen. Earlier I had 3 apples.", "number", None),
    ("#### none", "number", None),
    ("\\boxed{}", "number", None),
    # an answer slot holding a computation or a time has no single answer
    (" 9 * 2 = 18", "number", None),
    (" 48 + 24 = 72", "number", None),
    (" 3:30", "number", None),
    (" (48 + 24) = 72", "number", None),
    (" 16 - 2 = 14 coins left", "number", None),  # the leading space: decoded after the cue
    ("The answer is 9 * 2 = 18.", "number", None),
    ("\\boxed{48 + 24 = 72}", "number", None),
    (" six hundred", "choice", None),
    (" F)", "choice", None),
    ("The answer is (F).", "choice", None),
    ("", "text", None),
    ("  \n ", "text", None),
]


@pytest.mark.parametrize("text, kind, expected", EXTRACT_CASES)
def test_extract_answer(text: str, kind: str, expected: str | None) -> None:
    assert extract_answer(text, kind) == expected


def test_extract_answer_respects_n_choices() -> None:
    assert extract_answer("G)", "choice", n_choices=7) == "G"
    assert extract_answer("G)", "choice", n_choices=5) is None


@pytest.mark.parametrize(
    "text",
    [
        " 9 * 2 = 18",
        " 48 + 24 = 72",
        " 9 x 2",
        " 9\u00d72 = 18",
        " 72 / 4 = 18",
        " 3:30",
        " 3:30 pm.",
        " (48 + 24) = 72",
        " 72 = 48 + 24",
        " - 9 * 2",
        "The answer is 9 * 2 = 18.",
        "Answer: 48 + 24",
        "#### 3:30",
        "\\boxed{9 \\times 2 = 18}",
    ],
)
def test_answer_is_computation(text: str) -> None:
    assert answer_is_computation(text)
    assert extract_answer(text, "number") is None


@pytest.mark.parametrize(
    "text",
    [
        " 72",
        " 72 (48 + 24).",
        " 18 dollars per 2 days",
        " 2 1/2 miles",
        " 3/4",
        " - 7.",
        " 72-year-old",
        " fourteen",
        "",
        "8 + 8 = 16.\n16 - 2 = 14",  # a chain: last number, not an answer slot
        "The answer is 72. Then 9 * 2 = 18.",
    ],
)
def test_answer_is_not_computation(text: str) -> None:
    assert not answer_is_computation(text)


def test_answer_is_computation_only_for_numbers() -> None:
    assert not answer_is_computation(" 9 * 2 = 18", "text")
    assert not answer_is_computation("C) 9 * 2", "choice")
    with pytest.raises(ValueError, match="unknown answer kind"):
        answer_is_computation(" 9 * 2", "letter")


@pytest.mark.parametrize(
    "text, after_cue, expected, computed",
    [
        # after_cue=True: the text followed the cue, whatever its shape
        ("9 * 2 = 18", True, None, True),
        ("18 dollars per 2 days", True, "18", False),
        ("about 12 hours, or 720 minutes", True, "12", False),
        ("12 hours\n720 minutes", True, "12", False),
        # after_cue=False: a chain, last number
        (" 9 * 2 = 18", False, "18", False),
        (" 18 dollars per 2 days", False, "2", False),
        # None guesses: only a computation without the leading space reads as a chain
        ("9 * 2 = 18", None, "18", False),
        (" 9 * 2 = 18", None, None, True),
        ("18 dollars per 2 days", None, "18", False),
        ("about 12 hours, or 720 minutes", None, "720", False),
        # markers and boxes take precedence over after_cue
        ("The answer is 72 (48 + 24).", False, "72", False),
        ("48 + 24 = \\boxed{72}", True, "72", False),
    ],
)
def test_after_cue(text: str, after_cue: bool | None, expected: str | None, computed: bool) -> None:
    assert extract_answer(text, "number", after_cue=after_cue) == expected
    assert answer_is_computation(text, after_cue=after_cue) is computed


def test_after_cue_leaves_choice_and_text_alone() -> None:
    assert extract_answer(" C) 9 * 2", "choice", after_cue=True) == "C"
    assert extract_answer(" Paris, 2 km", "text", after_cue=True) == "paris 2 km"


# ---------------------------------------------------------------------------------------------
# The restatement fold and answer statements (issue 20, items 7 and 9)
# ---------------------------------------------------------------------------------------------

RESTATEMENT_CASES = [
    # A sentence whose one number is the previous result but which acts again is a real step.
    ("buys more", "He gives away 2, so he has 3. He buys 3 more.", ["He gives away 2, so he has 3.", "He buys 3 more."]),
    ("acts on the result", "He had 5 and gave away 2, so 3. He eats 3.", ["He had 5 and gave away 2, so 3.", "He eats 3."]),
    ("then more", "4 + 4 = 8. Then 8 more.", ["4 + 4 = 8.", "Then 8 more."]),
    ("each", "2 + 3 = 5. So 5 each.", ["2 + 3 = 5.", "So 5 each."]),
    # A conclusion, or the bare number with its unit, only says the result again: folded.
    ("so", "2 + 3 = 5. So 5.", ["2 + 3 = 5. So 5."]),
    ("that makes", "2 + 3 = 5. That makes 5 in total.", ["2 + 3 = 5. That makes 5 in total."]),
    ("bare with unit", "5 - 2 = 3. 3 apples.", ["5 - 2 = 3. 3 apples."]),
    ("left", "5 - 2 = 3. So he has 3 left.", ["5 - 2 = 3. So he has 3 left."]),
]


@pytest.mark.parametrize("chain, expected", [c[1:] for c in RESTATEMENT_CASES], ids=[c[0] for c in RESTATEMENT_CASES])
def test_restatement_fold_keeps_real_steps(chain: str, expected: list[str]) -> None:
    assert split_steps(chain) == expected


STATEMENT_CASES = [
    # (text, a_full, kind, the sentences that state an answer, whether they state a_full)
    ("16 - 2 = 14. The answer is 14.", "14", "number", ["The answer is 14."], True),
    ("48 + 24 = 72 clips. So 72 clips. The answer is 72.", "72", "number", ["So 72 clips.", "The answer is 72."], True),
    ("48 + 24 = 72 clips. So 72 clips.", "72", "number", ["So 72 clips."], True),
    ("48 + 24 = 72.", "72", "number", [], False),  # computing a_full is reasoning, not stating it
    ("So 72.", "72", "number", [], False),  # nothing before it reached 72: not a restatement
    ("So the answer is 9. Then 3 + 4 = 7.", "7", "number", ["So the answer is 9."], False),
    ("The answer is 7. Because 3 + 4 = 7.", "7", "number", ["The answer is 7."], True),
    ("2 + 3 = 5.\n#### 5", "5", "number", ["#### 5"], True),
    ("The speed is 600.\nAnswer: (C)", "C", "choice", ["Answer: (C)"], True),
    ("The speed is 600.\nAnswer: (C)", "B", "choice", ["Answer: (C)"], False),
]


@pytest.mark.parametrize("text, answer, kind, sentences, states", STATEMENT_CASES)
def test_answer_statements(text: str, answer: str, kind: str, sentences: list[str], states: bool) -> None:
    number = answer if kind == "number" else None
    assert [text[a:b] for a, b in answer_statement_spans(text, number)] == sentences
    assert states_answer(text, answer, kind, n_choices=4) is states
    assert states_answer(text, None, kind) is False
