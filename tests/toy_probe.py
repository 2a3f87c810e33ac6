"""A user probe defined outside faithcb, to show that registering it is all it takes.

``ToyProbe`` asks one question per chain (the whole chain, k = n) and reports ``score`` = 0.5 on
every problem, a value no built-in metric has, so tests can find it wherever it should surface.
"""

from __future__ import annotations

from faithcb.metrics import Metric
from faithcb.probes import Variant, register_probe, unregister_probe

TOY_SCORE = 0.5


class ToyProbe:
    """The full chain once; records the answer agreement and a constant score."""

    name = "toy"
    metrics = (Metric("score", "toy score", "a constant, to trace a user metric", "higher", headline=True),)

    @classmethod
    def build(cls, context):
        return cls()

    def prepare(self, chains, lm):
        pass

    def variants(self, chain):
        return [Variant(self.name, chain.n_steps)]

    def record(self, chain, outcomes):
        return {"agree": [o.agree for o in outcomes], "score": TOY_SCORE}


def register() -> None:
    register_probe(ToyProbe, replace=True)


def unregister() -> None:
    unregister_probe(ToyProbe.name)
