"""One probe round, in three typed phases: generate chains → read full-chain answers → probe.

``FaithfulnessEngine`` serves both the training callback (on the live model, in place) and
``faithcb eval`` (on a saved checkpoint). ``records()`` turns problems into JSON-serializable
per-problem records (under DDP each process does its share); ``faithcb.results.aggregate`` turns
everyone's records into the round's metrics. The phases are public so tests and benchmarks can
run them one at a time, or start from chains they wrote themselves (``chain_from_text``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from faithcb.errors import ConfigError
from faithcb.generation import ChainGenerator, check_generation
from faithcb.lm import ProbeLM
from faithcb.preflight import check_setup, resolve_evaluator
from faithcb.probes import ProbeContext, build_probes
from faithcb.probes.base import Chain, Outcome, Variant, chain_status
from faithcb.problem import Problem
from faithcb.prompting import LETTERS, Prompter
from faithcb.results import RoundResult, aggregate, chain_record
from faithcb.scoring import EndRule, ScoreRequest, ScoreResult, ScoringLM
from faithcb.settings import ProbeSettings
from faithcb.text import answer_is_computation, before_cue, extract_answer, locate_steps, step_spans

__all__ = ["FaithfulnessEngine", "ProbeSettings", "RoundResult", "aggregate"]


@dataclass
class _Context:
    """One distinct context to score (variants with the same cut and insert share it) and its results."""

    chain: Chain
    variant: Variant
    wants_gold: bool = False
    result: ScoreResult | None = None
    base_gold: float | None = None  # log p(gold) under the PEFT base model (evaluator "base")
    decoded: str | None = None  # the variant's own normalized answer, where the exact check failed


@dataclass(frozen=True)
class _Planned:
    """One probe's variants of one chain."""

    chain: Chain
    probe: Any
    variants: list[Variant]


