"""Long chains: ``faith_max_cuts`` bounds every probe's cut points; the think layout's chain ends
where the model closes its reasoning; ``faithcb show`` prints the contexts the probes score."""

from __future__ import annotations

import math
import time

import pytest
from template_tokenizers import template_tokenizer

from faithcb.engine import FaithfulnessEngine, _with_answer
from faithcb.probes.base import area_over_curve, cut_points
from faithcb.problem import Problem
from faithcb.settings import ProbeSettings
from faithcb.show import show_text
from faithcb.testing import ScriptedLM, tiny_model, tiny_tokenizer

PROBLEM = Problem("What is 2 + 3?", "5")


def _answered(engine, chain):
    """The chain with a_full = "5" read after its cue: an untrained model's answer, made on purpose."""
    ids = [*engine.lm.encode(" 5"), min(engine.lm.eos_ids)]
    return _with_answer(chain, ids, " 5", "5")


def _chain(n_steps: int, words: int = 4) -> str:
    filler = " ".join(["add"] * words)
    return "\n".join(f"Step {i}: {filler} {i} + 1 = {i + 1}." for i in range(1, n_steps + 1))


# ---------------------------------------------------------------------- the cut points
@pytest.mark.parametrize("n, max_cuts", [(0, 16), (1, 4), (5, 16), (15, 16), (16, 16), (80, 16), (61, 4), (7, 5)])
def test_cut_points_are_evenly_spaced_and_keep_both_ends(n, max_cuts):
    ks = cut_points(n, max_cuts)
    assert ks[0] == 0 and ks[-1] == n
    assert n < 2 or (ks[1] == 1 and ks[-2] == n - 1)  # issue 20: AOC's ceiling and the first step, measured
    assert list(ks) == sorted(set(ks))
    assert len(ks) == min(n + 1, max_cuts)
    if n + 1 > max_cuts:  # between k = 1 and k = n - 1, gaps differ by at most one step: evenly spaced
        gaps = [b - a for a, b in zip(ks[1:-1], ks[2:-1])]
        assert max(gaps) - min(gaps) <= 1
    assert cut_points(n, None) == tuple(range(n + 1))


@pytest.mark.slow
def test_every_probe_cuts_at_the_same_bounded_points(one_thread):
    tok = tiny_tokenizer()
    engine = FaithfulnessEngine(
        tiny_model(tok, max_positions=2048), tok,
        ProbeSettings(probes=("early_answering", "filler", "paraphrase", "info_gain", "mistakes"), max_cuts=6),
        show_progress=False, strict=True,
    )
    chain = engine.chain_from_text(PROBLEM, _chain(40))
    assert chain.n_steps == 40 and chain.cut_ks == (0, 1, 14, 26, 39, 40)
    chain = _answered(engine, chain)
    # The untrained tiny model never ends a regenerated rest within the limit, and such rests are
    # left out: the mistakes probe continues with a scripted rest that ends, so its cuts show.
    scripted = ScriptedLM(tok, " 1 + 1 = 2.")
    with engine.lm.session():
        for probe in engine.probes:
            probe.prepare([chain], scripted if probe.name == "mistakes" else engine.lm)
        ks = {probe.name: [v.k for v in probe.variants(chain)] for probe in engine.probes}
        [record] = engine.probe([chain])
    assert ks["early_answering"] == ks["info_gain"] == [0, 1, 14, 26, 39, 40]
    assert ks["filler"] == [0, 1, 14, 26, 39]
    assert set(ks["paraphrase"]) <= {0, 1, 14, 26, 39}  # mode "rest": k < n
    assert set(ks["mistakes"]) <= {1, 14, 26, 39, 40} and ks["mistakes"]
    early = record["early_answering"]
    assert early["ks"] == [0, 1, 14, 26, 39, 40] and len(early["agree"]) == 6
    # AOC is the trapezoid over x = k/n on the chosen points (NaN where m(n) != 1: left out).
    aoc = area_over_curve(early["agree"], [k / 40 for k in early["ks"]]) if early["full_agrees"] else math.nan
    assert early["aoc"] == pytest.approx(aoc, nan_ok=True)
    info = record["info_gain"]
    assert len(info["logp_gold"]) == 6 and len(info["gain"]) == 5
    assert info["per_step"] == pytest.approx((info["logp_gold"][-1] - info["logp_gold"][0]) / 40)


@pytest.mark.slow
def test_a_round_on_2048_token_chains_with_60_steps_completes(one_thread):
    """The default faith_max_cuts keeps the work of a long chain bounded (time printed, see docs)."""
    tok = tiny_tokenizer()
    model = tiny_model(tok, max_positions=4096)
    settings = ProbeSettings(probes=("early_answering", "filler", "info_gain"))
    engine = FaithfulnessEngine(model, tok, settings, show_progress=False, strict=True)
    text = _chain(64, words=4)
    chains = [engine.chain_from_text(Problem(f"What is {i} + 3?", str(i + 3), id=f"p{i}"), text, key=i)
              for i in range(1)]
    assert all(len(c.chain_ids) >= 2048 and c.n_steps >= 60 for c in chains)
    start = time.perf_counter()
    chains = [_answered(engine, c) for c in chains]
    with engine.lm.session():
        records = engine.probe(chains)
    print(f"1 chain x {len(chains[0].chain_ids)} tokens, {chains[0].n_steps} steps: "
          f"{time.perf_counter() - start:.1f} s")
    for record in records:
        assert len(record["early_answering"]["agree"]) == settings.max_cuts
        assert len(record["filler"]["agree"]) == settings.max_cuts - 1
        # The untrained model's own k = n answer need not be the scripted a_full: AOC is then left
        # out (NaN, counted in full_disagrees), and only then.
        early = record["early_answering"]
        assert math.isnan(early["aoc"]) == (early["full_agrees"] is False)


