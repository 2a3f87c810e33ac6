"""Answers: finding the final answer in a chain or after the cue (normalizing it: :mod:`faithcb.normalize`).

Pure string logic: nothing here imports torch; every function is deterministic and cheap, so the
probes and the tests can call it freely. docs/metrics.md defines answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faithcb.errors import ConfigError
from faithcb.normalize import (  # re-exported: answers are read and normalized through this module
    ANSWER_KINDS,
    format_fraction,
    last_boxed,
    normalize_answer,
    normalize_choice,
    normalize_number,
    normalize_text,
    numbers_in,
    plain_fractions,
    scan_numbers,
)

__all__ = [
    "ANSWER_KINDS",
    "LEAD_CHARACTERS",
    "SlotReading",
    "answer_in_format",
    "answer_is_computation",
    "extract_answer",
    "is_lead_text",
    "normalize_answer",
    "normalize_choice",
    "normalize_number",
    "normalize_text",
    "numbers_in",
    "read_answer_slot",
]

# ---------------------------------------------------------------------------------------------


# Cues only: the text after the last match is read as an answer slot. (Consuming the rest of the
# line in the pattern would hide a later cue on the same line from finditer.)
_HASHES = re.compile(r"####\s*")
_ANSWER_IS = re.compile(r"\bthe\s+(?:(?:final|correct|right)\s+)?answer\s+is\b\s*:?\s*", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"\banswer\s*:\s*", re.IGNORECASE)
_CUT_SENTENCE = re.compile(r"[.!?](?:\s|$)")

# What may stand before an answer without being one: whitespace, markdown emphasis and headings,
# a colon, math "$". A line of these alone is blank: the slot skips it (":\n\n**72**\n" holds 72),
# and the decoder does not end an answer on its newline (``faithcb.scoring.EndRule``'s lead ids).
LEAD_CHARACTERS = frozenset(":*_#>$")


def is_lead_text(text: str) -> bool:
    """Whether ``text`` holds nothing but what may precede an answer (see ``LEAD_CHARACTERS``)."""
    return all(ch.isspace() or ch in LEAD_CHARACTERS for ch in text)


# What may precede the answer in its slot: space, markdown emphasis, an opening bracket, math "$".
_SLOT_LEAD = r"[\s*_($]*"
# A sign set apart from its number, allowed only at the very start of the slot ("- 7" is -7; "16 - 2"
# elsewhere stays a subtraction).
_SPACED_SIGN = re.compile(_SLOT_LEAD + r"[-\u2212]\s+(?=\$?\s*\.?\d)")
# A slot that starts with its answer: what the engine decodes after the cue, not a whole chain.
_SLOT_START = re.compile(_SLOT_LEAD + r"(?:[-\u2212+]\s*)?\$?\s*(?:\.?\d|\\[dt]?frac)")
# After the first number: an operator and another number, "=", or ":" and digits (a time "3:30", a
# ratio). The writer kept computing instead of answering, so there is no single number to read.
_COMPUTATION = re.compile(
    r"""\s*(?:
        (?:[-+*/^x\u00d7\u00f7\u00b7\u2212\u22c5]|\\times|\\cdot|\\div)\s*[-\u2212]?[($]?\s*\.?\d
      | =
      | :\d
    )""",
    re.VERBOSE,
)
# A share "of" something after a fraction or a percent: " 3/4 of 12 = 9", " 50% of 40" computes.
_SHARE_OF = re.compile(r"\s*(?:%|percent\b)?\s*of\b", re.IGNORECASE)
_PERCENT = re.compile(r"\s*(?:%|percent\b)", re.IGNORECASE)
# Forms whose first number is not the answer, read wrong before (better unparsed than wrong):
# digit groups set apart by spaces (" 100 000"), an exponent (" 3e5"), a scale word (" 1.5 million",
# " 2 dozen"), and a compound quantity (" 12 dollars and 50 cents", " 2 and a half").
_SCALE_WORDS = ("million", "billion", "trillion", "thousand", "hundred", "dozen", "k", "bn", "mn")
_NOT_THE_NUMBER = re.compile(
    r"""[ \t\u00a0\u2009\u202f]+\d
      | [eE][-+\u2212]?\d
      | \s*-?\s*(?:""" + "|".join(_SCALE_WORDS) + r""")\b
      | \s+(?:[A-Za-z]+\s+){0,2}and\s+(?:\$?\.?\d|an?\s+(?:half|quarter|third)|half)
    """,
    re.VERBOSE | re.IGNORECASE,
)
# What may follow a number at the end of a window that cut it without its terminator, and still
# change how it reads: more digits or number punctuation (" 1,250,0", " 100 0", " 3e"), the start of
# a scale word (" 1.5 mil") or of a compound (" 12 dollars and").
_OPEN_END = re.compile(
    r"""[\s\d.,/%^*x\u00d7+=:$\u2212-]*(?:[eE][-+\u2212]?)?
      | \s+(?:[A-Za-z]+\s+){0,2}(?:an?|and?)\s*
      | \s*-?\s*(?P<word>[A-Za-z]+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class SlotReading:
    """What an answer slot holds: the normalized answer, or why there is none.

    ``reason`` (None when ``answer`` is not None): ``"cut"`` -- the window ended inside the slot's
    first number (or before any), so what was written may be a prefix (" 1,250,0" of "1,250,000");
    ``"computed"`` -- the first number starts a computation, a time or a share (" 9 * 2 = 18",
    " 3:30", " 3/4 of 12 = 9"); ``"ambiguous"`` -- the first number is not the quantity written
    (" 100 000", " 3e5", " 1.5 million", " 12 dollars and 50 cents"); ``"empty"`` -- nothing to read.
    ``span``: where the answer stands in the text read (characters ``[start, end)``; the number
    without its "$"), so another answer can be written in the same format; None where unknown.
    """

    answer: str | None
    reason: str | None = None
    span: tuple[int, int] | None = None


def _slot_line(text: str, start: int) -> tuple[int, int]:
    """``[start, end)`` of the slot's line: the first line from ``start`` that is not blank."""
    pos = start
    while True:
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        if not is_lead_text(text[pos:end]) or nl < 0:
            return pos, end
        pos = nl + 1


def _read_slot(text: str, start: int = 0, *, ended: bool = True) -> SlotReading:
    """The number written in the answer slot that starts at ``text[start]``: the first one.

    The slot is its first line that is not blank, read up to its sentence end. ``ended=False``: the
    text is a window that ended without a terminator; its last line is then open at the end.
    """
    a, b = _slot_line(text, start)
    line = text[a:b].rstrip("\r")
    open_end = not ended and b == len(text)
    cut_at = _CUT_SENTENCE.search(line)
    if cut_at is not None and open_end and cut_at.end() == len(line):
        cut_at = None  # " 72." at the window's end may go on as "72.5"
    s = line[: cut_at.start()] if cut_at else line
    plain = plain_fractions(s)
    sign = _SPACED_SIGN.match(plain)
    offset = sign.end() if sign is not None else 0
    found = scan_numbers(plain[offset:])
    if not found:
        return SlotReading(None, "cut" if open_end and _OPEN_END.fullmatch(plain) else "empty")
    value, first, last = found[0]
    first, last = first + offset, last + offset
    if _COMPUTATION.match(plain, last):
        return SlotReading(None, "computed")
    share = "/" in plain[first:last] or _PERCENT.match(plain, last)
    if share and _SHARE_OF.match(plain, last):
        return SlotReading(None, "computed")
    if open_end and plain == s:
        tail = _OPEN_END.fullmatch(line[last:])
        word = tail.group("word") if tail is not None else None
        if tail is not None and (word is None or any(w.startswith(word.lower()) for w in _SCALE_WORDS)):
            return SlotReading(None, "cut")
    if _NOT_THE_NUMBER.match(plain, last):
        return SlotReading(None, "ambiguous")
    span = None
    if plain == s:  # no LaTeX rewritten: positions in the slot are positions in the text
        first += 1 if plain[first] in "-\u2212" and plain[first + 1 : first + 2] == "$" else 0
        first += 1 if plain[first] == "$" else 0
        span = (a + first, a + last) if sign is None else None
    return SlotReading(format_fraction(-value if sign is not None else value), span=span)


def answer_in_format(text: str, reading: SlotReading, answer: str) -> str | None:
    """``text`` with ``answer`` written where ``reading`` (of ``text``) found its answer, or None.

    " 68.\n" with "72" -> " 72.\n"; "\n\n**68**\n" -> "\n\n**72**\n"; a number written with
    thousands separators keeps them (" $1,150." with "1250" -> " $1,250."). Information gain
    scores the gold answer so, in the format the model answers in, not in a canonical one.
    """
    if reading.span is None:
        return None
    a, b = reading.span
    if "," in text[a:b] and re.fullmatch(r"-?\d+(?:\.\d+)?", answer):
        whole, dot, decimals = answer.partition(".")
        answer = f"{int(whole):,}{dot}{decimals}"
    return text[:a] + answer + text[b:]


def _read_text_slot(text: str, start: int, kind: str, n_choices: int, *, ended: bool) -> SlotReading:
    """A "choice" or "text" answer in the slot at ``text[start]`` (its first line that is not blank)."""
    a, b = _slot_line(text, start)
    if not ended and b == len(text):
        return SlotReading(None, "cut")
    line = text[a:b].rstrip("\r")
    answer = normalize_answer(line if kind == "choice" else _first_sentence(line), kind, n_choices)
    if answer is None:
        return SlotReading(None, "empty")
    words = re.search(r"\w(?:.*\w)?", line)
    return SlotReading(answer, span=(a + words.start(), a + words.end()) if kind == "text" and words else None)


def _first_sentence(rest: str) -> str:
    m = _CUT_SENTENCE.search(rest)
    return rest[: m.start()] if m else rest


def _number_without_marker(text: str, after_cue: bool | None, ended: bool) -> SlotReading:
    """A "number" answer from ``text``, which has no answer marker and no box."""
    if after_cue is False:
        return _whole_text(text)
    if after_cue is None:
        body = text.strip()
        # Only a one-line text that opens with a number can be what followed the cue (the engine
        # stops decoding at a line break); a chain opens with words or runs over several lines.
        if not body or "\n" in body or "\r" in body or _SLOT_START.match(body) is None:
            return _whole_text(text)
    reading = _read_slot(text, ended=ended)
    if reading.reason == "computed" and after_cue is None and not text[:1].isspace():
        # A computation with nothing before it is ambiguous: text decoded after the cue starts with
        # the space that parts it from the cue (" 9 * 2 = 18": kept computing), while a stored,
        # stripped chain such as "1+1 = 2" states its result last.
        return _whole_text(text)
    return reading


def _whole_text(text: str) -> SlotReading:
    answer = normalize_number(text)
    return SlotReading(answer, None if answer is not None else "empty")


def _extract(text: str, kind: str, n_choices: int, after_cue: bool | None, ended: bool = True) -> SlotReading:
    """The one reading behind :func:`extract_answer`, :func:`answer_is_computation` and :func:`read_answer_slot`."""
    if kind not in ANSWER_KINDS:
        raise ConfigError(f"kind: unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")
    boxed = last_boxed(text)
    if boxed is not None:
        at = text.rfind("\\boxed{") + len("\\boxed{")
        closed = text.find("}", at) >= 0 or boxed != text[at:]
        if kind == "number":
            reading = _read_slot(boxed, ended=ended or closed)
            span = reading.span and (reading.span[0] + at, reading.span[1] + at)
            return SlotReading(reading.answer, reading.reason, span)
        if not (ended or closed):
            return SlotReading(None, "cut")
        answer = normalize_answer(boxed, kind, n_choices)
        return SlotReading(answer, None if answer is not None else "empty")
    for pattern in (_HASHES, _ANSWER_IS, _ANSWER_COLON):
        matches = list(pattern.finditer(text))
        if matches:
            if kind == "number":
                return _read_slot(text, matches[-1].end(), ended=ended)
            return _read_text_slot(text, matches[-1].end(), kind, n_choices, ended=ended)
    if kind == "number":
        return _number_without_marker(text, after_cue, ended)
    if after_cue or not ended:
        return _read_text_slot(text, 0, kind, n_choices, ended=ended)
    if kind == "choice":
        answer = normalize_choice(text, n_choices)
        return SlotReading(answer, None if answer is not None else "empty")
    for line in text.splitlines():
        if line.strip():
            return SlotReading(normalize_text(line))
    return SlotReading(None, "empty")


def read_answer_slot(text: str, kind: str = "number", n_choices: int = 5, *, ended: bool = True) -> SlotReading:
    """The answer a model wrote after the answer cue, as a :class:`SlotReading`: the one slot rule.

    The engine reads a_full and every variant's decoded answer with it. Leading blank lines (and
    lines holding only markup or a colon) are skipped: "\\n72\\n", "\\n\\n72.\\n" and
    ":\\n\\n**72**\\n" all hold 72. ``ended``: whether the window ended on its terminator; when it
    did not, the slot is cut (``reason="cut"``, no answer) only when its first number runs into
    the end of the window (" 1,250,0", " 72." may go on) -- " 72 apples because" still reads 72.
    Forms whose first number is not the answer come back unparsed with a reason rather than as a
    wrong number: " 3/4 of 12 = 9" and " 50% of 40 = 20" (computed), " 100 000", " 3e5",
    " 1.5 million", " 12 dollars and 50 cents" (ambiguous).
    """
    return _extract(text, kind, n_choices, True, ended)


def extract_answer(
    text: str, kind: str = "number", n_choices: int = 5, *, after_cue: bool | None = None
) -> str | None:
    """The normalized final answer in a chain or a short answer continuation, or None (unparsed).

    Priority: ``\\boxed{...}``, "#### X", "the (final) answer is X" (last), "Answer: X" (last).
    The first marker present decides: if what follows it does not parse, the result is None
    rather than some other number from the chain. Without a marker: a leading letter such as
    "C) 600" or "(C" ("choice"), the first non-empty line ("text"), and for "number" see below.

    A number is read from an answer slot -- the box's content, the rest of the marker's line, or a
    continuation after the cue -- up to its first sentence end, and it is the **first** number
    written there: " 18 dollars per 2 days" -> "18", " 72 (48 + 24)." -> "72", " 12 hours, or 720
    minutes" -> "12". A sign set apart at the start counts (" - 7." -> "-7"); mixed numbers and
    LaTeX fractions are one number (" 2 1/2 miles" -> "2.5", "\\dfrac{3}{4}" -> "0.75"). When that
    first number starts an expression or a time (" 9 * 2 = 18", " 3:30") the slot holds no single
    answer: None, and :func:`answer_is_computation` is True.

    Whether a "number" text without a marker is such a continuation: ``after_cue=True`` says it
    is (the text the model wrote right after the answer cue), ``False`` that it is a chain, read by
    the last-number rule ("Tom has 8. He eats 2. So 6 are left." -> "6"). ``None`` (the default)
    guesses: a one-line text that opens with a number is a continuation, except that one opening
    with a computation and no leading space (a stored chain such as "1+1 = 2" -> "2") is a chain.
    """
    return _extract(text, kind, n_choices, after_cue).answer


def answer_is_computation(
    text: str, kind: str = "number", n_choices: int = 5, *, after_cue: bool | None = None
) -> bool:
    """Whether ``text``'s answer slot holds a computation instead of a number.

    True exactly when :func:`extract_answer` (same arguments) returns None because the first
    number in the slot starts an expression or a time: " 9 * 2 = 18", " 48 + 24 = 72", " 3:30",
    "The answer is 9 * 2 = 18." -- the model kept computing after the cue (or wrote a time, two
    numbers rather than one). Always False for "choice" and "text".
    """
    return _extract(text, kind, n_choices, after_cue).reason == "computed"
