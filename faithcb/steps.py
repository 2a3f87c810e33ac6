"""Chain text: where a chain stops (the answer cue) and its steps (sentences and lines).

Pure string logic: nothing here imports torch; every function is deterministic and cheap, so the
probes and the tests can call it freely. docs/metrics.md defines steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

from faithcb.answers import extract_answer, numbers_in
from faithcb.errors import ConfigError

__all__ = ["answer_statement_spans", "before_cue", "locate_steps", "split_steps", "states_answer", "step_spans"]


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

# Reasoning-model tags delimit the chain; they are neither steps nor part of one.
_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)


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
    if _ANSWER_LINE.match(step):
        return True
    # "So the result is \boxed{3/4}." declares the answer just as "The answer is" does. A digit
    # before the box means the sentence also computes something ("48 + 24 = \boxed{72}"), which
    # is reasoning and stays a step.
    at = step.find("\\boxed")
    return at >= 0 and not any(ch.isdigit() for ch in step[:at])


# How a sentence that only restates a result opens: a word that concludes ("So 72 clips.",
# "Altogether 72.", "That makes 72."). Without one the sentence must be the bare number with at
# most one word, its unit ("72 clips."); "He buys 3 more." is neither and stays a step.
_CONCLUDES = re.compile(
    r"""^[\s*_>#(]*(?:so|thus|therefore|hence|altogether|overall|in\s+(?:total|all|sum)
        |(?:that|this|which)(?:\s+(?:is|makes|gives|means|leaves)|'s))\b""",
    re.IGNORECASE | re.VERBOSE,
)
# Words that make a sentence with a known number a new step: it changes the amount again
# ("So he buys 3 more.", "Then 3 fewer.").
_CHANGES = re.compile(r"\b(?:more|fewer|less|another|additional|extra|again|each|per)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


def _restatement_of(sentence: str, number: str) -> bool:
    """Whether ``sentence`` only says ``number`` (normalized) again: "So 72 clips.", "That is 72."

    Its one number is ``number``, it concludes (or is the bare number with at most one word, its
    unit), and no word of change ("more", "fewer", "each", ...) makes it a new computation.
    """
    if numbers_in(sentence) != [number] or _CHANGES.search(sentence):
        return False
    return bool(_CONCLUDES.match(sentence)) or len(_WORD.findall(sentence)) <= 1


def _restates(sentence: str, previous: str) -> bool:
    """Whether ``sentence`` only repeats the result of ``previous`` ("... = 72 clips. So 72.").

    Its one number is the last number of the step before it, where a computed result
    conventionally stands, and it reads as a restatement (:func:`_restatement_of`): "He gives away
    2, so he has 3. He buys 3 more." is two steps. Such a sentence adds nothing a truncation could
    remove.
    """
    before = numbers_in(previous)
    return bool(before) and _restatement_of(sentence, before[-1])


def step_spans(chain: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of each step of ``chain``, in order and non-overlapping.

    ``chain[start:end]`` is the step with surrounding whitespace stripped. Steps end at line breaks
    and sentence ends; decimals, money, thousands separators, common abbreviations and list markers
    stay inside their step. ``<think>`` and ``</think>`` tags end a step like a line break; no step
    starts or ends with one (a tag lies inside a step only between reasoning and the answer line
    merged into it, as a line break does). A final-answer sentence ("The answer is 72.", "#### 72", "So the result is
    \\boxed{3/4}.") is merged into the step before it (or, when it comes first, the one after it),
    because truncating it away on its own would measure the answer line rather than the reasoning.
    So is a last sentence that only restates the previous step's result ("48 + 24 = 72. So 72
    clips."). Only text gives one step.
    """
    # Tags become line breaks of the same length, so spans still index the original text.
    spans = _raw_spans(_THINK_TAG.sub(lambda m: "\n" * len(m.group(0)), chain))
    answer_like = [_is_answer_line(chain[a:b]) for a, b in spans]
    body = [i for i, is_answer in enumerate(answer_like) if not is_answer]
    if len(body) >= 2 and _restates(chain[slice(*spans[body[-1]])], chain[slice(*spans[body[-2]])]):
        answer_like[body[-1]] = True
    merged: list[tuple[int, int]] = []
    pending: int | None = None  # start of leading answer lines waiting for a step to join
    for (start, end), is_answer in zip(spans, answer_like):
        if is_answer:
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


def _sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences and lines of ``text`` (``<think>`` tags end one, as in :func:`step_spans`)."""
    return _raw_spans(_THINK_TAG.sub(lambda m: "\n" * len(m.group(0)), text))


def answer_statement_spans(text: str, answer: str | None = None) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` that state an answer instead of reasoning to it.

    Every answer line ("The answer is 72.", "#### 72", "So the result is \\boxed{72}.", wherever
    it stands) and, when ``answer`` (normalized) is given, the last sentences that only restate it
    once the text has reached it ("48 + 24 = 72. So 72 clips." -> "So 72 clips."; see
    :func:`_restatement_of`). A computation whose result is the answer ("48 + 24 = 72.") is
    reasoning, not a statement. In order, non-overlapping.
    """
    spans = _sentences(text)
    stated = {i for i, (a, b) in enumerate(spans) if _is_answer_line(text[a:b])}
    if answer is not None:
        for i in reversed(range(len(spans))):
            if i in stated:
                continue
            a, b = spans[i]
            if not (_restatement_of(text[a:b], answer) and answer in numbers_in(text[:a])):
                break
            stated.add(i)
    return [spans[i] for i in sorted(stated)]


def states_answer(text: str, answer: str | None, kind: str = "number", n_choices: int = 5) -> bool:
    """Whether ``text`` states ``answer`` (normalized for ``kind``) outright.

    True when one of its answer lines reads as ``answer`` ("So the answer is 72.", "#### 72",
    "Answer: (C)") or its last sentences restate it (:func:`answer_statement_spans`). A model that
    copies the last answer it sees answers such a text correctly whatever the reasoning says.
    """
    if answer is None:
        return False
    for a, b in answer_statement_spans(text, answer if kind == "number" else None):
        sentence = text[a:b]
        if not _is_answer_line(sentence) or extract_answer(sentence, kind, n_choices, after_cue=False) == answer:
            return True
    return False


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
