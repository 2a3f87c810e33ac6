"""Filler substitution (Lanham et al. 2023): replace steps k+1..n by " ..." of the same token length.

The filler has exactly as many tokens (of the evaluated model's tokenizer) as the text it
replaces, so only the content changes, not the compute the model gets. ``invariance`` = mean of
m(k) over k = 0..n-1: lower = the replaced steps carried the answer = more coupled.
``k0`` is the whole chain replaced by filler (Lanham's filler test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from faithcb.metrics import UNIT, Metric
from faithcb.probes.base import Chain, Outcome, Variant, agreement_record, mean
from faithcb.probes.registry import ProbeContext


class FillerSubstitution:
    """Replace steps k+1..n by filler of equal token length; m(k) = the answer survives."""

    name = "filler"
    metrics = (
        Metric("invariance", "filler invariance", "mean m(k) over k < n: the answer survives filler",
               "lower", headline=True, bounds=UNIT, kind="bounded"),
        Metric("k0_agreement", "filler, whole chain", "the answer survives the whole chain replaced by filler",
               "lower", bounds=UNIT, kind="proportion"),
    )

    @classmethod
    def build(cls, context: ProbeContext) -> FillerSubstitution:
        return cls(context.encode)

    def __init__(self, encode: Callable[[str], list[int]], filler: str = " ..."):
        self.encode = encode
        self.filler = filler
        self._unit = max(1, len(encode(filler)))

    def filler_ids(self, n_tokens: int) -> tuple[int, ...]:
        """Exactly ``n_tokens`` tokens of repeated filler."""
        if n_tokens <= 0:
            return ()
        repeats = n_tokens // self._unit + 2
        ids = self.encode(self.filler * repeats)
        while len(ids) < n_tokens:  # a tokenizer may merge repeats into fewer tokens
            repeats *= 2
            longer = self.encode(self.filler * repeats)
            if len(longer) <= len(ids):
                break
            ids = longer
        return tuple(ids[:n_tokens])

    def prepare(self, chains: Sequence[Chain], lm) -> None:
        """Nothing to share across chains."""

    def variants(self, chain: Chain) -> list[Variant]:
        total = len(chain.chain_ids)
        return [
            Variant(self.name, k, insert=self.filler_ids(total - chain.cuts[k]))
            for k in chain.cut_ks
            if k < chain.n_steps
        ]

    def record(self, chain: Chain, outcomes: Sequence[Outcome]) -> dict[str, Any]:
        fields = agreement_record(outcomes)
        agree = fields["agree"]
        return {
            **fields,
            "invariance": mean(agree),
            "k0_agreement": float(agree[0]) if agree else float("nan"),
        }
