"""Pure string logic: splitting chains into steps, finding and normalizing answers.

Nothing here imports torch; every function is deterministic and cheap, so the probes and the
tests can call it freely. docs/metrics.md defines steps and answers.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, localcontext
from fractions import Fraction
from itertools import pairwise

from faithcb.errors import ConfigError

__all__ = [
    "ANSWER_KINDS",
    "extract_answer",
    "locate_steps",
    "normalize_answer",
    "normalize_choice",
    "normalize_number",
    "normalize_text",
    "numbers_in",
    "split_steps",
    "step_spans",
]

ANSWER_KINDS = ("number", "choice", "text")

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

# A sentence end: terminal punctuation, optionally closed by quotes or brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")

# Abbreviations that never end a sentence in practice (a name or an example always follows).
_ABBREV_NEVER_END = frozenset("e.g i.e mr mrs ms dr prof st jr sr vs cf viz approx fig eq".split())
# Abbreviations that may also end a sentence: split after them only before a capital letter.
_ABBREV_MAY_END = frozenset("etc a.m p.m inc ltd co u.s no".split())
_DOTTED_ABBREV = re.compile(r"^(?:[a-z]\.)+[a-z]$")

# "1." / "a." / "Step 2." at the start of a line is a list marker, not a sentence.
_LIST_MARKER = re.compile(r"^\s*(?:[-*>]\s*)?(?:step\s+)?\(?(?:\d+|[a-z]|[ivx]+)$", re.IGNORECASE)

# A final-answer sentence: merged into the step before it so truncation never cuts it off alone.
_ANSWER_LINE = re.compile(
    r"""^[\s*_>#]*?(?:
        \#\#\#\#
      | \$?\\boxed
      | (?:(?:so|thus|therefore|hence|then|finally)\b[\s,]*)?
        (?:the\s+)?(?:(?:final|correct|right)\s+)?answer\b\s*(?:is\b|[:=-])
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def _is_sentence_end(line: str, m: re.Match[str]) -> bool:
    """Whether the punctuation match ``m`` in ``line`` really ends a sentence."""
    rest = line[m.end() :].lstrip()
    if rest and rest[0].islower():
        # Sentences rarely start lowercase; this keeps "5 p.m. and" or "x = 5. so" together, as punkt does.
        return False
    if line[m.start()] != ".":
        return True
    before = line[: m.start()]
    if _LIST_MARKER.match(before):
        return False
    word = re.search(r"[\w.]*$", before)
    token = (word.group(0) if word else "").lower().strip(".")
    if token in _ABBREV_NEVER_END:
        return False
    if token in _ABBREV_MAY_END or _DOTTED_ABBREV.match(token):
        return bool(rest) and rest[0].isupper()
    return True


def _raw_spans(chain: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for line_m in re.finditer(r"[^\r\n]+", chain):
        line, offset = line_m.group(0), line_m.start()
        cuts = [0]
        for m in _SENTENCE_END.finditer(line):
            if _is_sentence_end(line, m):
                cuts.append(m.end())
        cuts.append(len(line))
        for a, b in pairwise(cuts):
            piece = line[a:b]
            stripped = piece.strip()
            if not stripped:
                continue
            lead = len(piece) - len(piece.lstrip())
            start = offset + a + lead
            spans.append((start, start + len(stripped)))
    return spans


def _is_answer_line(step: str) -> bool:
    return bool(_ANSWER_LINE.match(step))


def step_spans(chain: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of each step of ``chain``, in order and non-overlapping.

    ``chain[start:end]`` is the step with surrounding whitespace stripped. Steps end at line breaks
    and sentence ends; decimals, money, thousands separators, common abbreviations and list markers
    stay inside their step. A final-answer sentence ("The answer is 72.", "#### 72") is merged into
    the step before it (or, when it comes first, the one after it), because truncating it away on
    its own would measure the answer line rather than the reasoning. Only text gives one step.
    """
    spans = _raw_spans(chain)
    merged: list[tuple[int, int]] = []
    pending: int | None = None  # start of leading answer lines waiting for a step to join
    for start, end in spans:
        if _is_answer_line(chain[start:end]):
            if merged:
                merged[-1] = (merged[-1][0], end)
            elif pending is None:
                pending = start
            continue
        if pending is not None:
            merged.append((pending, end))
            pending = None
        else:
            merged.append((start, end))
    if pending is not None:
        # Only answer lines: they are the whole chain, so they form a single step.
        merged.append((pending, spans[-1][1]))
    return merged


def split_steps(chain: str) -> list[str]:
    """The steps of ``chain`` as strings (see :func:`step_spans`)."""
    return [chain[a:b] for a, b in step_spans(chain)]


def locate_steps(chain: str, steps: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of a user splitter's ``steps`` inside ``chain``, searched in order.

    Each step is stripped first; whitespace-only steps are skipped (so the result can be shorter
    than ``steps``). A step whose internal whitespace differs from the chain's still matches.
    Raises ValueError naming the first step that cannot be found after the previous one.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, step in enumerate(steps):
        s = step.strip()
        if not s:
            continue
        idx = chain.find(s, pos)
        if idx >= 0:
            spans.append((idx, idx + len(s)))
            pos = idx + len(s)
            continue
        # Splitters often rejoin words with single spaces; match any whitespace run instead.
        pattern = r"\s+".join(re.escape(tok) for tok in s.split())
        m = re.compile(pattern).search(chain, pos)
        if m is None:
            raise ConfigError(
                f"splitter: step {i} ({s[:80]!r}) not found in the chain after character {pos}; "
                "a custom splitter must return pieces of the chain, in order"
            )
        spans.append((m.start(), m.end()))
        pos = m.end()
    return spans


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


def _canonical(m: re.Match[str]) -> str | None:
    value = Fraction(m.group("num").replace(",", ""))
    den = m.group("den")
    if den is not None:
        den_value = Fraction(den)
        if den_value == 0:
            return None
        value /= den_value
    if m.group("sign"):
        value = -value
    return _format_fraction(value)


def numbers_in(text: str) -> list[str]:
    """Every number in ``text``, in order, normalized like :func:`normalize_number`."""
    out = []
    for m in _NUMBER.finditer(text):
        canon = _canonical(m)
        if canon is not None:
            out.append(canon)
    return out


def normalize_number(text: str) -> str | None:
    """The canonical form of the last number in ``text``, or None when it has none.

    Strips "$", "%", units and words, thousands separators and a trailing "."; "72.0" -> "72",
    "0.50" -> "0.5", "3/4" -> "0.75", "6/2" -> "3". The last number wins, so "16 - 2 = 14" -> "14".
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


def extract_answer(text: str, kind: str = "number", n_choices: int = 5) -> str | None:
    """The normalized final answer in a chain or a short answer continuation, or None (unparsed).

    Priority: ``\\boxed{...}``, "#### X", "the (final) answer is X" (last), "Answer: X" (last).
    The first marker present decides: if what follows it does not parse, the result is None
    rather than some other number from the chain. Without a marker: the last number ("number"),
    a leading letter such as "C) 600" or "(C" ("choice"), or the first non-empty line ("text").
    """
    if kind not in ANSWER_KINDS:
        raise ConfigError(f"kind: unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")
    boxed = _last_boxed(text)
    if boxed is not None:
        return normalize_answer(boxed, kind, n_choices)
    for pattern in (_HASHES, _ANSWER_IS, _ANSWER_COLON):
        matches = list(pattern.finditer(text))
        if matches:
            rest = text[matches[-1].end() :].split("\n", 1)[0].rstrip("\r")
            return normalize_answer(_first_sentence(rest), kind, n_choices)
    if kind == "number":
        return normalize_number(text)
    if kind == "choice":
        return normalize_choice(text, n_choices)
    for line in text.splitlines():
        if line.strip():
            return normalize_text(line)
    return None


def before_cue(text: str, cue_text: str) -> str:
    """``text`` up to the answer cue, if the model wrote the cue itself (its reasoning ended there).

    A model trained on rows in the plain layout continues its chain with the cue and the answer;
    keeping them would put the answer inside the chain and the cue twice in every context. (With a
    chat template the chain already stops at the end of the assistant turn.) Used for generated
    chains and for the mistakes probe's regenerated continuations alike.
    """
    if cue_text.strip():
        at = text.find(cue_text)
        if at >= 0:
            return text[:at]
    return text
