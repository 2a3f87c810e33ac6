"""Chains in one engine's layout: the prompt a chain is written from, where it ends, text → ``Chain``.

``ChainBuilder`` holds what a round needs to turn a problem and a chain's text into the token
pieces the probes cut and score: the chain prompt and answer cue (rendered once per problem), the
ids that end a generated chain (end tokens, and the reasoning's end in the think layout), the
chain's steps mapped to token cuts, the gold answer's tokens (canonical, then in a_full's own
format once a_full is read) and, for multiple choice, each letter's token after the cue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faithcb.answers import SlotReading, answer_in_format
from faithcb.errors import ConfigError
from faithcb.probes.base import Chain, chain_status
from faithcb.problem import LETTERS, Problem
from faithcb.prompting import Prompter
from faithcb.scoring import EndRule, ScoringLM
from faithcb.steps import before_cue, locate_steps, step_spans

__all__ = ["ChainBuilder"]


class ChainBuilder:
    """Builds ``Chain``s for ``lm``'s tokenizer in ``prompter``'s layout.

    ``splitter`` is ``ProbeSettings.splitter`` (None: ``faithcb.steps.step_spans``), ``max_cuts``
    its ``max_cuts``.
    """

    def __init__(
        self, lm: ScoringLM, prompter: Prompter, *, splitter: Callable[[str], Sequence[str]] | None, max_cuts: int,
    ):
        self.lm = lm
        self.prompter = prompter
        self.splitter = splitter
        self.max_cuts = max_cuts
        # Generation stops at these as at an end token (the think layout's ``</think>``).
        self.stop_ids = _single_token_ids(lm.tokenizer, prompter.reasoning_end)
        self._prompt_cache: dict[Problem, tuple[list[int], list[int], str]] = {}
        self._letter_cache: dict[tuple[str, int], tuple[int, ...]] = {}

    def prompt_ids(self, problem: Problem) -> list[int]:
        """The token ids ``problem``'s chain is generated from."""
        return self.pieces(problem)[0]

    def pieces(self, problem: Problem) -> tuple[list[int], list[int], str]:
        """``(chain prompt ids, cue ids, cue text)``.

        Rendered once per problem (a chat template render and two encodes): generation and
        ``from_text`` both need them, every round, for the same problems.
        """
        if problem not in self._prompt_cache:
            prompt_text, cue_text = self.prompter.pieces(problem, self.lm.tokenizer)
            prompt_ids = self.lm.encode(prompt_text, special=not self.prompter.uses_chat)
            self._prompt_cache[problem] = (prompt_ids, self.lm.encode(cue_text), cue_text)
        prompt_ids, cue_ids, cue_text = self._prompt_cache[problem]
        return list(prompt_ids), list(cue_ids), cue_text  # copies: a Chain's lists are its own

    def clear_cache(self) -> None:
        """Forget the rendered pieces: a caller whose problems never repeat (GRPO's rollouts) would
        otherwise keep every prompt's ids for the whole run."""
        self._prompt_cache.clear()

    def cut_generated(self, generated: Sequence[int]) -> tuple[list[int], bool]:
        """A generated chain's ids and whether it ended: at an end token, or where the reasoning closes.

        In the think layout the chain is the reasoning only; whatever the model writes after
        closing it (its own answer) is replaced by the cue. A special-token end mark (harmony's
        ``<|end|>``) is found here because decoding drops special tokens.
        """
        end = EndRule(frozenset(self.lm.eos_ids) | frozenset(self.stop_ids)).end(generated)
        return (list(generated), False) if end is None else (list(generated[:end]), True)

    def from_text(self, problem: Problem, text: str, *, sample: int = 0, key: int = 0, ended: bool = True) -> Chain:
        """A ``Chain`` for ``problem`` from a chain's text: see ``FaithfulnessEngine.chain_from_text``."""
        lm = self.lm
        prompt_ids, cue_ids, cue_text = self.pieces(problem)
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
            choice_ids = self.letter_ids(cue_text, len(problem.choices))
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
            max_cuts=self.max_cuts,
        )

    def gold_in_answer_format(self, chain: Chain, answer_ids: Sequence[int], reading: SlotReading) -> list[int]:
        """The gold answer's tokens written as a_full is: information gain's y*.

        a_full's tokens (``answer_ids``, read as ``reading``) with the gold answer in place of its
        number -- " 68.\n" gives " 72.\n", an end token stays an end token -- so that L_k =
        log p(y*) measures the answer and not a format the model does not write (" 72" then a
        newline where it writes "."). The tokens around the number are a_full's own; only the
        number's tokens are encoded. Where a_full has no place for it (a letter, an unparsed
        answer, a LaTeX fraction), the canonical gold with a_full's terminator.
        """
        ids = list(answer_ids)
        if chain.choice_ids:
            return list(chain.gold_ids)
        lm = self.lm
        text = lm.decode(ids)
        written = answer_in_format(text, reading, chain.problem.answer) if reading.answer is not None else None
        if written is None or reading.span is None:
            terminated = EndRule.for_answers(lm).ended(ids)
            return [*chain.gold_ids, *(ids[-1:] if terminated else [])]
        prefixes = [lm.decode(ids[:i]) for i in range(len(ids) + 1)]
        if not all(text.startswith(p) for p in prefixes) or prefixes[-1] != text:
            # Tokens that decode to more than their parts (split characters): encode the text whole.
            return lm.encode(written) + [t for t in ids[-1:] if t in lm.eos_ids]
        a, b = reading.span
        offsets = [len(p) for p in prefixes]
        first = max(i for i, off in enumerate(offsets) if off <= a)  # a_full's tokens before the number
        last = min(i for i in range(first, len(ids) + 1) if offsets[i] >= b)  # and from after it
        middle = written[offsets[first] : len(written) - (len(text) - offsets[last])]
        return [*ids[:first], *lm.encode(middle), *ids[last:]]

    def letter_ids(self, cue_text: str, n: int) -> tuple[int, ...]:
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

    def _split(self, chain_text: str) -> list[tuple[int, int]]:
        if not chain_text:
            return []
        if self.splitter is None:
            return step_spans(chain_text)
        return locate_steps(chain_text, [s for s in self.splitter(chain_text) if s.strip()])


def _single_token_ids(tokenizer, text: str | None) -> tuple[int, ...]:
    """The id of ``text`` when the tokenizer holds it as one added token (``</think>``, ``<|end|>``)."""
    if not text:
        return ()
    ids = tokenizer.convert_tokens_to_ids([text])
    return tuple(i for i in ids if i is not None and i != tokenizer.unk_token_id)
