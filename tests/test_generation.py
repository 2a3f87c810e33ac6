"""Chain generation paths (faithcb/generation.py): greedy chains are token-identical on CPU in float32.

Every path runs on the same trained tiny model with prompts of different lengths (so the
left-padded paths pad), more prompts than one batch (so the static path has a short last batch),
once with room for the chains to end at their end token and once with a limit that cuts them.
"""

from __future__ import annotations

import types

import pytest
import torch
from helpers.models import trained_model
from helpers.vocabulary import STYLE, probe_problems

from faithcb.engine import FaithfulnessEngine
from faithcb.errors import ConfigError
from faithcb.generation import ChainGenerator, check_generation
from faithcb.lm import ProbeLM
from faithcb.settings import GENERATION_PATHS, ProbeSettings

PATHS = GENERATION_PATHS  # ("generate", "static", "continuous")


@pytest.fixture(scope="module")
def model(tok, one_thread):
    return trained_model("llama", tok)


@pytest.fixture(scope="module")
def prompts(tok, model):
    engine = FaithfulnessEngine(model, tok, ProbeSettings(style=STYLE), show_progress=False)
    return [engine.prompt_ids(p) for p in probe_problems(5)]


def _generate(model, tok, prompts, path, max_new_tokens, end: int | None = None, **kw):
    lm = ProbeLM(model, tok)
    if end is not None:
        lm.eos_ids = {end}  # the end token, chosen so that every chain reaches it
    with lm.session():
        out = ChainGenerator(lm, path, batch_size=2, **kw)(prompts, max_new_tokens=max_new_tokens)
    return out, lm.counter


@pytest.mark.parametrize("max_new_tokens", [120, 7], ids=["ended", "cut"])
def test_greedy_chains_token_identical_across_paths(model, tok, prompts, max_new_tokens):
    assert len({len(p) for p in prompts}) > 1, "prompts of one length would not test padding"
    eos = None
    if max_new_tokens == 120:
        # Every chain ends on purpose: the end token is one every chain writes early (whether a
        # tiny model writes its own end token within the limit depends on the thread count).
        uncut, _ = _generate(model, tok, prompts, "generate", 120)
        eos = next(t for t in uncut[0][2:] if all(t in seq[:-1] for seq in uncut))
    results = {path: _generate(model, tok, prompts, path, max_new_tokens, end=eos) for path in PATHS}
    reference, counter = results["generate"]
    if max_new_tokens == 120:  # the chains end: the end token is kept
        assert all(seq and seq[-1] == eos and eos not in seq[:-1] for seq in reference), reference
    else:  # every chain is cut by the limit
        assert all(len(seq) == max_new_tokens and tok.eos_token_id not in seq for seq in reference)
    for path in PATHS:
        ids, path_counter = results[path]
        assert ids == reference, f"{path} differs from generate"
        assert path_counter.generated == counter.generated
        assert path_counter.real == counter.real  # every prompt token was read, once
    assert results["generate"][1].processed > counter.real  # left padding (continuous pads nothing)
    assert results["continuous"][1].processed == counter.real


@pytest.mark.parametrize("path", PATHS)
def test_stop_ids_end_each_chain_and_the_decode_loop(model, tok, prompts, path):
    """An extra stop id (the think layout's ``</think>``) ends each chain where it first appears,
    kept like the end token, and decoding stops there: fewer forward passes than without it."""
    forwards = []
    hook = model.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        full, _ = _generate(model, tok, prompts, "generate", 120)
        without = len(forwards)
        # A token every chain reaches within a few steps, chosen from what the model writes.
        stop = next(t for t in full[0][2:] if all(t in seq[:-1] for seq in full))
        expected = [seq[: seq.index(stop) + 1] for seq in full]
        forwards.clear()
        ids, counter = _generate(model, tok, prompts, path, 120, stop_ids={stop})
    finally:
        hook.remove()
    assert ids == expected and expected != full
    assert counter.generated == sum(map(len, expected))
    assert len(forwards) < without, "decoding ran past the stop id"


@pytest.mark.slow
def test_static_compiled_decode_step_identical_and_training_after_it(model, tok, prompts):
    """The compiled decode step (dynamo-traced; the 'eager' backend keeps the test fast, inductor
    takes minutes on CPU) gives the same chains, and training (gradient checkpointing on) still
    runs the eager module afterwards, with the same loss and gradients as a model never compiled."""
    from transformers import CompileConfig

    reference, _ = _generate(model, tok, prompts, "generate", 40)
    compiled = trained_model("llama", tok)
    ids, _ = _generate(compiled, tok, prompts, "static", 40, compile=CompileConfig(backend="eager", dynamic=False))
    assert ids == reference
    assert hasattr(compiled, "_compiled_call"), "the static path did not compile its decode step"

    batch = torch.tensor([prompts[0] + reference[0]])
    grads = []
    for m in (trained_model("llama", tok), compiled):
        m.train()
        if hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loss = m(input_ids=batch, labels=batch).loss
        loss.backward()
        grads.append((float(loss.detach()), m.model.layers[0].self_attn.q_proj.weight.grad.clone()))
        (getattr(m, "activation_checkpointing_disable", None) or m.gradient_checkpointing_disable)()
        m.eval()
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


@pytest.mark.parametrize("path", ["static", "continuous"])
def test_engine_chains_identical(model, tok, path):
    problems = probe_problems(3)

    def chains(generation):
        engine = FaithfulnessEngine(
            model, tok, ProbeSettings(style=STYLE, generation=generation, batch_size=2, max_chain_tokens=96),
            show_progress=False,
        )
        with engine.lm.session():
            return engine.generate_chains(problems)

    reference, other = chains("generate"), chains(path)
    assert [c.chain_ids for c in other] == [c.chain_ids for c in reference]
    assert [c.ended for c in other] == [c.ended for c in reference]
    assert any(c.status == "ok" or c.steps for c in reference), "the chains have no steps to compare"


def test_continuous_needs_generate_batch():
    # An older transformers (before continuous batching) cannot be installed next to this one:
    # a model object without generate_batch stands in for it.
    old_model = types.SimpleNamespace(generate=lambda **kw: None)
    with pytest.raises(ConfigError, match="generate_batch"):
        check_generation(old_model, "continuous")
    check_generation(old_model, "generate")
    with pytest.raises(ConfigError, match="generation"):
        check_generation(old_model, "beam")


# ---------------------------------------------------------------------------------- regressions
# Moved from tests/test_regressions.py (issue 13's review, one bug each; issue 19 sorted them by subject).


@pytest.mark.slow
def test_faith_do_sample_samples_chains_through_engine_and_callback(tok, tmp_path, one_thread):
    """Regression (issue 13, bug 9): ``faith_do_sample`` ignored; the sampling path end to end.

    Through the callback: a round with faith_do_sample (high temperature, two samples per problem)
    records chains that differ from the greedy round's and from each other. Through the engine: the
    same seed gives the same chains, another seed other chains, and the global RNG is left as it was.
    """
    import json

    from helpers.models import pretrained_model
    from helpers.models import tiny_engine as engine_for
    from helpers.trainers import attach, faith_config, make_trainer
    from helpers.vocabulary import arithmetic_problems as probe_problems

    def round_records(out, **overrides) -> list[dict]:
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