class FaithfulnessEngine:
    """Runs probe rounds on one model (and tokenizer) in place.

    Args:
        model: a causal LM (``transformers`` or PEFT); used in place, its state restored after.
        tokenizer: its fast tokenizer (offsets are needed to map steps to tokens).
        settings: what to measure (``ProbeSettings()`` by default, the callback's defaults).
        paraphrase_model: ``(model, tokenizer)`` for ``paraphraser="model"`` when it should not be
            the probed model itself.
        show_progress: progress bars during a round.
        strict: re-raise probe failures instead of recording them.
        lm: the ``ScoringLM`` to use instead of a ``ProbeLM`` on ``model`` (a wrapper that counts
            or scripts calls; it must serve the same model and tokenizer).

    A missing or slow tokenizer, a layout the chat template cannot render, or a base evaluator
    without PEFT raises ``ConfigError`` here, before any round.

    Example::

        engine = FaithfulnessEngine(model, tokenizer, ProbeSettings(max_chain_tokens=256))
        result = engine.run(ProbeSet.load("heldout.jsonl").sample(16, seed=0))
        print(result.metrics["early_answering_aoc"])
    """

    def __init__(
        self,
        model,
        tokenizer,
        settings: ProbeSettings | None = None,
        *,
        paraphrase_model=None,
        show_progress: bool = True,
        strict: bool = False,
        lm: ScoringLM | None = None,
    ):
        self.settings = settings or ProbeSettings()
        s = self.settings
        self.prompter = Prompter.for_tokenizer(tokenizer, s.style)
        check_setup(model, tokenizer, self.prompter, s.evaluator, None)
        check_generation(model, s.generation)
        # A model trained on the cue-then-gold layout is calibrated on the answer slot, so the
        # live model's log p(gold) mixes that calibration into information gain; with PEFT the
        # frozen base model is the cleaner evaluator, and "auto" takes it.
        self.evaluator = resolve_evaluator(s.evaluator, model)
        self.lm: ScoringLM = lm or ProbeLM(
            model, tokenizer, fast=s.fast, max_batch_size=s.batch_size, answer_max_tokens=s.answer_max_tokens
        )
        self.show_progress = show_progress
        self.strict = strict
        self._letter_cache: dict[tuple[str, int], tuple[int, ...]] = {}
        self._prompt_cache: dict[Problem, tuple[list[int], list[int], str]] = {}
        self._reasoning_end_ids = _single_token_ids(tokenizer, self.prompter.reasoning_end)
        paraphraser = s.paraphraser
        if paraphraser == "model":
            from faithcb.probes.paraphrase import ModelParaphraser

            para_lm = self.lm if paraphrase_model is None else ProbeLM(*paraphrase_model, max_batch_size=s.batch_size)
            paraphraser = ModelParaphraser(para_lm)
        context = ProbeContext(
            encode=self.lm.encode, paraphraser=None if paraphraser == "rule" else paraphraser,
            max_chain_tokens=s.max_chain_tokens,
        )
        self.probes = build_probes(s.probes, context)

    # ------------------------------------------------------------------ a whole round
    def run(self, problems: Sequence[Problem]) -> RoundResult:
        start = time.perf_counter()
        records = self.records(problems)
        return aggregate(records, seconds=time.perf_counter() - start, resamples=self.settings.bootstrap_resamples)

    def records(self, problems: Sequence[Problem]) -> list[dict[str, Any]]:
        """Per-problem records for ``problems`` (JSON-serializable).

        With ``choice_permutations`` each multiple-choice problem is followed by its other cyclic
        rotations (``rotate_choices``), and their records carry ``rotation``, ``base_id`` and
        ``n_choices``; everything else is as for any problem.
        """
        if not problems:
            return []
        tags: dict[int, dict[str, Any]] = {}
        if self.settings.choice_permutations:
            problems, tags = _with_rotations(problems)
        with self.lm.session():
            chains = self.generate_chains(problems)
            chains = self.read_full_answers(chains)
            records = self.probe(chains)
        for chain, record in zip(chains, records):  # one record per chain, in order
            record.update(tags.get(id(chain.problem), {}))
        return records

    # ------------------------------------------------------------------ phase 1: chains
    def generate_chains(self, problems: Sequence[Problem]) -> list[Chain]:
        """The model's chain for each problem (``num_samples`` each when sampling), split into steps."""
        s, lm = self.settings, self.lm
        jobs = [(p, i) for p in problems for i in range(s.num_samples if s.do_sample else 1)]
        prompts = [self._prompt(problem)[0] for problem, _ in jobs]
        # The path (plain generate, static cache, continuous batching) is settings.generation;
        # each returns the new tokens with the end token kept (a finished chain vs one cut by the
        # limit). In the think layout decoding stops at the reasoning's end token too: what a model
        # writes after it (its own answer) is replaced by the cue.
        generate = ChainGenerator(lm, s.generation, batch_size=s.batch_size, stop_ids=self._reasoning_end_ids)
        with self._progress(total=len(prompts), desc="faithcb: chains", unit="chain") as bar:
            generated = generate(
                prompts, max_new_tokens=s.max_chain_tokens, do_sample=s.do_sample, temperature=s.temperature,
                top_p=s.top_p, seed=s.seed, on_batch=bar.update,
            )
        chains = []
        for key, ((problem, sample), gen) in enumerate(zip(jobs, generated)):
            ids, ended = self._chain_ids(gen)
            chains.append(self.chain_from_text(problem, lm.decode(ids), sample=sample, key=key, ended=ended))
        return chains

    def _chain_ids(self, generated: Sequence[int]) -> tuple[list[int], bool]:
        """The chain's ids and whether it ended: at an end token, or where the reasoning closes.

        In the think layout the chain is the reasoning only; whatever the model writes after
        closing it (its own answer) is replaced by the cue. A special-token end mark (harmony's
        ``<|end|>``) is found here because decoding drops special tokens.
        """
        end = EndRule(frozenset(self.lm.eos_ids) | frozenset(self._reasoning_end_ids)).end(generated)
        return (list(generated), False) if end is None else (list(generated[:end]), True)

    def chain_from_text(
        self, problem: Problem, text: str, *, sample: int = 0, key: int = 0, ended: bool = True
    ) -> Chain:
        """A ``Chain`` for ``problem`` from a chain's text (as generated, or written by hand).

        Text from the answer cue on is dropped: a model that writes the cue has ended its chain
        there, whatever came after; so is text from the end of the reasoning on in the think
        layout (``</think>``). ``ended=False`` marks a chain cut by the token limit.
        ``key`` must be unique among the chains of one round.
        """
        lm = self.lm
        prompt_ids, cue_ids, cue_text = self._prompt(problem)
        before = before_cue(text, cue_text)
        end_mark = self.prompter.reasoning_end
        if end_mark and end_mark in before:
            before = before[: before.index(end_mark)]
        ended = ended or before != text
        chain_text = before.strip()
        spans = self._split(chain_text)
        enc = lm.tokenizer(chain_text, add_special_tokens=False, return_offsets_mapping=True)
        chain_ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        # cuts[k]: tokens that start before the end of step k (a token straddling a step
        # boundary stays with the earlier step); the last cut covers the whole chain.
        cuts = [0] + [sum(1 for a, _ in offsets if a < end) for _, end in spans]
        if spans:
            cuts[-1] = len(chain_ids)
        choice_ids: tuple[int, ...] = ()
        gold_ids = lm.encode(self.prompter.gold_continuation(problem))
        if problem.kind == "choice":
            choice_ids = self._letter_ids(cue_text, len(problem.choices))
            gold_ids = [choice_ids[LETTERS.index(problem.answer)]]
        return Chain(
            problem=problem,
            sample=sample,
            prompt_ids=prompt_ids,
            chain_text=chain_text,
            chain_ids=chain_ids,
            steps=[chain_text[a:b] for a, b in spans],
            step_spans=spans,
            cuts=cuts,
            cue_ids=cue_ids,
            gold_ids=gold_ids,
            choice_ids=choice_ids,
            status=chain_status(len(spans), None, ended=ended),
            key=key,
            ended=ended,
            max_cuts=self.settings.max_cuts,
        )

    def _letter_ids(self, cue_text: str, n: int) -> tuple[int, ...]:
        """The token of each choice letter as it follows the cue's "(" (not the bare letter's token)."""
        key = (cue_text, n)
        if key not in self._letter_cache:
            cue = self.lm.encode(cue_text)
            ids = []
            for letter in LETTERS[:n]:
                both = self.lm.encode(cue_text + letter)
                if both[: len(cue)] != cue or len(both) != len(cue) + 1:
                    raise ConfigError(
                        f"multiple choice: the letter {letter!r} after the answer cue is not one token of this "
                        "tokenizer; change PromptStyle.choice_answer_prefix"
                    )
                ids.append(both[-1])
            self._letter_cache[key] = tuple(ids)
        return self._letter_cache[key]

    def _prompt(self, problem: Problem) -> tuple[list[int], list[int], str]:
        """``(chain prompt ids, cue ids, cue text)`` in this engine's layout.

        Rendered once per problem (a chat template render and two encodes): generation and
        ``chain_from_text`` both need them, every round, for the same problems.
        """
        if problem not in self._prompt_cache:
            prompt_text, cue_text = self.prompter.pieces(problem, self.lm.tokenizer)
            prompt_ids = self.lm.encode(prompt_text, special=not self.prompter.uses_chat)
            self._prompt_cache[problem] = (prompt_ids, self.lm.encode(cue_text), cue_text)
        prompt_ids, cue_ids, cue_text = self._prompt_cache[problem]
        return list(prompt_ids), list(cue_ids), cue_text  # copies: a Chain's lists are its own

    def _split(self, chain_text: str) -> list[tuple[int, int]]:
        if not chain_text:
            return []
        if self.settings.splitter is None:
            return step_spans(chain_text)
        return locate_steps(chain_text, [s for s in self.settings.splitter(chain_text) if s.strip()])

    # ------------------------------------------------------------------ phase 2: full-chain answers
    def read_full_answers(self, chains: Sequence[Chain]) -> list[Chain]:
        """Each chain with a_full, its answer under its own full chain (letters are scored, not decoded)."""
        lm = self.lm
        answer_end = EndRule.for_answers(lm)
        answered: dict[int, Chain] = {}
        free = [c for c in chains if c.problem.kind != "choice"]
        contexts = [c.prefix + c.cue_ids for c in free]
        for chain, ids in zip(free, lm.answer(contexts) if contexts else []):
            text = lm.decode(ids)
            # An answer the window cut before its terminator may be a prefix ("1,250" of
            # "1,250,000"): unparsed, and counted, rather than read as a wrong number.
            ended = answer_end.ended(ids)
            kind = chain.problem.kind
            answer = extract_answer(text, kind, after_cue=True) if ended else None
            computed = ended and answer_is_computation(text, kind, after_cue=True)
            answered[chain.key] = _with_answer(chain, ids, text, answer, answer_ended=ended, answer_computed=computed)
        lettered = [c for c in chains if c.problem.kind == "choice"]
        requests = [
            ScoreRequest(c.prefix, len(c.prefix), (), c.cue_ids, (), c.choice_ids, group=c.key) for c in lettered
        ]
        for chain, res in zip(lettered, lm.score(requests) if requests else []):
            best = max(range(len(res.choice_logprobs)), key=res.choice_logprobs.__getitem__)
            answered[chain.key] = _with_answer(chain, [chain.choice_ids[best]], LETTERS[best], LETTERS[best])
        return [answered[c.key] for c in chains]

    # ------------------------------------------------------------------ phase 3: probes
    def probe(self, chains: Sequence[Chain]) -> list[dict[str, Any]]:
        """Every probe on every scorable chain; one record per chain (unscorable ones included)."""
        scorable = [c for c in chains if c.status == "ok"]
        errors: dict[int, dict[str, str]] = {c.key: {} for c in chains}

        def failed(chain_keys, probe, exc) -> None:  # a probe failure is reported, not fatal
            if self.strict:
                raise exc
            for key in chain_keys:
                errors[key][probe.name] = f"{type(exc).__name__}: {exc}"

        for probe in self.probes:
            if scorable:
                try:
                    probe.prepare(scorable, self.lm)
                except Exception as exc:
                    failed([c.key for c in scorable], probe, exc)

        plan: list[_Planned] = []
        for chain in scorable:
            for probe in self.probes:
                if probe.name in errors[chain.key]:
                    continue
                try:
                    plan.append(_Planned(chain, probe, probe.variants(chain)))
                except Exception as exc:
                    failed([chain.key], probe, exc)
        outcomes = self._score(plan)

        by_chain: dict[int, list[_Planned]] = {}
        for planned in plan:
            by_chain.setdefault(planned.chain.key, []).append(planned)
        records = []
        for chain in chains:
            record = chain_record(chain)
            for planned in by_chain.get(chain.key, []):
                try:
                    record[planned.probe.name] = planned.probe.record(
                        chain, [outcomes[(chain.key, v)] for v in planned.variants]
                    )
                except Exception as exc:
                    failed([chain.key], planned.probe, exc)
            if errors[chain.key]:
                record["errors"] = errors[chain.key]
            records.append(record)
        return records

    def _score(self, plan: Sequence[_Planned]) -> dict[tuple[int, Variant], Outcome]:
        """Score every planned variant: exact greedy check first, decoding only where it fails.

        Identical contexts (same chain, cut and insert) from different probes are scored once.
        """
        lm = self.lm
        base_gold = self.evaluator == "base"
        contexts: dict[tuple[int, int, tuple[int, ...]], _Context] = {}
        for planned in plan:
            for v in planned.variants:
                key = (planned.chain.key, v.prefix_cut(planned.chain), tuple(v.insert))
                ctx = contexts.setdefault(key, _Context(planned.chain, v))
                ctx.wants_gold |= v.wants_gold

        def request(ctx: _Context, with_gold: bool, with_answer: bool = True) -> ScoreRequest:
            chain, v = ctx.chain, ctx.variant
            conts = ((chain.answer_ids,) if with_answer else ()) + ((chain.gold_ids,) if with_gold else ())
            # Free-form answers: where the exact check fails, read the variant's own answer.
            decode = lm.answer_max_tokens if with_answer and not chain.choice_ids else 0
            return ScoreRequest(
                chain.prefix, v.prefix_cut(chain), v.insert, chain.cue_ids, conts, chain.choice_ids, decode,
                group=chain.key,  # one group per chain: its variants share the chain's prefix cache
            )

        per_chain: dict[int, list[_Context]] = {}
        for ctx in contexts.values():
            per_chain.setdefault(ctx.chain.key, []).append(ctx)
        problems = list(per_chain.values())
        # lm.score batches problems together (they share forward passes): hand it a slice of
        # batch_size problems at a time, which is also the progress bar's step.
        step = self.settings.batch_size
        with self._progress(total=len(problems), desc="faithcb: scoring", unit="problem") as bar:
            for start in range(0, len(problems), step):
                chunk = problems[start : start + step]
                group = [ctx for contexts_of in chunk for ctx in contexts_of]
                results = lm.score([request(ctx, ctx.wants_gold and not base_gold) for ctx in group])
                for ctx, res in zip(group, results):
                    ctx.result = res
                golds = [ctx for ctx in group if ctx.wants_gold]
                if base_gold and golds:
                    with self._base_model():
                        for ctx, res in zip(golds, lm.score([request(ctx, True, False) for ctx in golds])):
                            ctx.base_gold = res.continuations[0].logprob
                bar.update(len(chunk))

        # Free-form answers whose exact check failed: compare their decoded, normalized answers.
        for ctx in contexts.values():
            if ctx.result.decoded is not None:
                ctx.decoded = extract_answer(lm.decode(ctx.result.decoded), ctx.chain.problem.kind, after_cue=True)

        outcomes: dict[tuple[int, Variant], Outcome] = {}
        for planned in plan:
            chain = planned.chain
            for v in planned.variants:
                ctx = contexts[(chain.key, v.prefix_cut(chain), tuple(v.insert))]
                outcomes[(chain.key, v)] = _outcome(ctx, v.wants_gold, base_gold)
        return outcomes

    # ------------------------------------------------------------------ helpers
    def _progress(self, iterable=None, **kw):
        return tqdm(iterable, disable=not self.show_progress, leave=False, **kw)

    @contextlib.contextmanager
    def _base_model(self):
        with self.lm.model.disable_adapter():
            yield


