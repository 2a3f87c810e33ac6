"""One probe round, in three typed phases: generate chains → read full-chain answers → probe.

``FaithfulnessEngine`` serves both the training callback (on the live model, in place) and
``faithcb eval`` (on a saved checkpoint). ``records()`` turns problems into JSON-serializable
per-problem records (under DDP each process does its share); ``faithcb.results.aggregate`` turns
everyone's records into the round's metrics. The phases are public so tests and benchmarks can
run them one at a time, or start from chains they wrote themselves (``chain_from_text``).
Building chains is ``faithcb.chains``'s job, scoring the probes' variants ``faithcb.variant_scoring``'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from faithcb.chains import ChainBuilder
from faithcb.generation import ChainGenerator, check_generation
from faithcb.lm import ProbeLM
from faithcb.preflight import check_setup, resolve_evaluator
from faithcb.probes import ProbeContext, build_probes
from faithcb.probes.base import Chain, chain_status
from faithcb.problem import LETTERS, Problem, with_rotations
from faithcb.prompting import Prompter
from faithcb.results import RoundResult, aggregate, chain_record
from faithcb.scoring import ScoreRequest, ScoringLM, read_answer
from faithcb.settings import ProbeSettings
from faithcb.variant_scoring import Planned, score_variants

__all__ = ["FaithfulnessEngine", "ProbeSettings", "RoundResult", "aggregate"]


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
        self.chains = ChainBuilder(self.lm, self.prompter, splitter=s.splitter, max_cuts=s.max_cuts)
        paraphraser = s.paraphraser
        if paraphraser == "model":
            from faithcb.probes.paraphrase import ModelParaphraser

            para_lm = self.lm if paraphrase_model is None else ProbeLM(*paraphrase_model, max_batch_size=s.batch_size)
            paraphraser = ModelParaphraser(para_lm)
        context = ProbeContext(
            encode=self.lm.encode, paraphraser=None if paraphraser == "rule" else paraphraser,
            paraphrase_mode=s.paraphrase_mode, max_chain_tokens=s.max_chain_tokens,
        )
        self.probes = build_probes(s.probes, context)

    # ------------------------------------------------------------------ a whole round
    def run(self, problems: Sequence[Problem]) -> RoundResult:
        start = time.perf_counter()
        records = self.records(problems)
        return aggregate(records, seconds=time.perf_counter() - start)

    def records(self, problems: Sequence[Problem]) -> list[dict[str, Any]]:
        """Per-problem records for ``problems`` (JSON-serializable).

        With ``choice_permutations`` each multiple-choice problem is followed by its other cyclic
        rotations (``faithcb.problem.rotate_choices``), and their records carry ``rotation``, ``base_id`` and
        ``n_choices``; everything else is as for any problem.
        """
        if not problems:
            return []
        tags: dict[int, dict[str, Any]] = {}
        if self.settings.choice_permutations:
            problems, tags = with_rotations(problems)
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
        prompts = [self.prompt_ids(problem) for problem, _ in jobs]
        # The path (plain generate, static cache, continuous batching) is settings.generation;
        # each returns the new tokens with the end token kept (a finished chain vs one cut by the
        # limit). In the think layout decoding stops at the reasoning's end token too: what a model
        # writes after it (its own answer) is replaced by the cue.
        generate = ChainGenerator(lm, s.generation, batch_size=s.batch_size, stop_ids=self.chains.stop_ids)
        with self._progress(total=len(prompts), desc="faithcb: chains", unit="chain") as bar:
            generated = generate(
                prompts, max_new_tokens=s.max_chain_tokens, do_sample=s.do_sample, temperature=s.temperature,
                top_p=s.top_p, seed=s.seed, on_batch=bar.update,
            )
        chains = []
        for key, ((problem, sample), gen) in enumerate(zip(jobs, generated)):
            ids, ended = self.chains.cut_generated(gen)
            chains.append(self.chain_from_text(problem, lm.decode(ids), sample=sample, key=key, ended=ended))
        return chains

    def chain_from_text(
        self, problem: Problem, text: str, *, sample: int = 0, key: int = 0, ended: bool = True
    ) -> Chain:
        """A ``Chain`` for ``problem`` from a chain's text (as generated, or written by hand).

        Text from the answer cue on is dropped: a model that writes the cue has ended its chain
        there, whatever came after; so is text from the end of the reasoning on in the think
        layout (``</think>``). ``ended=False`` marks a chain cut by the token limit.
        ``key`` must be unique among the chains of one round.
        """
        return self.chains.from_text(problem, text, sample=sample, key=key, ended=ended)

    def prompt_ids(self, problem: Problem) -> list[int]:
        """The token ids ``problem``'s chain is generated from, in this engine's layout."""
        return self.chains.prompt_ids(problem)

    # ------------------------------------------------------------------ phase 2: full-chain answers
    def read_full_answers(self, chains: Sequence[Chain]) -> list[Chain]:
        """Each chain with a_full, its answer under its own full chain (letters are scored, not decoded)."""
        lm = self.lm
        answered: dict[int, Chain] = {}
        free = [c for c in chains if c.problem.kind != "choice"]
        contexts = [c.prefix + c.cue_ids for c in free]
        for chain, ids in zip(free, lm.answer(contexts) if contexts else []):
            # The one answer-slot rule, as for every variant: blank lines before the answer are
            # skipped; a window that cut the first number (" 1,250" of "1,250,000") and the forms
            # whose first number is not the answer (" 3/4 of 12 = 9", " 1.5 million") are unparsed,
            # and counted, rather than read as a wrong number.
            reading = read_answer(lm, ids, chain.problem.kind)
            answered[chain.key] = _with_answer(
                chain, ids, lm.decode(ids), reading.answer, answer_ended=reading.reason != "cut",
                answer_computed=reading.reason == "computed",
                gold_ids=self.chains.gold_in_answer_format(chain, ids, reading),
            )
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

        plan: list[Planned] = []
        for chain in scorable:
            for probe in self.probes:
                if probe.name in errors[chain.key]:
                    continue
                try:
                    plan.append(Planned(chain, probe, probe.variants(chain)))
                except Exception as exc:
                    failed([chain.key], probe, exc)
        outcomes = score_variants(
            plan, self.lm, base_gold=self.evaluator == "base", batch_size=self.settings.batch_size,
            progress=self._progress,
        )

        by_chain: dict[int, list[Planned]] = {}
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

    # ------------------------------------------------------------------ helpers
    def _progress(self, iterable=None, **kw):
        return tqdm(iterable, disable=not self.show_progress, leave=False, **kw)


def _with_answer(
    chain: Chain, ids: Sequence[int], text: str, answer: str | None, *,
    answer_ended: bool = True, answer_computed: bool = False, gold_ids: Sequence[int] | None = None,
) -> Chain:
    status = chain_status(chain.n_steps, answer, ended=chain.ended)
    return dataclasses.replace(
        chain, answer_ids=list(ids), answer_text=text, answer=answer, status=status,
        answer_ended=answer_ended, answer_computed=answer_computed,
        gold_ids=list(chain.gold_ids if gold_ids is None else gold_ids),
    )
