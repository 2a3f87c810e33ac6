"""Answers: finding the final answer in a chain or after the cue, and normalizing it.

Pure string logic: nothing here imports torch; every function is deterministic and cheap, so the
probes and the tests can call it freely. docs/metrics.md defines answers.
"""

from __future__ import annotations

import re
import string
import unicodedata
from decimal import Decimal, localcontext
from fractions import Fraction

from faithcb.errors import ConfigError

__all__ = [
    "ANSWER_KINDS",
    "answer_is_computation",
    "extract_answer",
    "normalize_answer",
    "normalize_choice",
    "normalize_number",
    "normalize_text",
    "numbers_in",
]

ANSWER_KINDS = ("number", "choice", "text")

# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

# A number: optional sign directly attached (so "16 - 2" is subtraction, "-3" is negative),
# optional "$", thousands groups or plain digits, optional decimals, optional "/den" fraction.
# The lookbehind stops matches inside words ("Q3") and decimals, but allows "2x3" products.
_NUMBER = re.compile(
    r"""(?<![A-WYZa-wyz\d_./])
    (?P<sign>[-\u2212](?=\$?[\d.]))?
    \$?
    (?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)
    (?:/(?P<den>\d+(?:\.\d+)?)(?![\d.]\d))?
    """,
    re.VERBOSE,
)


