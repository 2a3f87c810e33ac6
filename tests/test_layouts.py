"""The prompt layouts (faith_layout) against real chat templates.

Every probe context is ``chain_prompt + chain + cue + gold``. These tests render that text with the
vendored templates of tests/fixtures/chat_templates/ (via tests/template_tokenizers.py) and check
what each layout promises: ``think`` puts the chain inside the model's own reasoning block (opened
the way the template's generation prompt opens it) and the cue closes that block the way the
template closes it before the answer prefix; ``two_turn`` closes the assistant turn and asks the cue
question in a new user turn; ``plain`` ignores the template. What each template does is recorded in
the survey (/work/notes/templates.md) and in the metadata beside each tokenizer.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
import transformers.utils.chat_template_utils as chat_template_utils
from template_tokenizers import (
    TEMPLATE_NAMES,
    TEMPLATES,
    THINK_TEMPLATES,
    TWO_TURN_TEMPLATES,
    template_tokenizer,
)

from faithcb.errors import ConfigError
from faithcb.problem import Problem
from faithcb.prompting import (
    FIXED_DATE,
    LAYOUTS,
    Prompter,
    PromptStyle,
    pinned_clock,
    render_chat,
    resolve_layout,
)
from faithcb.testing import tiny_tokenizer

NUMBER = Problem("What is 2+3?", "5")
CHOICE = Problem("Which is 2+3?", "B", kind="choice", choices=("4", "5", "6"))
# Several lines with step text, no markup: a chain must come back exactly as it went in.
CHAIN = "Step 1: start from 2.\nStep 2: add 3 to get 5.\nSo the sum is 5."
DATES = (datetime(2024, 1, 2, 9, 30), datetime(2031, 12, 30, 23, 59))


def _prompter(name: str, layout: str = "auto"):
    tok = template_tokenizer(name)
    return tok, Prompter.for_tokenizer(tok, PromptStyle(layout=layout))


def _full_text(prompter, tok, problem: Problem = NUMBER) -> str:
    chain_prompt, cue = prompter.pieces(problem, tok)
    return chain_prompt + CHAIN + cue + prompter.gold_continuation(problem)


def _generation_header(tok, *, enable_thinking: bool) -> str:
    """What the template appends for ``add_generation_prompt=True`` (the new assistant header)."""
    user = [{"role": "user", "content": "Q"}]
    extra = {"enable_thinking": True} if enable_thinking else {}
    with_prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False, **extra)
    without = tok.apply_chat_template(user, add_generation_prompt=False, tokenize=False, **extra)
    common = 0
    while common < min(len(with_prompt), len(without)) and with_prompt[common] == without[common]:
        common += 1
    return with_prompt[common:]


class _Clock(datetime):
    """Stands in for ``datetime`` inside transformers' ``strftime_now`` (the clock templates read)."""

    fixed = DATES[0]

    @classmethod
    def now(cls, tz=None):
        return cls.fixed


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(chat_template_utils, "datetime", _Clock)

    def set_date(when: datetime) -> None:
        _Clock.fixed = when

    return set_date


