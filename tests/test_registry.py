"""The probe registry is the one home of every metric: a registered user probe reaches everything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import toy_probe
from helpers.chains import ScriptedAnswers
from helpers.models import trained_model
from helpers.vocabulary import STYLE, probe_problems

from faithcb.config import FaithConfig
from faithcb.engine import FaithfulnessEngine, aggregate
from faithcb.errors import ConfigError
from faithcb.lm import ProbeLM
from faithcb.metrics import Metric
from faithcb.probes import find_metric, probe_names, register_probe, round_metrics
from faithcb.probes.registry import metrics_markdown
from faithcb.settings import ProbeSettings
from faithcb.stopping import EarlyStopper
from faithcb.wandb_sink import table_columns, table_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def toy():
    toy_probe.register()
    yield toy_probe.ToyProbe
    toy_probe.unregister()


def test_toy_probe_metric_reaches_the_round(toy, tok):
    """Hand-written chains and a scripted a_full, so every chain is scored whatever the model writes."""
    settings = ProbeSettings(probes=("early_answering", "toy"), style=STYLE, answer_max_tokens=4)
    model = trained_model("llama")
    lm = ScriptedAnswers(ProbeLM(model, tok, answer_max_tokens=4), " 7\n")
    engine = FaithfulnessEngine(model, tok, settings, show_progress=False, strict=True, lm=lm)
    with lm.session():
        chains = [engine.chain_from_text(p, "3 + 4 = 7. 7 - 0 = 7.", key=i) for i, p in enumerate(probe_problems(3))]
        records = engine.probe(engine.read_full_answers(chains))
    result = aggregate(records)
    scored = [r for r in result.records if r["status"] == "ok"]
    assert len(scored) == 3
    assert all(r["toy"]["score"] == toy_probe.TOY_SCORE for r in scored)
    assert result.metrics["toy_score"]["value"] == toy_probe.TOY_SCORE
    assert result.metrics["toy_score"]["n"] == len(scored)


def test_toy_probe_metric_is_a_valid_stop_metric(toy):
    cfg = FaithConfig(faith_probes=["early_answering", "toy"], faith_early_stopping=True,
                      faith_stop_metric="toy_score")
    assert cfg.stop_mode == "max"  # from the toy metric's declared direction
    assert EarlyStopper.from_config(cfg).metric == "toy_score"
    with pytest.raises(ConfigError, match=r"'toy_score' is not reported"):
        FaithConfig(faith_early_stopping=True, faith_stop_metric="toy_score")  # toy not probed
    with pytest.raises(ConfigError, match=r"contradicts 'toy_score'"):
        FaithConfig(faith_probes=["toy"], faith_early_stopping=True, faith_stop_metric="toy_score",
                    faith_stop_mode="min")


def test_toy_probe_metric_gets_a_wandb_column(toy):
    columns = table_columns(["early_answering", "toy"])
    assert columns[-1] == "toy_score"
    record = {"id": "p", "question": "q", "chain": "c", "answer": "1", "gold": "1", "correct": True,
              "n_steps": 1, "toy": {"score": 0.5}}
    (row,) = table_rows(3, [record], ["early_answering", "toy"])
    assert dict(zip(columns, row))["toy_score"] == 0.5
    assert "toy_score" not in table_columns(["early_answering"])


def test_unknown_names_get_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown probe 'paraphrasing' \(did you mean 'paraphrase'\?\)"):
        ProbeSettings(probes=("paraphrasing",))
    with pytest.raises(ConfigError, match=r"unknown metric 'early_answer_aoc' \(did you mean 'early_answering_aoc'\?\)"):
        find_metric("early_answer_aoc")


def test_register_probe_checks_its_declaration():
    class NoMetrics:
        name = "empty"
        metrics = ()

        @classmethod
        def build(cls, context):
            return cls()

    with pytest.raises(ConfigError, match=r"must declare `metrics`"):
        register_probe(NoMetrics)

    class Clash(toy_probe.ToyProbe):
        name = "filler"

    with pytest.raises(ConfigError, match=r"'filler' is already registered"):
        register_probe(Clash)
    assert "empty" not in probe_names()


def test_register_probe_checks_its_summaries_hook():
    class NotAHook(toy_probe.ToyProbe):
        name = "not_a_hook"
        summaries = "curve"

    with pytest.raises(ConfigError, match=r"'not_a_hook' has a `summaries` that is not callable"):
        register_probe(NotAHook)
    assert "not_a_hook" not in probe_names()


def test_metric_direction_is_checked():
    with pytest.raises(ValueError, match=r"direction 'up'"):
        Metric("x", "x", "x", "up")


def test_every_metric_has_a_label_meaning_and_direction():
    for m in round_metrics():
        assert m.label and m.meaning and m.direction in ("higher", "lower", "neutral"), m


def test_docs_metric_table_matches_the_registry():
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- metrics-table:start -->\n(.*?)<!-- metrics-table:end -->", text, re.DOTALL)
    assert found, "docs/metrics.md lost its generated metric table markers"
    assert found.group(1) == metrics_markdown(), (
        "docs/metrics.md's metric table is stale; paste faithcb.probes.registry.metrics_markdown()"
    )