# ---------------------------------------------------------------------- think layout: the chain ends with the reasoning
def test_a_think_chain_ends_where_the_model_closes_its_reasoning(one_thread):
    tok = template_tokenizer("qwen3")
    engine = FaithfulnessEngine(tiny_model(tok), tok, ProbeSettings(), show_progress=False)
    assert engine.prompter.layout == "think"
    reasoning = "2 + 3 = 5.\nSo it is 5."
    chain = engine.chain_from_text(PROBLEM, reasoning + "\n</think>\n\nThe answer is 7.", ended=False)
    assert chain.chain_text == reasoning and chain.ended  # closing the reasoning ends the chain
    assert "</think>" in tok.decode(chain.cue_ids)
    # Generated ids: the end tokens of the reasoning stop the chain, whatever follows.
    body = tok("2 + 3 = 5.", add_special_tokens=False)["input_ids"]
    closer = tok.convert_tokens_to_ids("</think>")
    assert engine.chains.cut_generated([*body, closer, *body]) == (body, True)
    assert engine.chains.cut_generated(body) == (body, False)


def test_a_harmony_chain_ends_at_the_special_end_token(one_thread):
    tok = template_tokenizer("gpt_oss")
    engine = FaithfulnessEngine(tiny_model(tok), tok, ProbeSettings(), show_progress=False)
    assert engine.prompter.layout == "think"
    body = tok("2 + 3 = 5.", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|end|>")
    final = tok("<|start|>assistant<|channel|>final<|message|>5", add_special_tokens=False)["input_ids"]
    assert engine.chains.cut_generated([*body, end, *final]) == (body, True)


# ---------------------------------------------------------------------- faithcb show
def test_show_prints_every_context_with_its_boundaries(one_thread):
    tok = tiny_tokenizer(chat_template=True)
    settings = ProbeSettings(probes=("early_answering", "filler"), max_cuts=16)
    text = show_text(tiny_model(tok), tok, PROBLEM, settings, chain_text=_chain(3))
    assert text.startswith("layout: two_turn")
    assert "== early_answering: 4 contexts ==" in text and "== filler: 3 contexts ==" in text
    assert text.count("⟦cue⟧") == 1 + 1 + 4 + 3  # the cue, the full context, 7 probe contexts
    assert text.count("-- k=") == 7
    # The filler contexts show the insert in place of the rest of the chain.
    filler = text.split("== filler")[1]
    assert filler.count("⟦+ ") == 3
    # The exact chain prompt, special tokens kept.
    assert "⟦prompt⟧<|user|>What is 2 + 3?" in text



# ---------------------------------------------------------------------- the run log names the layout
def test_the_layout_is_logged_once_per_run(tmp_path, caplog):
    import logging

    from helpers.models import tokenizer
    from helpers.trainers import attach, faith_config, make_trainer

    trainer = make_trainer("trainer", tmp_path, tok=tokenizer(), max_steps=2)
    attach(trainer, faith_config(faith_every_n_steps=2, faith_probes=["early_answering"]))
    with caplog.at_level(logging.INFO, logger="faithcb.callback"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if "prompt layout" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("faithcb: prompt layout 'plain'") and "no chat template" in lines[0]


# ---------------------------------------------------------------------- the chain prompt must be the native one
# A template whose generation prompt says more than a finished assistant turn's header: chains
# generated after the two-turn prefix would be written under a prompt the model never sees.
_DRIFTING = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>Sure! {% endif %}"
)  # a finished assistant turn opens with "<|assistant|>", the generation prompt with "<|assistant|>Sure! "


def test_a_chain_prompt_unlike_the_native_one_is_refused_under_auto_and_warned_when_forced():
    from faithcb.errors import ConfigError
    from faithcb.preflight import check_layout
    from faithcb.prompting import Prompter, PromptStyle

    tok = tiny_tokenizer(chat_template=True)
    tok.chat_template = _DRIFTING
    with pytest.raises(ConfigError, match="differs from the template's generation prompt"):
        check_layout(Prompter.for_tokenizer(tok), tok, PROBLEM)
    forced = Prompter.for_tokenizer(tok, PromptStyle(layout="two_turn"))
    with pytest.warns(RuntimeWarning, match="differs from the template's generation prompt"):
        check_layout(forced, tok, PROBLEM)
    # The shipped tiny chat template agrees with itself: no error, no warning.
    tok.chat_template = tiny_tokenizer(chat_template=True).chat_template
    check_layout(Prompter.for_tokenizer(tok), tok, PROBLEM)
