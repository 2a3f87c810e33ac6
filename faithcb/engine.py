"""One probe round: generate chains, build every probe's variants, score them, aggregate.

``FaithfulnessEngine`` serves both the training callback (on the live model, in place) and
``faithcb eval`` (on a saved checkpoint). It is split in two so distributed training can share the
work: ``records()`` turns problems into JSON-serializable per-problem records (each process does
its share), ``aggregate()`` turns all records into the round's metrics with bootstrap intervals.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from faithcb.errors import ProbeError
from faithcb.lm import ProbeLM
from faithcb.preflight import check_setup
from faithcb.probes import ProbeContext, build_probes, probe_metrics, probe_names
from faithcb.probes.base import CURVE_GRID, Chain, Outcome, Variant
from faithcb.problem import Problem
from faithcb.prompting import LETTERS, Prompter
from faithcb.scoring import ScoreRequest
from faithcb.settings import ProbeSettings
from faithcb.stats import summarize
from faithcb.text import extract_answer, locate_steps, step_spans


@dataclass
class RoundResult:
    """A round's metrics (value + 95% interval + n), extra scalars, the curve, and the records."""

    metrics: dict[str, dict[str, float]]
    scalars: dict[str, float]
    curve: dict[str, list[float]]
    records: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)

    def to_dict(self, *, with_records: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": self.metrics, "scalars": self.scalars, "curve": self.curve}
        if self.errors:
            out["errors"] = self.errors
        if with_records:
            out["records"] = self.records
        return out

    def flat(self, prefix: str = "", *, intervals: bool = True) -> dict[str, float]:
        """``{prefix + name: value}`` plus ``_ci_low``/``_ci_high`` entries, NaNs dropped (for loggers)."""
        out: dict[str, float] = {}
        for name, m in self.metrics.items():
            if math.isfinite(m["value"]):
                out[prefix + name] = m["value"]
                if intervals:
                    out[f"{prefix}{name}_ci_low"] = m["ci_low"]
                    out[f"{prefix}{name}_ci_high"] = m["ci_high"]
        for name, v in self.scalars.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[prefix + name] = float(v)
        return out


class FaithfulnessEngine:
    """Runs probe rounds on one model (and tokenizer) in place."""

    def __init__(
        self,
        model,
        tokenizer,
        settings: ProbeSettings | None = None,
        *,
        paraphrase_model=None,
        show_progress: bool = True,
        strict: bool = False,
    ):
        self.settings = settings or ProbeSettings()
        s = self.settings
        self.prompter = Prompter.for_tokenizer(tokenizer, s.style)
        check_setup(model, tokenizer, self.prompter, s.evaluator, None)  # ConfigError before any round
        self.lm = ProbeLM(
            model, tokenizer, fast=s.fast, max_batch_size=s.batch_size, answer_max_tokens=s.answer_max_tokens
        )
        self.show_progress = show_progress
        self.strict = strict
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

    # ------------------------------------------------------------------ public API
    def run(self, problems: Sequence[Problem]) -> RoundResult:
        start = time.perf_counter()
        records = self.records(problems)
        return aggregate(records, seconds=time.perf_counter() - start, resamples=self.settings.bootstrap_resamples)

    def records(self, problems: Sequence[Problem]) -> list[dict[str, Any]]:
        """Per-problem records for ``problems`` (JSON-serializable)."""
        if not problems:
            return []
        with self.lm.session():
            chains = self._chains(problems)
            self._read_full_answers(chains)
            return self._probe(chains)

    # ------------------------------------------------------------------ chains
    def _progress(self, iterable=None, **kw):
        return tqdm(iterable, disable=not self.show_progress, leave=False, **kw)

    def _chains(self, problems: Sequence[Problem]) -> list[Chain]:
        s, lm = self.settings, self.lm
        tok = lm.tokenizer
        jobs = [(p, i) for p in problems for i in range(s.num_samples if s.do_sample else 1)]
        prompts, cues, cue_texts = [], [], []
        for problem, _ in jobs:
            prompt_text, cue_text = self.prompter.pieces(problem, tok)
            prompts.append(lm.encode(prompt_text, special=not self.prompter.uses_chat))
            cues.append(lm.encode(cue_text))
            cue_texts.append(cue_text)
        generated: list[list[int]] = []
        batches = range(0, len(prompts), s.batch_size)
        for b in self._progress(batches, desc="faithcb: chains", unit="batch"):
            generated += lm.generate(
                prompts[b : b + s.batch_size],
                max_new_tokens=s.max_chain_tokens,
                do_sample=s.do_sample,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=None if not s.do_sample else s.seed + b,
            )
        chains = []
        for (problem, sample), prompt_ids, cue_ids, gen, cue_text in zip(
            jobs, prompts, cues, generated, cue_texts
        ):
            chain_text = _before_cue(lm.decode(gen), cue_text).strip()
            spans = self._split(chain_text)
            enc = tok(chain_text, add_special_tokens=False, return_offsets_mapping=True)
            chain_ids = list(enc["input_ids"])
            offsets = enc.get("offset_mapping")
            if offsets is None:
                raise ProbeError("the tokenizer gives no offset mapping; faithcb needs a fast tokenizer")
            # cuts[k]: tokens that start before the end of step k (a token straddling a step
            # boundary stays with the earlier step); the last cut covers the whole chain.
            cuts = [0] + [sum(1 for a, _ in offsets if a < end) for _, end in spans]
            if spans:
                cuts[-1] = len(chain_ids)
            choice_ids: tuple[int, ...] = ()
            if problem.kind == "choice":
                choice_ids = tuple(lm.encode(LETTERS[i])[0] for i in range(len(problem.choices)))
            chain = Chain(
                problem=problem,
                sample=sample,
                prompt_ids=prompt_ids,
                chain_text=chain_text,
                chain_ids=chain_ids,
                steps=[chain_text[a:b] for a, b in spans],
                step_spans=spans,
                cuts=cuts,
                cue_ids=cue_ids,
                gold_ids=lm.encode(self.prompter.gold_continuation(problem)),
                choice_ids=choice_ids,
            )
            chain.prefix = chain.prompt_ids + chain.chain_ids
            if not spans:
                chain.status = "no_steps"
            chains.append(chain)
        return chains

    def _split(self, chain_text: str) -> list[tuple[int, int]]:
        if not chain_text:
            return []
        if self.settings.splitter is None:
            return step_spans(chain_text)
        return locate_steps(chain_text, [s for s in self.settings.splitter(chain_text) if s.strip()])

    def _read_full_answers(self, chains: list[Chain]) -> None:
        """a_full: the answer under the model's own full chain (letters are scored, not decoded)."""
        lm = self.lm
        free = [c for c in chains if c.problem.kind != "choice"]
        contexts = [c.prefix + c.cue_ids for c in free]
        for chain, ids in zip(free, lm.answer(contexts) if contexts else []):
            chain.answer_ids = ids
            chain.answer_text = lm.decode(ids)
            chain.answer = extract_answer(chain.answer_text, chain.problem.kind)
        lettered = [c for c in chains if c.problem.kind == "choice"]
        # One scoring group per chain (problem ids need not be unique within a round).
        requests = [
            ScoreRequest(c.prefix, len(c.prefix), (), c.cue_ids, (), c.choice_ids, group=id(c)) for c in lettered
        ]
        for chain, res in zip(lettered, lm.score(requests) if requests else []):
            best = max(range(len(res.choice_logprobs)), key=res.choice_logprobs.__getitem__)
            chain.answer_ids = [chain.choice_ids[best]]
            chain.answer_text = chain.answer = LETTERS[best]
        for chain in chains:
            if chain.answer is None:
                chain.status = "unparsed"

    # ------------------------------------------------------------------ probing
    def _probe(self, chains: list[Chain]) -> list[dict[str, Any]]:
        scorable = [c for c in chains if c.status == "ok"]
        errors: dict[int, dict[str, str]] = {id(c): {} for c in chains}
        for probe in self.probes:
            prepare = getattr(probe, "prepare", None)
            if prepare is not None and scorable:
                try:
                    prepare(scorable, self.lm)
                except Exception as exc:  # a probe failure is reported, not fatal
                    if self.strict:
                        raise
                    for c in scorable:
                        errors[id(c)][probe.name] = f"{type(exc).__name__}: {exc}"

        # Collect every probe's variants; identical contexts (same cut, same insert) are scored once.
        plan: list[tuple[Chain, Any, list[Variant]]] = []
        for chain in scorable:
            for probe in self.probes:
                if probe.name in errors[id(chain)]:
                    continue
                try:
                    plan.append((chain, probe, probe.variants(chain)))
                except Exception as exc:
                    if self.strict:
                        raise
                    errors[id(chain)][probe.name] = f"{type(exc).__name__}: {exc}"
        outcomes = self._score(plan)

        records = []
        for chain in chains:
            record = chain_record(chain)
            for c, probe, variants in plan:
                if c is chain:
                    try:
                        record[probe.name] = probe.record(chain, [outcomes[(id(chain), v)] for v in variants])
                    except Exception as exc:
                        if self.strict:
                            raise
                        errors[id(chain)][probe.name] = f"{type(exc).__name__}: {exc}"
            if errors[id(chain)]:
                record["errors"] = errors[id(chain)]
            records.append(record)
        return records

    def _score(self, plan) -> dict[tuple[int, Variant], Outcome]:
        """Score every planned variant: exact greedy check first, decoding only where it fails."""
        lm = self.lm
        base_gold = self.settings.evaluator == "base"
        contexts: dict[tuple[int, int, tuple[int, ...]], dict[str, Any]] = {}
        for chain, _probe, variants in plan:
            for v in variants:
                key = (id(chain), v.prefix_cut(chain), v.insert)
                entry = contexts.setdefault(key, {"chain": chain, "variant": v, "gold": False})
                entry["gold"] |= v.wants_gold
        entries = list(contexts.values())

        def request(entry, with_gold: bool, with_answer: bool = True) -> ScoreRequest:
            chain, v = entry["chain"], entry["variant"]
            conts = ((chain.answer_ids,) if with_answer else ()) + ((chain.gold_ids,) if with_gold else ())
            # Free-form answers: where the exact check fails, read the variant's own answer.
            decode = lm.answer_max_tokens if with_answer and not chain.choice_ids else 0
            return ScoreRequest(
                chain.prefix, v.prefix_cut(chain), v.insert, chain.cue_ids, conts, chain.choice_ids, decode,
                group=id(chain),  # one group per chain: its variants share the chain's prefix cache
            )

        by_chain: dict[int, list[dict]] = {}
        for entry in entries:
            by_chain.setdefault(id(entry["chain"]), []).append(entry)
        problems = list(by_chain.values())
        # lm.score batches problems together (they share forward passes): hand it a slice of
        # batch_size problems at a time, which is also the progress bar's step.
        step = self.settings.batch_size
        with self._progress(total=len(problems), desc="faithcb: scoring", unit="problem") as bar:
            for start in range(0, len(problems), step):
                chunk = problems[start : start + step]
                group = [e for entries_of in chunk for e in entries_of]
                results = lm.score([request(e, e["gold"] and not base_gold) for e in group])
                for entry, res in zip(group, results):
                    entry["result"] = res
                if base_gold and any(e["gold"] for e in group):
                    golds = [e for e in group if e["gold"]]
                    with self._base_model():
                        for entry, res in zip(golds, lm.score([request(e, True, False) for e in golds])):
                            entry["base_gold"] = res.continuations[0].logprob
                bar.update(len(chunk))

        # Free-form answers whose exact check failed: compare their decoded, normalized answers.
        for entry in entries:
            decoded = entry["result"].decoded
            if decoded is not None:
                entry["decoded"] = extract_answer(lm.decode(decoded), entry["chain"].problem.kind)

        outcomes: dict[tuple[int, Variant], Outcome] = {}
        for chain, _probe, variants in plan:
            for v in variants:
                entry = contexts[(id(chain), v.prefix_cut(chain), v.insert)]
                outcomes[(id(chain), v)] = _outcome(entry, v.wants_gold)
        return outcomes

    @contextlib.contextmanager
    def _base_model(self):
        with self.lm.model.disable_adapter():
            yield


def _before_cue(text: str, cue_text: str) -> str:
    """``text`` up to the answer cue, if the model wrote the cue itself (its reasoning ended there).

    A model trained on ``training_text`` in the plain layout continues its chain with the cue and
    the answer; keeping them would put the answer inside the chain and the cue twice in every
    context. (With a chat template the chain already stops at the end of the assistant turn.)
    """
    if cue_text.strip():
        at = text.find(cue_text)
        if at >= 0:
            return text[:at]
    return text


def _letters(entry) -> bool:
    return bool(entry["chain"].choice_ids)


def _outcome(entry, wants_gold: bool) -> Outcome:
    chain, res = entry["chain"], entry["result"]
    answer_score = res.continuations[0]
    if _letters(entry):
        lp = res.choice_logprobs
        best = max(range(len(lp)), key=lp.__getitem__)
        answer = LETTERS[best]
        agree = answer == chain.answer
    elif answer_score.greedy:
        answer, agree = chain.answer, True
    else:
        answer = entry.get("decoded")
        agree = answer is not None and answer == chain.answer
    gold = None
    if wants_gold:
        gold = entry["base_gold"] if "base_gold" in entry else res.continuations[-1].logprob
    return Outcome(agree=agree, logp_answer=answer_score.logprob, logp_gold=gold, answer=answer)


def chain_record(chain: Chain) -> dict[str, Any]:
    p = chain.problem
    return {
        "id": p.id,
        "sample": chain.sample,
        "question": p.question,
        "gold": p.answer,
        "kind": p.kind,
        "chain": chain.chain_text,
        "steps": chain.steps,
        "n_steps": chain.n_steps,
        "chain_tokens": len(chain.chain_ids),
        "answer_text": chain.answer_text,
        "answer": chain.answer,
        "correct": (chain.answer == p.answer) if chain.answer is not None else None,
        "status": chain.status,
    }


# ---------------------------------------------------------------------- aggregation
def aggregate(records: Sequence[dict[str, Any]], *, seconds: float = math.nan, resamples: int = 1000) -> RoundResult:
    """Round metrics from per-problem records, each with a 95% bootstrap interval over problems."""
    nan = math.nan
    parsed = [r for r in records if r["answer"] is not None]
    metrics = {
        "accuracy": summarize([float(r["correct"]) for r in parsed], n_resamples=resamples),
        "unparsed_rate": summarize([float(r["answer"] is None) for r in records], n_resamples=resamples),
        "mean_steps": summarize([r["n_steps"] for r in records], n_resamples=resamples),
        "mean_chain_tokens": summarize([r["chain_tokens"] for r in records], n_resamples=resamples),
    }
    for probe in probe_names():
        rows = [r[probe] for r in records if probe in r]
        if not rows:
            continue
        for metric in probe_metrics(probe):
            metrics[metric.name] = summarize([row.get(metric.key, nan) for row in rows], n_resamples=resamples)

    curve: dict[str, list[float]] = {}
    curves = [r["early_answering"]["curve"] for r in records if "early_answering" in r]
    if curves:
        curve = {"x": list(CURVE_GRID), "mean": [], "ci_low": [], "ci_high": []}
        for i in range(len(CURVE_GRID)):
            s = summarize([c[i] for c in curves], n_resamples=resamples)
            curve["mean"].append(s["value"])
            curve["ci_low"].append(s["ci_low"])
            curve["ci_high"].append(s["ci_high"])

    errors = sorted({f"{name}: {msg}" for r in records for name, msg in r.get("errors", {}).items()})
    scalars = {
        "problems_scored": float(len(records)),
        "problems_unscored": float(sum(r["status"] != "ok" for r in records)),
        "seconds": float(seconds),
        "probe_errors": float(len(errors)),
    }
    if any("paraphrase" in r for r in records):
        scalars["paraphrase_rejected"] = float(sum(r["paraphrase"]["rejected"] for r in records if "paraphrase" in r))
    return RoundResult(metrics=metrics, scalars=scalars, curve=curve, records=list(records), errors=errors)