def _format_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    with localcontext() as ctx:
        ctx.prec = 60
        dec = Decimal(value.numerator) / Decimal(value.denominator)
        if d != 1:
            # A repeating expansion (from a fraction like 1/3) is rounded so it compares stably.
            dec = dec.quantize(Decimal("0.000001"))
        text = format(dec.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# LaTeX fractions, braced or the two-digit shorthand: "\\frac{3}{4}", "\\dfrac{3}{4}", "\\frac34".
_LATEX_FRAC = re.compile(
    r"""\\[dt]?frac\s*(?:
        \{\s*(?P<num>[-\u2212]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(?P<den>\d+(?:\.\d+)?)\s*\}
      | (?P<num1>\d)(?P<den1>\d)
    )""",
    re.VERBOSE,
)


def _plain_fractions(text: str) -> str:
    """``text`` with LaTeX fractions written as "3/4" (and "2\\frac{1}{2}" as the mixed "2 1/2")."""

    def plain(m: re.Match[str]) -> str:
        num, den = m.group("num") or m.group("num1"), m.group("den") or m.group("den1")
        # A digit right before the fraction is its whole part; the space keeps the two apart.
        sep = " " if m.start() > 0 and text[m.start() - 1].isdigit() else ""
        return f"{sep}{num}/{den}"

    return _LATEX_FRAC.sub(plain, text)


def _value(m: re.Match[str]) -> Fraction | None:
    value = Fraction(m.group("num").replace(",", ""))
    den = m.group("den")
    if den is not None:
        den_value = Fraction(den)
        if den_value == 0:
            return None
        value /= den_value
    return -value if m.group("sign") else value


def _is_mixed(text: str, whole: re.Match[str], part: re.Match[str]) -> bool:
    """Whether ``whole`` and ``part`` form a mixed number such as "2 1/2" (= 5/2)."""
    if whole.group("den") is not None or not whole.group("num").isdigit():
        return False
    if part.group("sign") or part.group("den") is None or text[part.start()] == "$":
        return False
    num, den = part.group("num"), part.group("den")
    # Only a proper fraction right after the integer: "3 24/2" is two numbers, not 3 + 12.
    if not (num.isdigit() and den.isdigit() and 0 < int(num) < int(den)):
        return False
    return re.fullmatch(r"[ \t]+", text[whole.end() : part.start()]) is not None


def _scan(text: str) -> list[tuple[Fraction, int, int]]:
    """``(value, start, end)`` of every number in ``text`` (LaTeX fractions already plain)."""
    matches = list(_NUMBER.finditer(text))
    out: list[tuple[Fraction, int, int]] = []
    i = 0
    while i < len(matches):
        m = matches[i]
        if i + 1 < len(matches) and _is_mixed(text, m, matches[i + 1]):
            whole, part = _value(m), _value(matches[i + 1])
            assert whole is not None and part is not None  # a proper fraction has a nonzero denominator
            out.append((whole - part if m.group("sign") else whole + part, m.start(), matches[i + 1].end()))
            i += 2
            continue
        value = _value(m)
        if value is not None:
            out.append((value, m.start(), m.end()))
        i += 1
    return out


def numbers_in(text: str) -> list[str]:
    """Every number in ``text``, in order, normalized like :func:`normalize_number`.

    A mixed number ("2 1/2") and a LaTeX fraction ("\\frac{3}{4}") are one number each.
    """
    return [_format_fraction(value) for value, _, _ in _scan(_plain_fractions(text))]


def normalize_number(text: str) -> str | None:
    """The canonical form of the last number in ``text``, or None when it has none.

    Strips "$", "%", units and words, thousands separators and a trailing "."; "72.0" -> "72",
    "0.50" -> "0.5", "3/4" -> "0.75", "\\frac{3}{4}" -> "0.75", "2 1/2" -> "2.5", "6/2" -> "3".
    The last number wins, so "16 - 2 = 14" -> "14". (An answer *after a cue or marker* is read
    differently, first number first: see :func:`extract_answer`.)
    """
    nums = numbers_in(text)
    return nums[-1] if nums else None


# ---------------------------------------------------------------------------------------------
# Choices and free text
# ---------------------------------------------------------------------------------------------

_ANSWER_CUE = re.compile(
    r"(?:the\s+)?(?:(?:final|correct|right)\s+)?answer\s*(?:is\b\s*:?|[:=-])\s*", re.IGNORECASE
)
# "(C)", "C)", "C.", "C:", "[C]", "C" alone; a lowercase letter only when marked or alone, so the
# article in "a cat" is not read as option A; an uppercase one may be followed by a non-word.
_LEADING_LETTER = re.compile(
    r"""^[\s*_]*[(\[]?\s*
    (?:
        (?P<marked>[A-Za-z])\s*(?:[)\]:]|\.(?!\w)|$)
      | (?P<upper>[A-Z])(?=\s+[^a-z\s]|\s*$)
    )""",
    re.VERBOSE,
)


def _unbox(text: str) -> str:
    inner = _last_boxed(text)
    return inner if inner is not None else text


def normalize_choice(text: str, n_choices: int = 5) -> str | None:
    """The choice letter ("A".."E" by default) in ``text``, or None.

    Accepts "(C)", "C)", "c", "C. 600", "Answer: C", "the answer is (c)", "\\boxed{C}". A letter
    beyond the first ``n_choices`` is None, not a silent miss.
    """
    s = _unbox(text).strip()
    cues = list(_ANSWER_CUE.finditer(s))
    if cues:
        s = s[cues[-1].end() :]
    m = _LEADING_LETTER.match(s)
    if m is None:
        return None
    letter = (m.group("marked") or m.group("upper")).upper()
    return letter if ord(letter) - ord("A") < n_choices else None


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_text(text: str) -> str | None:
    """Lowercase, drop punctuation and articles, collapse whitespace; None when nothing is left."""
    s = text.lower()
    s = "".join(
        " " if (ch in string.punctuation or unicodedata.category(ch).startswith("P")) else ch for ch in s
    )
    s = _ARTICLES.sub(" ", s)
    s = " ".join(s.split())
    return s or None


def normalize_answer(text: str, kind: str, n_choices: int = 5) -> str | None:
    """Normalize ``text`` as an answer of ``kind`` ("number", "choice" or "text")."""
    if kind == "number":
        return normalize_number(text)
    if kind == "choice":
        return normalize_choice(text, n_choices)
    if kind == "text":
        return normalize_text(text)
    raise ConfigError(f"kind: unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return text[i:]


# Cues only: the text after the last match is read up to the end of its line. (Consuming the rest
# of the line in the pattern would hide a later cue on the same line from finditer.)
_HASHES = re.compile(r"####\s*")
_ANSWER_IS = re.compile(r"\bthe\s+(?:(?:final|correct|right)\s+)?answer\s+is\b\s*:?\s*", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"\banswer\s*:\s*", re.IGNORECASE)
_CUT_SENTENCE = re.compile(r"[.!?](?:\s|$)")


def _first_sentence(rest: str) -> str:
    m = _CUT_SENTENCE.search(rest)
    return rest[: m.start()] if m else rest


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


def _read_slot(rest: str) -> tuple[str | None, bool]:
    """``(answer, computed)`` for the number written in an answer slot: the first one.

    The slot is read up to its first line and sentence end. ``computed`` is True when the first
    number starts an expression or a time ("9 * 2 = 18", "3:30"): then the answer is None.
    """
    s = _plain_fractions(_first_sentence(rest.split("\n", 1)[0].rstrip("\r")))
    sign = _SPACED_SIGN.match(s)
    if sign is not None:
        s = s[sign.end() :]
    found = _scan(s)
    if not found:
        return None, False
    value, _, end = found[0]
    if _COMPUTATION.match(s, end):
        return None, True
    return _format_fraction(-value if sign is not None else value), False


def _number_without_marker(text: str, after_cue: bool | None) -> tuple[str | None, bool]:
    """A "number" answer from ``text``, which has no answer marker and no box."""
    if after_cue is False:
        return normalize_number(text), False
    if after_cue is None:
        body = text.strip()
        # Only a one-line text that opens with a number can be what followed the cue (the engine
        # stops decoding at a line break); a chain opens with words or runs over several lines.
        if not body or "\n" in body or "\r" in body or _SLOT_START.match(body) is None:
            return normalize_number(text), False
    answer, computed = _read_slot(text)
    if computed and after_cue is None and not text[:1].isspace():
        # A computation with nothing before it is ambiguous: text decoded after the cue starts with
        # the space that parts it from the cue (" 9 * 2 = 18": kept computing), while a stored,
        # stripped chain such as "1+1 = 2" states its result last.
        return normalize_number(text), False
    return answer, computed


def _extract(text: str, kind: str, n_choices: int, after_cue: bool | None) -> tuple[str | None, bool]:
    """``(answer, computed)``; see :func:`extract_answer` and :func:`answer_is_computation`."""
    if kind not in ANSWER_KINDS:
        raise ConfigError(f"kind: unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")
    boxed = _last_boxed(text)
    if boxed is not None:
        return _read_slot(boxed) if kind == "number" else (normalize_answer(boxed, kind, n_choices), False)
    for pattern in (_HASHES, _ANSWER_IS, _ANSWER_COLON):
        matches = list(pattern.finditer(text))
        if matches:
            rest = text[matches[-1].end() :].split("\n", 1)[0].rstrip("\r")
            if kind == "number":
                return _read_slot(rest)
            return normalize_answer(_first_sentence(rest), kind, n_choices), False
    if kind == "number":
        return _number_without_marker(text, after_cue)
    if kind == "choice":
        return normalize_choice(text, n_choices), False
    for line in text.splitlines():
        if line.strip():
            return normalize_text(line), False
    return None, False


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
    return _extract(text, kind, n_choices, after_cue)[0]


def answer_is_computation(
    text: str, kind: str = "number", n_choices: int = 5, *, after_cue: bool | None = None
) -> bool:
    """Whether ``text``'s answer slot holds a computation instead of a number.

    True exactly when :func:`extract_answer` (same arguments) returns None because the first
    number in the slot starts an expression or a time: " 9 * 2 = 18", " 48 + 24 = 72", " 3:30",
    "The answer is 9 * 2 = 18." -- the model kept computing after the cue (or wrote a time, two
    numbers rather than one). Always False for "choice" and "text".
    """
    return _extract(text, kind, n_choices, after_cue)[1]
