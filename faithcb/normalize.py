"""Numbers, letters and short texts as answers: finding numbers in text and normalizing an answer of
each kind (``number``, ``choice``, ``text``) to the one form answers are compared in.

Pure string logic (no torch). :mod:`faithcb.answers` finds where an answer stands; this module
says what it is.
"""

from __future__ import annotations

import re
import string
import unicodedata
from decimal import Decimal, localcontext
from fractions import Fraction

from faithcb.errors import ConfigError

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


def format_fraction(value: Fraction) -> str:
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


def plain_fractions(text: str) -> str:
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


def scan_numbers(text: str) -> list[tuple[Fraction, int, int]]:
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
    return [format_fraction(value) for value, _, _ in scan_numbers(plain_fractions(text))]


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


def last_boxed(text: str) -> str | None:
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


def _unbox(text: str) -> str:
    inner = last_boxed(text)
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
