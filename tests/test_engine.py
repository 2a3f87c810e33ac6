"""FaithfulnessEngine end to end on tiny trained models."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch
from helpers.chains import ScriptedAnswers
from helpers.models import trained_model
from helpers.vocabulary import STYLE, probe_problems

from faithcb.data import Problem
from faithcb.engine import FaithfulnessEngine, ProbeSettings, aggregate
from faithcb.errors import ConfigError
from faithcb.lm import ProbeLM
from faithcb.preflight import resolve_evaluator
from faithcb.probes import probe_metrics
from faithcb.probes.base import STATUSES, chain_status
from faithcb.scoring import EndRule, ScoreRequest
from faithcb.testing import FAMILIES, tiny_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


PROBES = ("early_answering", "filler", "paraphrase", "info_gain")


def settings(**kw) -> ProbeSettings:
    values = {
        "probes": PROBES,
        "style": STYLE,
        "max_chain_tokens": 64,
        "answer_max_tokens": 4,
    }
    values.update(kw)
    return ProbeSettings(**values)


def run(model, tok, problems, **kw):
    engine = FaithfulnessEngine(model, tok, settings(**kw), show_progress=False, strict=True)
    return engine.run(problems)


@pytest.fixture(scope="module")
def models():
    return {family: trained_model(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def toks():
    return {chat: tiny_tokenizer(chat_template=chat) for chat in (False, True)}


@pytest.fixture(scope="module")
def llama_round(models, toks):
    return run(models["llama"], toks[False], probe_problems(3))


def assert_same_records(a: list[dict], b: list[dict], tol: float = 1e-4) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key in ("chain", "steps", "answer", "status"):
            assert ra[key] == rb[key]
        for probe in PROBES:
            assert (probe in ra) == (probe in rb)
            if probe not in ra:
                continue
            if probe == "info_gain":
                assert ra[probe]["logp_gold"] == pytest.approx(rb[probe]["logp_gold"], abs=tol)
            else:
                assert ra[probe]["agree"] == rb[probe]["agree"], probe
                assert ra[probe]["logp"] == pytest.approx(rb[probe]["logp"], abs=tol)


@pytest.mark.parametrize(
    ("family", "chat"), [("llama", False), ("llama", True), ("gpt2", True), ("qwen2", False)]
)
def test_fast_and_plain_paths_give_the_same_records(models, toks, llama_round, family, chat):
    model, tok = models[family], toks[chat]
    problems = probe_problems(3)
    fast = llama_round if (family, chat) == ("llama", False) else run(model, tok, problems, fast=True)
    plain = run(model, tok, problems, fast=False)
    assert_same_records(fast.records, plain.records)
    scored = [r for r in fast.records if r["status"] == "ok"]
    assert scored, [r["answer_text"] for r in fast.records]
    agree = [a for r in scored for p in ("early_answering", "filler", "paraphrase") for a in r[p]["agree"]]
    assert True in agree and False in agree  # both outcomes occur
    # The chain ends where the model wrote its layout's cue ("\nSo" in the plain one; in the chat
    # one the cue opens a new turn, so a "\nSo" the model writes inside its turn is chain text).
    chains = FaithfulnessEngine(model, tok, settings(), show_progress=False).chains
    assert [r["id"] for r in fast.records] == [p.id for p in problems]
    for problem, r in zip(problems, fast.records):
        assert chains.pieces(problem)[2] not in r["chain"]


def test_round_result_shape_and_json(llama_round):
    res = llama_round
    json.dumps(res.to_dict())  # records, metrics, curve: all JSON
    json.dumps(res.records)
    for name in ["accuracy", "unparsed_rate", "mean_steps", "mean_chain_tokens"] + [
        m.name for p in PROBES for m in probe_metrics(p)
    ]:
        m = res.metrics[name]
        assert set(m) == {"value", "ci_low", "ci_high", "n"}
        if m["n"] >= 2:
            assert m["ci_low"] <= m["value"] <= m["ci_high"], name
        elif m["n"] == 1:  # one problem: a value, but no interval
            assert math.isnan(m["ci_low"]) and math.isnan(m["ci_high"]), name
    assert len(res.curve["x"]) == len(res.curve["mean"]) == len(res.curve["ci_low"]) == 5
    assert res.scalars["problems_total"] == 3.0 and res.scalars["probe_errors"] == 0.0
    assert res.scalars["problems_scored"] == sum(r["status"] == "ok" for r in res.records)
    assert res.scalars["paraphrase_rejected"] == 0.0
    for r in res.records:
        if r["status"] != "ok":
            continue
        n = r["n_steps"]
        assert len(r["early_answering"]["agree"]) == n + 1 and r["early_answering"]["agree"][-1] is True
        assert len(r["filler"]["agree"]) == n and len(r["paraphrase"]["agree"]) == n
        assert len(r["info_gain"]["logp_gold"]) == n + 1
        assert all(lp <= 0 for lp in r["info_gain"]["logp_gold"])
    assert "early_answering_aoc" in res.metrics and "problems_scored" in res.scalars
    # aggregate() over the records again gives the same numbers
    again = aggregate(res.records)
    assert again.metrics == res.metrics


def test_early_answering_full_chain_answer_agrees_with_decoding(models, toks):
    """m(n) = 1 is not forced: the exact check must find a_full greedy under the full chain."""
    res = run(models["llama"], toks[True], probe_problems(3), probes=("early_answering",))
    for r in res.records:
        if r["status"] == "ok":
            assert r["early_answering"]["agree"][-1] is True


def test_choice_and_text_problems(models, toks):
    """A choice problem's answer is the letter scored highest after the cue; a text problem's is
    a_full's first non-empty line. Hand chains and a scripted a_full: what the tiny model writes
    after the cue differs between CPUs (on one its answer, " is ", ran into the token limit and
    the text problem came back unparsed). Fast and plain paths give the same records."""
    tok = toks[False]
    problems = [
        Problem("Which is 3 + 4?", "B", kind="choice", choices=("6", "7", "8"), id="c1"),
        Problem("Zoe has 2 pens, gets 3 more. How many pens now?", "five", kind="text", id="t1"),
    ]
    records = {}
    for fast in (True, False):
        lm = ScriptedAnswers(ProbeLM(models["llama"], tok, answer_max_tokens=16, fast=fast), " five\n")
        engine = FaithfulnessEngine(models["llama"], tok, settings(answer_max_tokens=16, fast=fast),
                                    show_progress=False, strict=True, lm=lm)
        with lm.session():
            records[fast] = engine.probe(engine.read_full_answers(hand_chains(engine, problems)))
    choice, text = records[True]
    assert choice["kind"] == "choice" and choice["answer"] in ("A", "B", "C")
    assert choice["correct"] == (choice["answer"] == "B")
    assert text["kind"] == "text" and text["answer"] == "five" and text["correct"] is True
    assert choice["status"] == text["status"] == "ok"
    # the letter is the model's own pick, so the full chain reproduces it (the text answer is scripted)
    assert choice["early_answering"]["agree"][-1] is True
    assert len(text["early_answering"]["agree"]) == len(text["steps"]) + 1
    json.dumps(aggregate(records[True]).to_dict())
    assert_same_records(records[True], records[False])


class ScriptedReplies(ScriptedAnswers):
    """A ScoringLM that is ``lm`` except that the i-th full-chain answer of a call is ``replies[i]``."""

    def __init__(self, lm, replies):
        super().__init__(lm, "")
        self._replies = list(replies)

    def answer(self, contexts):
        return [self._lm.encode(self._replies[i]) for i in range(len(contexts))]


HAND_CHAIN = "1+2=3. 3+4=7."


def hand_chains(engine, problems):
    """Chains written by hand that ended (what a tiny model writes is beside the point)."""
    return [engine.chain_from_text(p, HAND_CHAIN, key=i) for i, p in enumerate(problems)]


def test_unparsed_answers_are_counted_not_scored(models, toks):
    """Chains that ended, with a_full scripted: an answer that does not parse (" ??", and " 1.5
    million", which used to read 1.5) leaves its problem unparsed, counted and never probed."""
    tok = toks[False]
    lm = ScriptedReplies(ProbeLM(models["llama"], tok, answer_max_tokens=16), [" ??\n", " 1.5 million\n", " 7\n"])
    engine = FaithfulnessEngine(models["llama"], tok, settings(answer_max_tokens=16), show_progress=False,
                                strict=True, lm=lm)
    with lm.session():
        records = engine.probe(engine.read_full_answers(hand_chains(engine, probe_problems(3))))
    res = aggregate(records)
    for first in records[:2]:
        assert first["status"] == "unparsed" and first["answer"] is None and first["correct"] is None
        assert not first["truncated"] and not first["answer_truncated"]
        assert not any(p in first for p in PROBES)
    assert records[2]["status"] == "ok" and all(p in records[2] for p in PROBES)
    assert res.metrics["unparsed_rate"]["value"] == pytest.approx(2 / 3)
    assert res.metrics["accuracy"]["n"] == 1
    assert res.scalars["problems_unscored"] == 2


def test_chain_without_steps_is_no_steps(models, toks):
    """A chain the splitter finds no steps in is no_steps, whether or not its answer parses."""
    res = run(models["llama"], toks[False], probe_problems(2), splitter=lambda text: [])
    assert [r["status"] for r in res.records] == ["no_steps", "no_steps"]
    assert all(r["n_steps"] == 0 and "early_answering" not in r for r in res.records)
    assert math.isnan(res.metrics.get("early_answering_aoc", {"value": math.nan})["value"])


# Which status a chain gets when several apply: the first of STATUSES (no_steps > truncated >
# unparsed > ok), each condition made to happen on purpose.
_CONDITIONS = {"no_steps": "has no steps", "truncated": "was cut by the token limit", "unparsed": "answer does not parse"}


def _expected_status(conditions: set[str]) -> str:
    return next((status for status in STATUSES if status in conditions), "ok")


@pytest.mark.parametrize("conditions", [set(c) for n in range(4) for c in itertools.combinations(_CONDITIONS, n)],
                         ids=lambda c: "+".join(sorted(c)) or "none")
def test_chain_status_takes_the_first_status_that_applies(conditions):
    """Every pair (and triple) of conditions: the earlier status wins (a chain cut by the token
    limit whose answer does not parse is truncated, not unparsed)."""
    n_steps = 0 if "no_steps" in conditions else 2
    answer = None if "unparsed" in conditions else "7"
    assert chain_status(n_steps, answer, ended="truncated" not in conditions) == _expected_status(conditions)
    assert STATUSES == ("no_steps", "truncated", "unparsed", "ok")


@pytest.mark.parametrize("splitter", [None, lambda text: []], ids=["default splitter", "splitter finds none"])
def test_status_precedence_on_chains_written_on_purpose(models, toks, splitter):
    """The same precedence through the engine: chains written by hand (``chain_from_text``), cut or
    not, with or without steps, and a scripted full-chain answer that parses or not; each record's
    status is the first that applies, and the round's rates count what the records say."""
    cases = []
    for text, ended, parses in itertools.product(["1+2=3. 3+4=7.", ""], [True, False], [True, False]):
        conditions = set()
        if not text or splitter is not None:
            conditions.add("no_steps")
        if not ended:
            conditions.add("truncated")
        if not parses:
            conditions.add("unparsed")
        cases.append((text, ended, parses, conditions))
    records = []
    for parses in (True, False):  # one engine per scripted reply
        lm = ScriptedAnswers(ProbeLM(models["llama"], toks[False], answer_max_tokens=4), " 7\n" if parses else " seven\n")
        engine = FaithfulnessEngine(models["llama"], toks[False], settings(splitter=splitter), show_progress=False, lm=lm)
        (problem,) = probe_problems(1)
        mine = [c for c in cases if c[2] == parses]
        chains = [engine.chain_from_text(problem, text, key=k, ended=ended) for k, (text, ended, _, _) in enumerate(mine)]
        assert [c.ended for c in chains] == [ended for _, ended, _, _ in mine]
        answered = engine.read_full_answers(chains)
        assert [c.answer for c in answered] == ["7" if parses else None] * len(mine)
        with engine.lm.session():
            records += engine.probe(answered)
        for record, (text, ended, _, conditions) in zip(records[-len(mine):], mine):
            assert record["status"] == _expected_status(conditions), (text, ended, parses)
            assert ("early_answering" in record) == (record["status"] == "ok")
    ordered = [c for parses in (True, False) for c in cases if c[2] == parses]
    result = aggregate(records, seconds=0.0)
    assert result.metrics["truncated_rate"]["value"] == pytest.approx(
        sum("truncated" in c[3] for c in ordered) / len(ordered))
    assert result.metrics["unparsed_rate"]["value"] == pytest.approx(0.5)
    assert result.scalars["problems_scored"] == sum(_expected_status(c[3]) == "ok" for c in ordered)


def test_a_lone_newline_answer_was_cut_by_the_window(models, toks):
    """A newline opens an answer rather than ending it (``EndRule``): an answer that is only a
    newline was cut by the answer window, as generation cuts it, and its gold gets no terminator."""
    lm = ScriptedAnswers(ProbeLM(models["llama"], toks[False], answer_max_tokens=1), "\n")
    engine = FaithfulnessEngine(models["llama"], toks[False], settings(), show_progress=False, lm=lm)
    (problem,) = probe_problems(1)
    chain = engine.chain_from_text(problem, "1+2=3. 3+4=7.")
    (answered,) = engine.read_full_answers([chain])
    assert not answered.answer_ended and answered.answer is None and answered.status == "unparsed"
    assert answered.gold_ids == chain.gold_ids
    assert EndRule.for_answers(lm).ended(lm.encode(" 7\n"))  # after the answer's first token a newline ends it


def test_mistakes_probe_runs(models, toks, monkeypatch):
    """Hand chains with a scripted a_full, and every regenerated rest ended (the model's first
    tokens, under the limit), so every corrupted step is scored; fast and plain paths agree."""
    tok = toks[False]
    records = {}
    for fast in (True, False):
        lm = ScriptedReplies(ProbeLM(models["llama"], tok, answer_max_tokens=4, fast=fast), [" 7\n"] * 2)
        engine = FaithfulnessEngine(models["llama"], tok, settings(probes=("early_answering", "mistakes"), fast=fast),
                                    show_progress=False, strict=True, lm=lm)
        generate = lm.generate
        lm.generate = lambda prompts, **kw: [seq[:6] for seq in generate(prompts, **kw)]  # noqa: B023
        with lm.session():
            records[fast] = engine.probe(engine.read_full_answers(hand_chains(engine, probe_problems(2))))
    res = aggregate(records[True])
    for r in records[True]:
        m = r["mistakes"]
        assert m["ks"] == [1, 2] and m["truncated"] == 0 and 0.0 <= m["answer_changed_fraction"] <= 1.0
    assert "mistakes_answer_changed_fraction" in res.metrics and res.scalars["mistakes_truncated"] == 0.0
    for a, b in zip(records[True], records[False]):
        assert a["mistakes"]["agree"] == b["mistakes"]["agree"]
        assert a["mistakes"]["logp"] == pytest.approx(b["mistakes"]["logp"], abs=1e-4)


def test_probe_errors_are_reported_or_raised(models, toks, monkeypatch):
    from faithcb.probes.filler import FillerSubstitution

    def boom(self, chain):
        raise RuntimeError("filler exploded")

    monkeypatch.setattr(FillerSubstitution, "variants", boom)
    tok, model = toks[False], models["llama"]

    def scripted_engine(strict: bool) -> FaithfulnessEngine:
        """Hand chains that ended and a scripted a_full: every problem is scored, whatever a tiny model writes."""
        lm = ScriptedAnswers(ProbeLM(model, tok, answer_max_tokens=4), " 7\n")
        engine = FaithfulnessEngine(model, tok, settings(), show_progress=False, strict=strict, lm=lm)
        monkeypatch.setattr(engine, "generate_chains", lambda problems: hand_chains(engine, problems))
        return engine

    engine = scripted_engine(strict=False)
    res = engine.run(probe_problems(2))
    ok = [r for r in res.records if r["status"] == "ok"]
    assert len(ok) == 2
    for r in ok:
        assert r["errors"] == {"filler": "RuntimeError: filler exploded"}
        assert "filler" not in r and "early_answering" in r
    # One error per failed (problem, probe); the distinct messages once each.
    assert res.scalars["probe_errors"] == float(len(ok))
    assert res.errors == ["filler: RuntimeError: filler exploded"]
    # a probe whose record() fails is reported the same way
    from faithcb.probes.early_answering import EarlyAnswering

    monkeypatch.setattr(EarlyAnswering, "record", lambda self, chain, outcomes: 1 / 0)
    res = engine.run(probe_problems(2))
    ok = [r for r in res.records if r["status"] == "ok"]
    for r in ok:
        assert r["errors"]["early_answering"].startswith("ZeroDivisionError")
        assert "early_answering" not in r and "info_gain" in r
    # Two failed probes (filler, early answering) on every scorable problem.
    assert "early_answering_aoc" not in res.metrics and res.scalars["probe_errors"] == 2.0 * len(ok)
    strict = scripted_engine(strict=True)
    with pytest.raises(RuntimeError, match="filler exploded"):
        strict.run(probe_problems(2))
    assert torch.is_grad_enabled()


def test_evaluator_base_needs_peft(models, toks):
    with pytest.raises(ConfigError, match="PEFT"):
        FaithfulnessEngine(models["llama"], toks[False], settings(evaluator="base"), show_progress=False)


def test_evaluator_base_scores_gold_with_adapters_off(models, toks):
    peft = pytest.importorskip("peft")
    tok = toks[False]
    base = models["llama"]
    lora = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    lora.eval()
    problems = [Problem(p.question, p.answer, kind="text", id=p.id) for p in probe_problems(2)]
    probes = ("info_gain",)
    # The adapter changes the model (so "base" and "live" can differ): checked on the logits
    # themselves, not on what the two happen to write.
    ids = torch.tensor([tok("3 + 4 = 7. 7 - 2 = 5.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(lora(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-3)
    # With evaluator="base", gold log-probs are the base model's under the LoRA model's chains.
    # The chains and a_full are fixed here (what a noisy LoRA writes is beside the point), and
    # every L_k is recomputed by hand with the base model.
    lm = ScriptedAnswers(ProbeLM(lora, tok, answer_max_tokens=4), " 5\n")
    engine = FaithfulnessEngine(lora, tok, settings(probes=probes, evaluator="base"), show_progress=False,
                                strict=True, lm=lm)
    with lm.session():
        chains = [engine.chain_from_text(p, "3 + 4 = 7. 7 - 2 = 5.", key=i) for i, p in enumerate(problems)]
        based = engine.probe(engine.read_full_answers(chains))
    checked = 0
    for rec in based:
        if "info_gain" not in rec:
            continue
        assert rec["info_gain"]["logp_gold"] == pytest.approx(
            base_logp_gold(base, tok, rec), abs=1e-4
        )
        checked += 1
    assert checked


def base_logp_gold(model, tok, rec) -> list[float]:
    """L_k under ``model`` for the record's chain: prompt + steps 1..k + cue + gold, by hand."""
    from faithcb.prompting import Prompter

    problem = Problem(rec["question"], rec["gold"], kind=rec["kind"], id=rec["id"])
    prompter = Prompter.for_tokenizer(tok, STYLE)
    prompt, cue = prompter.pieces(problem, tok)
    gold = prompter.gold_continuation(problem)
    chain = rec["chain"]
    ends = [0]
    pos = 0
    for step in rec["steps"]:
        pos = chain.index(step, pos) + len(step)
        ends.append(pos)
    ends[-1] = len(chain)
    out = []
    for end in ends:
        ctx = tok(prompt, add_special_tokens=True)["input_ids"] + tok(chain[:end], add_special_tokens=False)[
            "input_ids"
        ] + tok(cue, add_special_tokens=False)["input_ids"]
        # Scored with a_full's terminator (the scripted a_full " 5\n" ends on a newline).
        gold_ids = tok(gold + "\n", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + gold_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        out.append(float(sum(lp[len(ctx) - 1 + j, t] for j, t in enumerate(gold_ids))))
    return out


def test_greedy_check_equals_unbatched_generate_on_engine_variants(models, toks):
    """For every context the probes build: exact check True <=> greedy decoding writes a_full."""
    model, tok = models["llama"], toks[False]
    engine = FaithfulnessEngine(model, tok, settings(), show_progress=False, strict=True)
    lm = engine.lm
    with lm.session():
        chains = engine.read_full_answers(engine.generate_chains(probe_problems(3)))
        ok = [c for c in chains if c.status == "ok"]
        assert ok
        for probe in engine.probes:
            if hasattr(probe, "prepare"):
                probe.prepare(ok, lm)
        requests = [
            ScoreRequest(c.prefix, v.prefix_cut(c), v.insert, c.cue_ids, (tuple(c.answer_ids),), group=c.key)
            for c in ok
            for probe in engine.probes
            for v in probe.variants(c)
        ]
        flags = {}
        for fast in (True, False):
            lm.fast = fast
            flags[fast] = [res.continuations[0].greedy for res in lm.score(requests)]
    assert flags[True] == flags[False]
    assert True in flags[True] and False in flags[True]
    with torch.no_grad():
        for req, flag in zip(requests, flags[True]):
            ctx, answer = req.context(), list(req.continuations[0])
            out = model.generate(
                input_ids=torch.tensor([ctx]),
                attention_mask=torch.ones(1, len(ctx), dtype=torch.long),
                max_new_tokens=len(answer),
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(lm.eos_ids),
            )
            assert (out[0, len(ctx) :].tolist() == answer) == flag


def test_auto_evaluator_is_the_base_model_with_peft_and_the_live_model_without(models, toks):
    peft = pytest.importorskip("peft")
    tok, base = toks[False], models["llama"]
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert resolve_evaluator("auto", lora) == "base" and resolve_evaluator("auto", base) == "live"
    assert resolve_evaluator("live", lora) == "live"
    assert FaithfulnessEngine(lora, tok, settings(), show_progress=False).evaluator == "base"
    assert FaithfulnessEngine(base, tok, settings(), show_progress=False).evaluator == "live"


@pytest.mark.parametrize("reply", [" 12.\n", "\n\n**12**\n", " 12 apples\n"])
def test_the_gold_answer_is_scored_in_a_full_s_own_format(models, toks, reply):
    """Issue 20, item 9: information gain scores y* as a_full writes its answer (" 12." gives
    " <gold>."), not as " <gold>" + a_full's terminator, so L_k carries no formatting term; when
    a_full is the gold answer, y* is a_full's own tokens."""
    tok = toks[False]
    (problem,) = probe_problems(1)
    for answer in ("12", problem.answer):
        lm = ScriptedAnswers(ProbeLM(models["llama"], tok, answer_max_tokens=16), reply.replace("12", answer))
        engine = FaithfulnessEngine(models["llama"], tok, settings(answer_max_tokens=16), show_progress=False, lm=lm)
        (chain,) = engine.read_full_answers(hand_chains(engine, [problem]))
        assert chain.answer == answer and chain.status == "ok"
        assert tok.decode(chain.gold_ids) == reply.replace("12", problem.answer)
    assert chain.gold_ids == chain.answer_ids  # a_full is the gold answer: the same tokens
