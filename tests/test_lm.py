"""ProbeLM: fast shared-prefix scoring == plain scoring, the exact greedy check, session hygiene."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from faithcb.lm import ProbeLM, lead_ids, newline_ids
from faithcb.packed import cache_keyword
from faithcb.scoring import EndRule, ScoreRequest, ScoringLM
from faithcb.testing import FAMILIES, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


TOL = 1e-4


@pytest.fixture(scope="module")
def models(tok):
    return {family: tiny_model(tok, family, seed=3) for family in FAMILIES}


def _rand(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(7, 100) for _ in range(n)]  # printable characters only (no specials)


def make_requests(lm: ProbeLM, seed: int = 0, with_greedy: bool = True) -> list[ScoreRequest]:
    """Two problems' worth of requests sharing a prefix: many cuts, inserts and continuations.

    Continuations mix random tokens (mostly not greedy) with the model's own greedy answer under
    the request's context (greedy by construction), so both values of the flag are compared.
    """
    rng = random.Random(seed)
    requests = []
    for problem in range(2):
        prompt, chain, cue = _rand(rng, 5), _rand(rng, 10), _rand(rng, 3)
        prefix = prompt + chain
        cuts = [len(prompt), len(prompt), len(prompt) + 1, len(prompt) + 4, len(prefix) - 1, len(prefix), 0]
        for i, cut in enumerate(cuts):
            insert = tuple(_rand(rng, [0, 1, 3, 6][i % 4]))
            this_cue = tuple(cue) if i not in (0, 5) else ()  # two with empty insert and cue
            conts = [(), tuple(_rand(rng, 1)), tuple(_rand(rng, 4))]
            rng.shuffle(conts)
            requests.append(ScoreRequest(prefix, cut, insert, this_cue, tuple(conts), (11, 12, 13), group=problem))
    # a problem whose every context starts at the insert (nothing of the prefix is kept)
    prefix = _rand(rng, 6)
    requests.append(ScoreRequest(prefix, 0, tuple(_rand(rng, 2)), (), ((), tuple(_rand(rng, 2))), (11, 12), group=2))
    if with_greedy:
        answers = lm.generate([r.context() for r in requests], max_new_tokens=3)
        requests = [
            ScoreRequest(r.prefix, r.cut, r.insert, r.cue, (*r.continuations, tuple(a)), r.choice_ids, group=r.group)
            for r, a in zip(requests, answers)
        ]
    return requests


def assert_same(a, b, tol: float = TOL) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert len(ra.continuations) == len(rb.continuations)
        for ca, cb in zip(ra.continuations, rb.continuations):
            assert ca.greedy == cb.greedy
            assert ca.logprob == pytest.approx(cb.logprob, abs=tol)
        assert len(ra.choice_logprobs) == len(rb.choice_logprobs)
        for xa, xb in zip(ra.choice_logprobs, rb.choice_logprobs):
            assert xa == pytest.approx(xb, abs=tol)


def score(model, tok, requests, **kw):
    lm = ProbeLM(model, tok, **kw)
    with lm.session():
        return lm.score(requests)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_path_equals_plain_path(models, tok, family):
    model = models[family]
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=FAMILIES.index(family))
    plain = score(model, tok, requests, fast=False)
    flags = [c.greedy for r in plain for c in r.continuations]
    assert any(flags) and not all(flags)  # both outcomes are exercised
    assert all(len(r.choice_logprobs) == len(req.choice_ids) for r, req in zip(plain, requests))
    assert_same(score(model, tok, requests, fast=True), plain)
    # chunking: fewer rows per forward pass than requests, on both paths
    assert_same(score(model, tok, requests, fast=True, max_batch_size=3), plain)
    # packing: one problem per pass; many short packed sequences (bins) per problem
    assert_same(score(model, tok, requests, fast=True, max_batch_tokens=1), plain)
    assert_same(score(model, tok, requests, fast=True, bin_tokens=4), plain)
    assert_same(score(model, tok, requests, fast=False, max_batch_size=2), plain)


def test_packed_passes_attend_to_grouped_key_value_heads_without_copies(models, tok, monkeypatch):
    """On CPU, probing hands SDPA the grouped-query keys as they are (``enable_gqa``), never
    transformers' ``repeat_kv`` copy of the cache, with the same scores as the plain path outside
    a session (which copies); the switch is transformers' own and is gone afterwards (a user's
    value is left alone)."""
    import transformers.integrations.sdpa_attention as sdpa_attention

    from faithcb.packed import FORCE_GQA, grouped_query_sdpa

    model = models["llama"]  # 4 query heads, 2 key/value heads
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    copies = []
    real_repeat_kv = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: copies.append(n) or real_repeat_kv(h, n))
    monkeypatch.delenv(FORCE_GQA, raising=False)
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=5)
    with torch.no_grad():  # outside a session: transformers copies the keys for every masked pass
        plain = ProbeLM(model, tok, fast=False).score(requests)
    assert copies  # so the counter does see repeat_kv
    copies.clear()
    assert_same(score(model, tok, requests, fast=True), plain)
    assert_same(score(model, tok, requests, fast=False), plain)
    assert copies == [] and FORCE_GQA not in os.environ
    mask, keys = torch.zeros(1, 1, 2, 3), torch.zeros(1, 2, 3, 8)
    with grouped_query_sdpa(torch.device("cpu")):
        assert sdpa_attention.use_gqa_in_sdpa(mask, keys, keys)  # the switch still exists in transformers
    assert not sdpa_attention.use_gqa_in_sdpa(mask, keys, keys)
    monkeypatch.setenv(FORCE_GQA, "0")
    with grouped_query_sdpa(torch.device("cpu")):
        assert not sdpa_attention.use_gqa_in_sdpa(mask, keys, keys)  # the user's choice stands
    assert os.environ[FORCE_GQA] == "0"


def test_problems_share_forward_passes(models, tok):
    """The packed path scores several problems per forward pass: packing them one per pass
    (``max_batch_tokens=1``) gives the same scores in more passes."""
    model = models["llama"]
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=5, with_greedy=False)
    together, alone = ProbeLM(model, tok), ProbeLM(model, tok, max_batch_tokens=1)
    with together.session():
        a = together.score(requests)
    with alone.session():
        b = alone.score(requests)
    assert_same(a, b)
    # two prefix-sharing problems: prefix, branch and continuation passes once for both, not twice
    assert together.counter.forward_calls < alone.counter.forward_calls
    assert sum(together.counter.stages.values()) == together.counter.processed
    assert sum(together.counter.real_stages.values()) == together.counter.real


def test_continuations_that_start_alike_share_their_packed_tokens(models, tok):
    """A request's continuations are packed as a trie: a head they share (gold and a_full, when the
    model is right) is fed once, and every continuation still scores as it does alone."""
    model = models["qwen2"]
    rng = random.Random(4)
    prefix, insert, cue = _rand(rng, 9), tuple(_rand(rng, 2)), tuple(_rand(rng, 3))
    a, b, c, d, e = rng.sample(range(7, 100), 5)
    conts = ((a, b, c, d), (a, b, c, e), (a, b, e), (e,), ())
    request = ScoreRequest(tuple(prefix), 7, insert, cue, conts, (11, 12), group=0)
    lm = ProbeLM(model, tok)
    with lm.session():
        fast = lm.score([request])
    assert_same(fast, score(model, tok, [request], fast=False))
    # the prefix up to the cut, insert + cue, then the trie's nodes: a, a-b, a-b-c (each
    # continuation's last token is only predicted): 3 tokens where packing them apart feeds 3 + 3 + 2
    assert lm.counter.real == 7 + len(insert) + len(cue) + 3


def test_the_bins_of_a_batch_share_one_width_with_little_padding(models):
    """Every row of a packed pass is padded to the longest, so one width is chosen for the whole
    batch's bins: the one, up to ``bin_tokens``, with the fewest padded positions. Three problems'
    early-answering and filler requests (chains of 90, 120 and 150 tokens, 8 cuts) come within 10%
    of their tokens (the former one-problem-at-a-time rule: 13.8%, in rows of 279)."""
    from faithcb.packed import PackedScorer, _branch_tokens
    from faithcb.scoring import TokenCounter

    scorer = PackedScorer(models["llama"], pad_id=0, answer_end=None, max_batch_size=16, max_batch_tokens=4096,
                          bin_tokens=256, counter=TokenCounter())
    rng = random.Random(0)
    problems = []
    for g, chain in enumerate((90, 120, 150)):
        prefix = tuple(_rand(rng, 40 + chain))
        requests = []
        for k in range(8):
            cut = 40 + chain * k // 8
            requests.append(ScoreRequest(prefix, cut, (), (5, 6, 7), ((8, 9, 10, 11), (8, 9, 12)), (), group=g))
            requests.append(ScoreRequest(prefix, cut, (3,) * (chain - chain * k // 8), (5, 6, 7), ((8, 9, 10, 11),), (),
                                         group=g))
        problems.append(requests)
    bins = scorer._bins(problems)
    assert sorted((g, r) for g, idx in bins for r in idx) == [(g, r) for g in range(3) for r in range(16)]
    loads = [sum(_branch_tokens(problems[g][r]) for r in idx) for g, idx in bins]
    assert max(loads) <= 256
    assert len(bins) * max(loads) <= 1.10 * sum(loads), (len(bins), max(loads), sum(loads))


# ---------------------------------------------------------------------------------- grouping
def test_requests_are_grouped_by_their_key_not_their_prefix_object(models, tok):
    model = models["llama"]
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=8)
    expected = score(model, tok, requests, fast=False)
    shared = ProbeLM(model, tok)
    with shared.session():
        assert_same(shared.score(requests), expected)
    # a copy of the prefix per request, same keys: the same sharing, the same numbers
    copies = ProbeLM(model, tok)
    with copies.session():
        assert_same(copies.score([dataclasses.replace(r, prefix=list(r.prefix)) for r in requests]), expected)
    assert copies.counter.stages == shared.counter.stages
    # a key per request: still exact, but every request reads its own prefix
    apart = ProbeLM(model, tok)
    with apart.session():
        assert_same(apart.score([dataclasses.replace(r, group=i) for i, r in enumerate(requests)]), expected)
    assert apart.counter.stages["prefix"] > shared.counter.stages["prefix"]
    # two problems under one key: their prefixes differ, which the packed path refuses
    with lm.session(), pytest.raises(ValueError, match="share their prefix"):
        lm.score([dataclasses.replace(r, group=0) for r in requests])


def test_the_group_key_is_required():
    with pytest.raises(TypeError):
        ScoreRequest([1, 2], 2, (), (), ((3,),))  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------- interfaces
def test_probe_lm_is_a_scoring_lm(models, tok):
    assert isinstance(ProbeLM(models["llama"], tok), ScoringLM)


def test_scoring_types_import_without_torch():
    code = "import sys, faithcb.scoring; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("chat", [False, True])
def test_newline_ids_are_the_ids_whose_text_has_a_newline(chat):
    """Answers end at the ids ``newline_ids`` lists; they used to be found by decoding each token."""
    tok = tiny_tokenizer(chat_template=chat)
    expected = {t for t in range(len(tok) + 5) if "\n" in tok.decode([t])}
    assert expected and newline_ids(tok) == expected
    assert ProbeLM(tiny_model(tok, "gpt2", hidden_size=16, num_layers=1), tok).newline_ids == expected


def test_one_end_rule_for_chains_answers_and_decoded_answers():
    """``EndRule``: an end id ends anywhere, a newline id only after the first token; the cut keeps
    the terminator or drops it; ``ended`` tells a terminated answer from one a limit cut."""
    END, NL, A, B = 1, 2, 7, 8
    answers = EndRule(frozenset({END}), frozenset({NL}))
    assert answers.cut([A, B, NL, A], keep=True) == [A, B, NL]
    assert answers.cut([A, B, NL, A], keep=False) == [A, B]
    assert answers.cut([NL, A, NL, B], keep=True) == [NL, A, NL]  # a leading newline opens the answer
    assert answers.cut([END, A], keep=True) == [END] and answers.cut([END, A], keep=False) == []
    assert answers.cut([A, B], keep=True) == [A, B] and answers.end([A, B]) is None
    assert answers.ended([A, NL]) and answers.ended([END]) and answers.ended([A, END])
    assert not answers.ended([NL]) and not answers.ended([A, B]) and not answers.ended([])
    chains = EndRule(frozenset({END}))  # a chain runs over lines: only its end ids end it
    assert chains.cut([A, NL, B, END, A], keep=False) == [A, NL, B] and chains.end([A, NL, B]) is None


def test_an_answer_ends_on_a_newline_only_once_it_has_started():
    """Lead ids (blank, markup, a colon) do not start an answer: "\\n\\n72\\n" and ":\\n\\n**72**\\n"
    are decoded to their answer; a newline token that carries the answer itself ("72\\n") ends it.
    Without lead ids the newline ids are the leads, so blank lines never end an answer either."""
    END, NL, NL2, COLON, STARS, A, B, A_NL = 1, 2, 3, 4, 5, 7, 8, 9
    rule = EndRule(frozenset({END}), frozenset({NL, NL2, A_NL}), frozenset({NL, NL2, COLON, STARS}))
    assert rule.cut([NL, NL2, A, NL, B], keep=True) == [NL, NL2, A, NL]
    assert rule.cut([COLON, NL, NL, STARS, A, STARS, NL, B], keep=True) == [COLON, NL, NL, STARS, A, STARS, NL]
    assert rule.cut([A_NL, A], keep=True) == [A_NL] and rule.ended([A_NL])
    assert not rule.ended([NL, NL, COLON]) and rule.end([END]) == 0
    plain = EndRule(frozenset({END}), frozenset({NL}))
    assert plain.cut([NL, NL, A, NL], keep=True) == [NL, NL, A, NL] and plain.cut([B, NL, A], keep=True) == [B, NL]


@pytest.mark.parametrize("chat", [False, True])
def test_lead_ids_are_the_ids_whose_text_only_precedes_an_answer(chat):
    tok = tiny_tokenizer(chat_template=chat)
    leads = {tok.decode([t]) for t in lead_ids(tok)}
    assert {"\n", " ", ":", "*", "_", "#", "$"} <= leads and not leads & {"7", ".", "a", "("}


def test_probe_lm_cuts_generation_by_the_end_rule(models, tok):
    """``generate``/``answer`` return what ``EndRule`` cuts from the model's uncut output, with end
    and newline ids picked from that output so that every case happens: an end id mid-answer, a
    newline id as the first token (not an end) and later (an end)."""
    lm = ProbeLM(models["llama"], tok, answer_max_tokens=10)
    rng = random.Random(4)
    contexts = [_rand(rng, 9) for _ in range(3)]
    with lm.session():
        lm.eos_ids = set()  # nothing ends: the model's own output, 10 tokens each
        uncut = lm.generate(contexts, max_new_tokens=10)
        assert all(len(seq) == 10 for seq in uncut)
        end, newline = uncut[0][4], uncut[1][0]
        lm.eos_ids, lm.newline_ids, lm.lead_ids = {end}, frozenset({newline}), frozenset({newline})
        chains = lm.generate(contexts, max_new_tokens=10)
        answers = lm.answer(contexts)
    rule = lm.answer_end
    assert rule == EndRule(frozenset({end}), frozenset({newline}), frozenset({newline}))
    assert chains == [EndRule(frozenset({end})).cut(seq, keep=False) for seq in uncut]
    assert answers == [rule.cut(seq, keep=True) for seq in uncut]
    assert len(answers[0]) <= 5 and answers[0][-1] in (end, newline)
    assert answers[1][0] == newline and len(answers[1]) > 1  # the leading newline did not end it


def test_cache_keyword_follows_the_model_signature(models):
    """transformers 5.x takes the KV cache as ``cache`` (``past_key_values`` warns), 4.x as
    ``past_key_values``; a PEFT-style wrapper passes it on to the model it wraps."""

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_base_model(self):
            return self.inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    assert cache_keyword(Old()) == "past_key_values"
    assert cache_keyword(Wrapper(Old())) == "past_key_values"
    for model in models.values():
        new = "cache" in inspect.signature(type(model).forward).parameters
        assert cache_keyword(model) == cache_keyword(Wrapper(model)) == ("cache" if new else "past_key_values")


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_scoring_raises_no_deprecation_warning(models, tok, family):
    lm = ProbeLM(models[family], tok)
    with lm.session():
        requests = [dataclasses.replace(r, decode_tokens=3) for r in make_requests(lm, seed=9)]
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            lm.score(requests)
    assert lm.counter.stages.get("decode", 0) > 0  # every packed stage ran


def test_scores_are_log_probabilities_of_the_continuation(models, tok):
    """Cross-check the plain path against a single unpadded forward pass computed here."""
    model = models["llama"]
    prefix = list(range(20, 32))
    req = ScoreRequest(prefix, 7, (40, 41), (50,), ((60, 61, 62),), (70, 71), group=0)
    (res,) = score(model, tok, [req], fast=True)
    ids = torch.tensor([[*prefix[:7], 40, 41, 50, 60, 61, 62]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    expected = float(lp[9, 60] + lp[10, 61] + lp[11, 62])
    assert res.continuations[0].logprob == pytest.approx(expected, abs=TOL)
    assert res.choice_logprobs == pytest.approx((float(lp[9, 70]), float(lp[9, 71])), abs=TOL)


# ---------------------------------------------------------------------------------- greedy check
def test_greedy_check_matches_greedy_decoding(models, tok):
    rng = random.Random(7)
    for family in FAMILIES:
        model = models[family]
        lm = ProbeLM(model, tok, answer_max_tokens=5)
        with lm.session():
            contexts = [_rand(rng, rng.randrange(3, 12)) for _ in range(8)]
            answers = lm.answer(contexts)
            requests = []
            for ctx, ans in zip(contexts, answers):
                assert ans
                bad = list(ans)
                j = rng.randrange(len(bad))
                bad[j] = 7 + (bad[j] - 7 + 1 + rng.randrange(90)) % 93  # any other printable char
                assert bad != ans
                requests.append(ScoreRequest(ctx, len(ctx), (), (), (tuple(ans), tuple(bad)), group=len(requests)))
            for fast in (True, False):
                lm.fast = fast
                for res in lm.score(requests):
                    assert res.continuations[0].greedy, family
                    assert not res.continuations[1].greedy, family


def test_answer_keeps_its_terminator(models, tok):
    lm = ProbeLM(models["gpt2"], tok, answer_max_tokens=6)
    lm.eos_ids = lm.eos_ids | {tok.convert_tokens_to_ids("a")}  # make "a" an end token
    with lm.session():
        (with_stop,) = lm.generate([[20, 21]], max_new_tokens=12, keep_stop=True)
        (without,) = lm.generate([[20, 21]], max_new_tokens=12)
    if with_stop[-1] in lm.eos_ids:
        assert without == with_stop[:-1]
    else:  # never hit an end token: both are the full budget
        assert without == with_stop


# ---------------------------------------------------------------------------------- session
def test_session_restores_everything(tok):
    model = tiny_model(tok, "llama", seed=1)
    model.train()
    model.config.use_cache = False
    model.lm_head.weight.requires_grad_(False)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    tok2 = tiny_tokenizer(padding_side="right")
    gen_config = model.generation_config.to_dict()
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    lm = ProbeLM(model, tok2)
    with lm.session():
        assert not model.training
        assert model.config.use_cache is True
        assert not torch.is_grad_enabled()
        lm.generate([[20, 21, 22]], max_new_tokens=5, do_sample=True)  # consumes the RNG
        random.random()
        np.random.rand()
        res = lm.score([ScoreRequest([20, 21, 22], 3, (), (), ((30,),), group=0)])
        assert res[0].continuations[0].logprob < 0

    assert model.training is True
    assert model.config.use_cache is False
    assert torch.is_grad_enabled()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert tok2.padding_side == "right"
    assert tok2.pad_token == "<pad>"
    assert model.generation_config.to_dict() == gen_config
    assert random.getstate() == states[0]
    after = np.random.get_state()
    assert after[0] == states[1][0] and np.array_equal(after[1], states[1][1]) and after[2:] == states[1][2:]
    assert torch.equal(torch.get_rng_state(), states[2])


def test_session_restores_after_an_error(tok):
    model = tiny_model(tok, "gpt2", seed=1)
    model.train()
    lm = ProbeLM(model, tok)
    with pytest.raises(RuntimeError, match="boom"), lm.session():
        raise RuntimeError("boom")
    assert model.training and torch.is_grad_enabled()


def test_seeded_sampling_is_reproducible(models, tok):
    lm = ProbeLM(models["qwen2"], tok)
    with lm.session():
        a = lm.generate([[20, 21], [30]], max_new_tokens=6, do_sample=True, seed=5)
        b = lm.generate([[20, 21], [30]], max_new_tokens=6, do_sample=True, seed=5)
    assert a == b


# ---------------------------------------------------------------------------------- tokenizers
@pytest.mark.parametrize("variant", ["no_pad", "right"])
def test_tokenizer_variants_give_the_same_results(models, tok, variant):
    model = models["llama"]
    left = tiny_tokenizer(padding_side="left")
    other = copy.deepcopy(tok)
    if variant == "no_pad":
        other.pad_token = None
        assert other.pad_token_id is None
    else:
        other.padding_side = "right"
    base_lm = ProbeLM(model, left)
    with base_lm.session():
        requests = make_requests(base_lm, seed=11)
        prompts = [[20, 21, 22], [30], [40, 41, 42, 43, 44, 45]]
        expected_gen = base_lm.generate(prompts, max_new_tokens=5)
    expected = {fast: score(model, left, requests, fast=fast) for fast in (True, False)}
    lm = ProbeLM(model, other)
    with lm.session():
        assert lm.generate(prompts, max_new_tokens=5) == expected_gen
    for fast in (True, False):
        assert_same(score(model, other, requests, fast=fast), expected[fast])
    assert (other.pad_token is None) == (variant == "no_pad")
    assert other.padding_side == ("right" if variant == "right" else tok.padding_side)


def test_batched_generation_equals_one_prompt_at_a_time(models, tok):
    """Left padding + mask must not change what greedy decoding writes."""
    model = models["gpt2"]
    prompts = [[20, 21, 22, 23, 24, 25, 26], [30], [40, 41, 42]]
    lm = ProbeLM(model, tok)
    with lm.session():
        batched = lm.generate(prompts, max_new_tokens=6)
    for prompt, got in zip(prompts, batched):
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0
            )
        new = out[0, len(prompt) :].tolist()
        eos = [i for i, t in enumerate(new) if t in lm.eos_ids]
        assert got == (new[: eos[0]] if eos else new)


# ---------------------------------------------------------------------------------- OOM halving
@pytest.mark.parametrize("fast", [True, False])
def test_oom_halving_gives_the_same_results(models, tok, monkeypatch, fast):
    model = models["qwen2"]
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=4, with_greedy=False)
    expected = score(model, tok, requests, fast=fast)

    real_forward = model.forward
    seen = []

    def forward(*args, **kwargs):
        batch = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[0]
        seen.append(batch)
        if batch > 1:
            raise torch.OutOfMemoryError("fake: batch too large")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    assert_same(score(model, tok, requests, fast=fast, max_batch_size=8), expected)
    assert max(seen) > 1 and any(b == 1 for b in seen)  # it failed, then halved

    lm = ProbeLM(model, tok)
    with lm.session():
        assert lm.generate([[20], [21], [22], [23], [24]], max_new_tokens=2)  # generation halves too
    # a single row that does not fit is a real error
    monkeypatch.setattr(model, "forward", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError), lm.session():
        lm.score(requests[:1])


# ------------------------------------------------------------------------- decode from the cache
def _decoding_contexts(family, tok, cuts):
    """A trained ``family`` model's ``ProbeLM`` and answer contexts ``(problem, prefix, cut, cue)``:
    its own chains on 3 problems, cut ``cuts`` tokens into the chain (None: the whole chain)."""
    from helpers.models import trained_model
    from helpers.vocabulary import STYLE, probe_problems

    from faithcb.prompting import Prompter

    lm = ProbeLM(trained_model(family, tok), tok, answer_max_tokens=6)
    prompter = Prompter(None, STYLE)
    contexts = []
    with lm.session():
        for p, problem in enumerate(probe_problems(3)):
            prompt, cue = prompter.pieces(problem, tok)
            prompt_ids = lm.encode(prompt)
            prefix = prompt_ids + lm.generate([prompt_ids], max_new_tokens=40)[0]
            for cut in cuts:
                at = len(prefix) if cut is None else len(prompt_ids) + cut
                contexts.append((p, prefix, at, tuple(lm.encode(cue))))
    return lm, contexts


@pytest.mark.parametrize("family", FAMILIES)
def test_mismatching_answers_are_decoded_like_generate(tok, family):
    """``decode_tokens``: where the exact check fails, both paths return exactly what greedy
    ``generate`` (via ``lm.answer``) writes under that context — the fast path from its cache.
    (Trained models: a random one has near-tied logits that batching noise can flip.)"""
    lm, contexts = _decoding_contexts(family, tok, (0, 12, 25, None))
    with lm.session():
        # (0, 0, 0) is never the greedy answer: every request must be decoded
        requests = [ScoreRequest(prefix, cut, (), cue, ((0, 0, 0),), (), 6, group=p) for p, prefix, cut, cue in contexts]
        expected = lm.answer([r.context() for r in requests])
        assert max(len(e) for e in expected) >= 3  # the decoding loop really runs
        # One problem at a time asks for no decoding: the fast path then decodes on a subset of
        # its packed rows, wherever that problem's row lands.
        for quiet in (None, 0, 1, 2):
            asked = [dataclasses.replace(r, decode_tokens=0) if i // 4 == quiet else r for i, r in enumerate(requests)]
            for fast in (True, False):
                lm.fast = fast
                for i, (res, want) in enumerate(zip(lm.score(asked), expected)):
                    assert not res.continuations[0].greedy
                    assert res.decoded == (None if i // 4 == quiet else tuple(want)), (family, fast, quiet)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_answer_that_differs_late_is_decoded_in_fewer_passes(tok, family):
    """An answer checked against a continuation that agrees with greedy decoding for its first
    tokens: the fast path starts decoding from what the scores already show (the agreeing head,
    then greedy's own token) and returns exactly what ``generate`` writes, in fewer passes."""
    lm, contexts = _decoding_contexts(family, tok, (12, None))
    with lm.session():
        expected = [lm.answer([[*prefix[:cut], *cue]])[0] for _, prefix, cut, cue in contexts]
        assert min(len(e) for e in expected) >= 3, expected  # room for a late difference

        def requests(agree: int | None):
            """Continuations equal to greedy's answer for its first ``agree`` tokens, then wrong;
            ``None``: the whole answer, its end included, then tokens past that end."""
            out = []
            for (p, prefix, cut, cue), want in zip(contexts, expected):
                if agree is None:
                    cont = (*want, 0, 0)
                else:
                    head = list(want[: min(agree, len(want) - 1)])
                    cont = (*head, (want[len(head)] + 1) % len(tok), 0)
                out.append(ScoreRequest(prefix, cut, (), cue, (cont,), (), 6, group=p))
            return out

        decode_calls = {}
        for agree in (0, 1, 6):
            lm.fast = True
            lm.counter = type(lm.counter)()
            results = lm.score(requests(agree))
            decode_calls[agree] = lm.counter.forward_calls
            lm.fast = False
            reference = lm.score(requests(agree))
            for res, ref, want in zip(results, reference, expected):
                assert not res.continuations[0].greedy
                assert res.decoded == ref.decoded == tuple(want), (family, agree)
    # each agreeing token is one decoding pass fewer; agreeing up to the last token needs none
    assert decode_calls[0] > decode_calls[1] > decode_calls[6], decode_calls

    # A checked continuation that runs past the end of greedy's answer: the answer stops at its
    # end token. One of the answer's own tokens is made an end token here, so that the case
    # happens whatever the tiny model writes.
    with lm.session():
        first = expected[0]
        end = next(i for i in range(1, len(first)) if first[i] not in first[:i])  # new to the answer
        lm.eos_ids = lm.eos_ids | {first[end]}
        expected = [lm.answer([[*prefix[:cut], *cue]])[0] for _, prefix, cut, cue in contexts]
        assert expected[0] == first[: end + 1]  # now ends there
        for fast in (True, False):
            lm.fast = fast
            for res, want in zip(lm.score(requests(None)), expected):
                assert not res.continuations[0].greedy
                assert res.decoded == tuple(want), (family, fast)


def _late_difference(want: list[int]) -> int | None:
    """A position of ``want`` whose token does not come back later in it, two or more tokens before its end."""
    return next((m for m in range(len(want) - 3, -1, -1) if want[m] not in want[m + 1:]), None)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_guessed_answer_rest_is_checked_in_the_first_decoding_pass(tok, family, monkeypatch):
    """Decoding feeds, behind greedy's first own token, the rest of the answer it was checked
    against (after that token where it comes back in it, else after the one it replaced) and keeps
    what greedy writes too: an answer that differs from the checked one by one replaced, or one
    skipped, token is decoded in one pass. A wrong guess is hidden again: the answers are exactly
    greedy's either way."""
    import faithcb.packed as packed

    lm, contexts = _decoding_contexts(family, tok, (12, None))
    stages: list[str] = []
    forward_packed = packed.PackedScorer._forward_packed

    def recording(self, cache, keys, rows, stage):
        stages.append(stage)
        return forward_packed(self, cache, keys, rows, stage)

    monkeypatch.setattr(packed.PackedScorer, "_forward_packed", recording)
    with lm.session():
        expected = [lm.answer([[*prefix[:cut], *cue]])[0] for _, prefix, cut, cue in contexts]
        cases = [(ctx, want, m) for ctx, want in zip(contexts, expected) if (m := _late_difference(want)) is not None]
        assert len(cases) >= 2, expected  # the tiny model's answers leave room for a guess

        def decode_passes(checked) -> list[int]:
            """Decoding passes per batch of problems (each opens with its branch pass; the prefix pass
            is not a packed one), every case checked against ``checked(want, m)``."""
            requests = [ScoreRequest(prefix, cut, (), cue, (checked(want, m),), (), 6, group=p)
                        for (p, prefix, cut, cue), want, m in cases]
            stages.clear()
            for res, ((_p, _prefix, _cut, _cue), want, _m) in zip(lm.score(requests), cases):
                assert not res.continuations[0].greedy
                assert res.decoded == tuple(want), (family, checked)
            return [len(run) for run in "".join("b" if s == "branch" else "d" for s in stages).split("b")[1:]]

        other = lambda t: (t + 1) % len(tok)  # noqa: E731
        replaced = decode_passes(lambda want, m: (*want[:m], other(want[m]), *want[m + 1:]))
        skipped = decode_passes(lambda want, m: (*want[:m], other(want[m]), *want[m:]))
        wrong = decode_passes(lambda want, m: (*want[:m], other(want[m]), other(want[m + 1]), *want[m + 2:]))
    assert max(replaced) == max(skipped) == 1, (replaced, skipped)
    assert max(wrong) > 1, wrong  # the same answers without a right guess take more passes


# ------------------------------------------------------------------ sliding-window attention
def test_sliding_window_models_score_exactly(tok):
    """Sliding-window layers crop their cache, which packing outgrows: such models take the plain
    path (without the fallback the packed pass fails on a cache shorter than its mask)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=6,
        max_window_layers=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    assert "sliding_attention" in config.layer_types
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    lm = ProbeLM(model, tok)
    with lm.session():
        requests = make_requests(lm, seed=6)
    plain = score(model, tok, requests, fast=False)
    assert_same(score(model, tok, requests, fast=True), plain)
    assert not ProbeLM(model, tok).packs
    # the same model without its window packs again (and still matches)
    model.config.use_sliding_window = False
    model.config.layer_types = ["full_attention"] * config.num_hidden_layers
    assert ProbeLM(model, tok).packs


# ------------------------------------------------------------------ attention kernels: fail closed
def _config_after_a_rename(config):
    """``config`` as a transformers that renamed the kernel's attribute would hand it over: neither
    ``_attn_implementation`` nor ``_attn_implementation_internal`` answers, the name sits elsewhere."""

    class Renamed(type(config)):
        @property
        def _attn_implementation(self):
            raise AttributeError("_attn_implementation")

    renamed = copy.deepcopy(config)
    kernel = renamed.__dict__.pop("_attn_implementation_internal")
    renamed.__dict__["attn_kernel"] = kernel
    renamed.__class__ = Renamed
    return renamed


def test_a_kernel_the_config_does_not_name_takes_the_plain_path(models, tok):
    """The packed mask is wrong for every kernel but sdpa and eager: a config whose kernel cannot be
    read (renamed attribute) or is not one of those two must not pack (it used to default to sdpa)."""
    from faithcb.packed import attention_implementation, mask_dtype, packing_supported

    model = models["llama"]
    assert attention_implementation(model.config) == "sdpa" and packing_supported(model.config)
    renamed = _config_after_a_rename(model.config)
    assert attention_implementation(renamed) is None
    assert not packing_supported(renamed)
    unknown = copy.deepcopy(model.config)
    unknown._attn_implementation = "flash_attention_3"
    assert attention_implementation(unknown) == "flash_attention_3"
    assert not packing_supported(unknown)
    for config in (renamed, unknown, None):
        with pytest.raises(ValueError, match="sdpa or eager"):
            mask_dtype(config)
    # ... and ProbeLM reads the model's own config through the same check.
    lm = ProbeLM(model, tok)
    assert lm.packs
    original = model.config
    try:
        model.config = renamed
        assert not lm.packs
        model.config = unknown
        assert not lm.packs
    finally:
        model.config = original