def test_the_layouts():
    assert set(LAYOUTS) == {"auto", "think", "two_turn", "plain"}


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_tokenizer_keeps_markup_whole(name):
    # The fixture itself: every marker of the template is one token, nothing falls to <unk>.
    tok = template_tokenizer(name)
    text = tok.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    for marker in TEMPLATES[name].specials:
        assert tok(marker, add_special_tokens=False)["input_ids"] != [tok.unk_token_id]
        assert len(tok(marker, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_auto_picks_the_templates_layout(name):
    tok, prompter = _prompter(name)
    expected = "think" if TEMPLATES[name].expects_think else "two_turn"
    choice = resolve_layout(tok, "auto")
    assert choice.layout == expected, choice.reason
    assert choice.reason.strip()
    assert prompter.layout == expected


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_chain_appears_once_verbatim(name):
    tok, prompter = _prompter(name)
    chain_prompt, cue = prompter.pieces(NUMBER, tok)
    full = _full_text(prompter, tok)
    assert full.count(CHAIN) == 1
    assert full.index(CHAIN) == len(chain_prompt)
    assert "Step" not in chain_prompt + cue  # nothing of the chain leaks into the pieces
    assert tok.unk_token_id not in tok(full, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_chain_prompt_is_the_native_generation_prompt(name):
    spec = TEMPLATES[name]
    tok, prompter = _prompter(name)
    chain_prompt, _ = prompter.pieces(NUMBER, tok)
    native = prompter.native_generation_prompt(NUMBER, tok)
    assert NUMBER.question in native
    # The native prompt ends with the template's own assistant header (thinking on for think).
    assert native.endswith(_generation_header(tok, enable_thinking=spec.expects_think))
    assert chain_prompt in (native, native + prompter.think_opener)
    if spec.expects_think:
        assert prompter.think_opener == spec.think_opener
        # The reasoning block is open where the chain starts (opened by the template or by us).
        assert chain_prompt.endswith(spec.think_opener)
        assert (chain_prompt == native) == spec.native_has_opener
        # Not closed again after the question (SmolLM3's system prompt mentions the tags).
        assert "</think>" not in chain_prompt.split(NUMBER.question)[-1]
    else:
        assert prompter.think_opener == "" and prompter.think_closer == ""
        assert chain_prompt == native


@pytest.mark.parametrize("name", THINK_TEMPLATES)
def test_think_cue_closes_the_reasoning_then_opens_the_answer(name):
    spec = TEMPLATES[name]
    tok, prompter = _prompter(name)
    _, cue = prompter.pieces(NUMBER, tok)
    answer_prefix = prompter.answer_prefix(NUMBER)
    assert spec.closer.strip() in prompter.think_closer
    assert cue.endswith(answer_prefix)
    assert spec.closer in cue
    close_at = cue.index(spec.closer)
    # Nothing is added to the reasoning before it is closed ...
    assert cue[:close_at].strip() == ""
    # ... the closer comes before the answer prefix, and the block is not reopened after it.
    after = cue[close_at + len(spec.closer):]
    assert close_at < len(cue) - len(answer_prefix)
    assert spec.think_opener.strip() not in after
    assert "<think>" not in after and "<|channel|>analysis" not in after


@pytest.mark.parametrize("name", TWO_TURN_TEMPLATES)
def test_two_turn_cue_asks_in_a_new_user_turn(name):
    tok, prompter = _prompter(name)
    _, cue = prompter.pieces(NUMBER, tok)
    question = prompter.style.cue_question
    # What the template puts between an assistant message and the next user message, and after it.
    rendered = tok.apply_chat_template(
        [
            {"role": "user", "content": "USERQ"},
            {"role": "assistant", "content": "CHAINX"},
            {"role": "user", "content": "CUEQ"},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    turn_change, next_header = rendered.split("CHAINX")[1].split("CUEQ")
    assert cue.startswith(turn_change)  # the assistant turn is closed, a user turn opened
    assert cue[len(turn_change):].startswith(question)
    assert cue.endswith(next_header + prompter.answer_prefix(NUMBER))


@pytest.mark.parametrize("problem", [NUMBER, CHOICE], ids=["number", "choice"])
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_gold_follows_the_answer_prefix(name, problem):
    tok, prompter = _prompter(name)
    gold = prompter.gold_continuation(problem)
    assert gold == (" 5" if problem is NUMBER else "B")
    assert _full_text(prompter, tok, problem).endswith(prompter.answer_prefix(problem) + gold)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_rendering_does_not_depend_on_the_date(name, clock):
    spec = TEMPLATES[name]
    raw, rendered = [], []
    for when in DATES:
        clock(when)
        tok, prompter = _prompter(name)
        raw.append(tok.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True,
                                           tokenize=False))
        rendered.append((*prompter.pieces(NUMBER, tok), prompter.native_generation_prompt(NUMBER, tok)))
    # The mocked clock reaches the templates that read it (else this test could not fail) ...
    assert (raw[0] != raw[1]) == spec.stamps_date
    # ... and the layouts render the same text on both dates.
    assert rendered[0] == rendered[1]


def test_the_pinned_date_is_the_rendering_threads_alone():
    """faithcb pins the date its own renders see, not the process's: a second thread rendering a
    template that stamps the date while faithcb's pin is held sees today, and faithcb the pinned day."""
    tok = tiny_tokenizer(chat_template=True)
    tok.chat_template = "{{ strftime_now('%Y-%m-%d') }}"
    messages = [{"role": "user", "content": "Q"}]

    def today() -> str:
        return datetime.now().strftime("%Y-%m-%d")

    seen: dict[str, str] = {}

    def elsewhere() -> None:
        seen["other thread"] = tok.apply_chat_template(messages, tokenize=False)

    before = today()
    with pinned_clock():
        other = threading.Thread(target=elsewhere)
        other.start()
        other.join()
        seen["pinned"] = tok.apply_chat_template(messages, tokenize=False)
    seen["render_chat"] = render_chat(tok, messages)
    seen["after"] = tok.apply_chat_template(messages, tokenize=False)
    pinned = FIXED_DATE.strftime("%Y-%m-%d")
    assert before != pinned  # else this test could not tell the two apart
    assert seen["other thread"] in (before, today())
    assert seen["pinned"] == seen["render_chat"] == pinned
    assert seen["after"] in (before, today())


@pytest.mark.parametrize("name", [n for n, s in TEMPLATES.items() if s.strips_history_reasoning])
def test_two_turn_is_refused_where_the_template_strips_reasoning_from_history(name):
    tok = template_tokenizer(name)
    with pytest.raises(ConfigError, match="two_turn"):
        prompter = Prompter.for_tokenizer(tok, PromptStyle(layout="two_turn"))
        prompter.pieces(NUMBER, tok)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_plain_ignores_the_template(name):
    spec = TEMPLATES[name]
    tok, prompter = _prompter(name, layout="plain")
    bare = tiny_tokenizer()
    reference = Prompter.for_tokenizer(bare, PromptStyle(layout="plain"))
    assert prompter.layout == "plain"
    assert resolve_layout(tok, "plain").layout == "plain"
    pieces = prompter.pieces(NUMBER, tok)
    assert pieces == reference.pieces(NUMBER, bare)
    assert prompter.think_opener == "" and prompter.think_closer == ""
    assert not any(marker in "".join(pieces) for marker in (*spec.specials, "<think>", "</think>"))


def test_auto_without_a_template_is_plain():
    tok = tiny_tokenizer()
    assert resolve_layout(tok, "auto").layout == "plain"
    assert Prompter.for_tokenizer(tok, PromptStyle(layout="auto")).layout == "plain"