def _single_token_ids(tokenizer, text: str | None) -> tuple[int, ...]:
    """The id of ``text`` when the tokenizer holds it as one added token (``</think>``, ``<|end|>``)."""
    if not text:
        return ()
    ids = tokenizer.convert_tokens_to_ids([text])
    return tuple(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def rotate_choices(problem: Problem, r: int) -> Problem:
    """``problem`` with choice i moved to position (i + r) % n; the gold letter follows its option.

    Rotation 0 is ``problem`` itself (id unchanged); rotation r's id is ``"<base id>@rot<r>"``.
    """
    n = len(problem.choices)
    if r % n == 0:
        return problem
    choices = [""] * n
    for i, choice in enumerate(problem.choices):
        choices[(i + r) % n] = choice
    answer = LETTERS[(LETTERS.index(problem.answer) + r) % n]
    return Problem(problem.question, answer, kind=problem.kind, choices=tuple(choices),
                   id=f"{_base_id(problem)}@rot{r % n}")


def _base_id(problem: Problem) -> str:
    """The problem's id, or one made from its text (the same on every process) when it has none."""
    return problem.id or f"#{zlib.crc32(repr((problem.question, problem.choices)).encode()):08x}"


def _with_rotations(problems: Sequence[Problem]) -> tuple[list[Problem], dict[int, dict[str, Any]]]:
    """Each multiple-choice problem followed by its other rotations; the record fields of each, by id()."""
    out: list[Problem] = []
    tags: dict[int, dict[str, Any]] = {}
    for problem in problems:
        n = len(problem.choices)
        if problem.kind != "choice" or n < 2:
            out.append(problem)
            continue
        for r in range(n):
            rotated = rotate_choices(problem, r)
            out.append(rotated)
            tags[id(rotated)] = {"rotation": r, "base_id": _base_id(problem), "n_choices": n}
    return out, tags


def _with_answer(
    chain: Chain, ids: Sequence[int], text: str, answer: str | None, *,
    answer_ended: bool = True, answer_computed: bool = False,
) -> Chain:
    status = chain_status(chain.n_steps, answer, ended=chain.ended)
    gold_ids = list(chain.gold_ids)
    if answer_ended and ids and not chain.choice_ids:
        # The gold answer is scored with the terminator a_full ended on, so that log p(" 72")
        # does not also credit " 720" (a letter needs none: it is one token after "(").
        gold_ids.append(ids[-1])
    return dataclasses.replace(
        chain, answer_ids=list(ids), answer_text=text, answer=answer, status=status,
        answer_ended=answer_ended, answer_computed=answer_computed, gold_ids=gold_ids,
    )


def _outcome(ctx: _Context, wants_gold: bool, base_gold: bool) -> Outcome:
    chain, res = ctx.chain, ctx.result
    answer_score = res.continuations[0]
    if chain.choice_ids:
        lp = res.choice_logprobs
        answer = LETTERS[max(range(len(lp)), key=lp.__getitem__)]
        agree = answer == chain.answer
    elif answer_score.greedy:
        answer, agree = chain.answer, True
    else:
        answer = ctx.decoded
        agree = answer is not None and answer == chain.answer
    gold = None
    if wants_gold:
        gold = ctx.base_gold if base_gold else res.continuations[-1].logprob
    return Outcome(agree=agree, logp_answer=answer_score.logprob, logp_gold=gold, answer=answer)

