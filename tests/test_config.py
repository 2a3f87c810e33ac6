"""FaithConfig validation, the callback's checks against the trainer, and parsing with TRL configs."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest
from transformers import TrainingArguments
from trl import GRPOConfig, SFTConfig, TrlParser

from faithcb.callback import FaithfulnessCallback
from faithcb.config import FaithConfig, metric_names
from faithcb.errors import ConfigError, ProblemFormatError
from faithcb.probes import probe_names
from faithcb.prompting import PromptStyle
from faithcb.settings import ProbeSettings
from faithcb.tasks.arithmetic import make_problems
from faithcb.testing import tiny_tokenizer

NEVER = {
    "faith_num_rounds": 0,
    "faith_every_n_steps": 0,
    "faith_round_at_start": False,
    "faith_round_at_end": False,
    "faith_on_evaluate": False,
}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        # Unknown probe: names the field, the culprit and every valid probe.
        (
            {"faith_probes": ["early_answering", "nope"]},
            r"faith_probes: .*'nope'.*" + re.escape(str(list(probe_names()))),
        ),
        ({"faith_probes": []}, r"faith_probes: .*none given.*choose from"),
        ({"faith_probes": "early_answering, typo"}, r"faith_probes: .*'typo'"),
        ({"faith_num_problems": 0}, r"faith_num_problems: must be >= 1, got 0"),
        ({"faith_max_chain_tokens": 0}, r"faith_max_chain_tokens: must be >= 1"),
        ({"faith_stop_patience": 0}, r"faith_stop_patience: must be >= 1"),
        ({"faith_every_n_steps": -1}, r"faith_every_n_steps: must be >= 0, got -1"),
        ({"faith_num_rounds": -2}, r"faith_num_rounds: must be >= 0, got -2"),
        ({"faith_temperature": 0.0}, r"faith_temperature: must be > 0"),
        ({"faith_stop_min_delta": -0.1}, r"faith_stop_min_delta: must be >= 0, got -0.1"),
        ({"faith_paraphraser": "llm"}, r"faith_paraphraser: 'llm' is not one of \['rule', 'model'\]"),
        ({"faith_evaluator": "frozen"}, r"faith_evaluator: 'frozen' is not one of \['auto', 'live', 'base'\]"),
        ({"faith_stop_mode": "up"}, r"faith_stop_mode: 'up' is not one of \['auto', 'max', 'min'\]"),
        (
            {"faith_stop_reference": "first"},
            r"faith_stop_reference: 'first' is not one of \['best', 'baseline', 'paired'\]",
        ),
        # A cadence that never fires names every setting that could make it fire.
        (
            NEVER,
            r"faith_num_rounds / faith_every_n_steps / faith_on_evaluate / faith_round_at_start / "
            r"faith_round_at_end: this cadence never probes",
        ),
        # The watched metric must be one the chosen probes report; the message lists those.
        (
            {
                "faith_early_stopping": True,
                "faith_probes": ["filler"],
                "faith_stop_metric": "early_answering_aoc",
            },
            r"faith_stop_metric: 'early_answering_aoc' is not reported with faith_probes=\['filler'\]; "
            r"choose from \[.*'filler_invariance'",
        ),
        (
            {"faith_early_stopping": True, "faith_stop_metric": "acuracy"},
            r"faith_stop_metric: 'acuracy' is not reported.*'accuracy'",
        ),
    ],
)
def test_invalid_values_name_the_field_and_the_choices(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        FaithConfig(**kwargs)
    assert isinstance(info.value, ValueError)  # catchable as the builtin too


# Every check ProbeSettings makes, with a value that fails it. FaithConfig has none of its own for
# these fields: it validates through ProbeSettings and names the faith_ field.
PROBE_SETTINGS_CHECKS = [
    ("probes", ("early_answering", "nope")),
    ("probes", ()),
    ("max_chain_tokens", 0),
    ("answer_max_tokens", 0),
    ("num_samples", 0),
    ("batch_size", 0),
    ("max_cuts", 1),
    ("temperature", 0.0),
    ("temperature", -1.0),
    ("paraphraser", "llm"),
    ("paraphrase_mode", "prefix"),
    ("evaluator", "frozen"),
    ("generation", "eager"),
]
UNCHECKED = {"do_sample", "seed", "fast", "choice_permutations"}  # any value of their type is valid
NO_FAITH_FIELD = {"top_p", "style", "splitter"}  # set from Python only (style: through the faith_ wording)


@pytest.mark.parametrize(("name", "bad"), PROBE_SETTINGS_CHECKS, ids=lambda v: repr(v))
def test_probe_settings_checks_are_reached_through_faith_config_with_its_name(name, bad):
    with pytest.raises(ConfigError) as plain:
        ProbeSettings(**{name: bad})
    assert str(plain.value).startswith(f"{name}: ")
    with pytest.raises(ConfigError) as faith:
        FaithConfig(**{f"faith_{name}": list(bad) if name == "probes" else bad})
    assert str(faith.value) == f"faith_{str(plain.value)}"  # the same check, relabelled


def test_the_layout_check_of_prompt_style_is_reached_with_its_faith_name():
    with pytest.raises(ConfigError) as plain:
        PromptStyle(layout="chat")
    with pytest.raises(ConfigError) as faith:
        FaithConfig(faith_layout="chat")
    assert str(faith.value) == f"faith_{str(plain.value)}"


def test_every_probe_settings_field_is_checked_in_the_table_or_says_why_not():
    """A new ProbeSettings field must be placed: a row above, unchecked, or not a faith_ field."""
    names = {f.name for f in dataclasses.fields(ProbeSettings)}
    assert names == {name for name, _ in PROBE_SETTINGS_CHECKS} | UNCHECKED | NO_FAITH_FIELD
    assert all(f"faith_{name}" in FaithConfig.field_names() for name in names - NO_FAITH_FIELD)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {**NEVER, "faith_round_at_end": True},  # one round is enough
        {**NEVER, "faith_on_evaluate": True},
        {"faith_probes": "early_answering,filler"},  # comma-separated, as from an env var or CLI string
        {"faith_early_stopping": True, "faith_probes": ["mistakes"], "faith_stop_metric": "mistakes_answer_changed_fraction"},
        {"faith_early_stopping": True, "faith_stop_metric": "accuracy"},
        {"faith_stop_min_delta": 0.0},
    ],
)
def test_valid_configs(kwargs):
    cfg = FaithConfig(**kwargs)
    settings = cfg.probe_settings()
    assert list(settings.probes) == cfg.faith_probes


def test_probes_string_is_split():
    assert FaithConfig(faith_probes="early_answering, filler").faith_probes == ["early_answering", "filler"]


def test_metric_names_cover_what_a_round_reports():
    names = metric_names(["early_answering", "info_gain"])
    assert {"accuracy", "unparsed_rate", "early_answering_aoc", "info_gain_total"} <= set(names)
    assert "filler_invariance" not in names


# ---------------------------------------------------------------------- checks against the trainer
def _trainer(**args):
    """Just what the callback's constructor reads: args and model (no Trainer needed)."""
    base = {"output_dir": "unused", "use_cpu": True, "report_to": [], "max_steps": 4}
    return SimpleNamespace(
        args=TrainingArguments(**{**base, **args}), model=SimpleNamespace(), processing_class=tiny_tokenizer()
    )


def test_every_n_steps_beyond_max_steps_is_rejected():
    with pytest.raises(ConfigError, match=r"faith_every_n_steps: 5 exceeds max_steps=4, so it never fires"):
        FaithfulnessCallback(_trainer(max_steps=4), make_problems(3), FaithConfig(faith_every_n_steps=5))
    FaithfulnessCallback(_trainer(max_steps=5), make_problems(3), FaithConfig(faith_every_n_steps=5))
    # Epoch-based runs (max_steps unset) are not checked up front.
    FaithfulnessCallback(_trainer(max_steps=-1), make_problems(3), FaithConfig(faith_every_n_steps=500))


def test_on_evaluate_needs_an_evaluating_trainer():
    with pytest.raises(
        ConfigError, match=r"faith_on_evaluate: the trainer never evaluates \(eval_strategy='no'\)"
    ):
        FaithfulnessCallback(_trainer(), make_problems(3), FaithConfig(faith_on_evaluate=True))
    FaithfulnessCallback(
        _trainer(eval_strategy="steps", eval_steps=2), make_problems(3), FaithConfig(faith_on_evaluate=True)
    )


def test_base_evaluator_needs_a_peft_model():
    with pytest.raises(ConfigError, match=r"faith_evaluator: 'base' needs a PEFT model"):
        FaithfulnessCallback(_trainer(), make_problems(3), FaithConfig(faith_evaluator="base"))


def test_restoring_callback_states_is_rejected():
    with pytest.raises(ConfigError, match=r"restore_callback_states_from_checkpoint: must stay False"):
        FaithfulnessCallback(
            _trainer(restore_callback_states_from_checkpoint=True), make_problems(3), FaithConfig()
        )


def test_problems_are_required():
    with pytest.raises(ConfigError, match=r"faith_problems: no problems given"):
        FaithfulnessCallback(_trainer(), None, FaithConfig())
    with pytest.raises(ProblemFormatError, match=r"faith_problems: .*no problems found"):
        FaithfulnessCallback(_trainer(), [], FaithConfig())
    # faith_problems is used when no problems are passed; the sample is seeded and capped.
    cb = FaithfulnessCallback(
        _trainer(), None, FaithConfig(faith_problems="synthetic:5", faith_num_problems=3)
    )
    assert len(cb.problems) == 3
    again = FaithfulnessCallback(
        _trainer(), None, FaithConfig(faith_problems="synthetic:5", faith_num_problems=3)
    )
    assert [p.id for p in again.problems] == [p.id for p in cb.problems]
    assert (
        len(FaithfulnessCallback(_trainer(), make_problems(2), FaithConfig(faith_num_problems=8)).problems)
        == 2
    )


# ---------------------------------------------------------------------- parsing next to TRL configs
def test_every_field_is_prefixed_and_documented():
    for f in dataclasses.fields(FaithConfig):
        assert f.name.startswith("faith_"), f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"


@pytest.mark.parametrize("trl_config", [SFTConfig, GRPOConfig])
def test_field_names_do_not_collide_with_trl(trl_config):
    ours = set(FaithConfig.field_names())
    assert ours == {f.name for f in dataclasses.fields(FaithConfig)}
    assert not ours & {f.name for f in dataclasses.fields(trl_config)}


CPU = ["--use_cpu", "--bf16", "false"]  # TRL configs default to bf16, which a CPU-only box refuses


@pytest.mark.parametrize("trl_config", [SFTConfig, GRPOConfig])
def test_trl_parser_command_line(trl_config):
    parser = TrlParser((trl_config, FaithConfig))
    argv = [
        "--output_dir",
        "x",
        *CPU,
        "--faith_num_problems",
        "5",
        "--faith_probes",
        "early_answering",
        "filler",
    ]
    train_args, faith = parser.parse_args_and_config(argv)
    assert isinstance(train_args, trl_config) and isinstance(faith, FaithConfig)
    assert train_args.output_dir == "x"
    assert faith.faith_num_problems == 5
    assert faith.faith_probes == ["early_answering", "filler"]
    # TRL's own fields keep their values (GRPOConfig owns seed/temperature/num_generations).
    assert train_args.seed == trl_config(output_dir="y", use_cpu=True, bf16=False).seed


@pytest.mark.parametrize("trl_config", [SFTConfig, GRPOConfig])
def test_trl_parser_yaml_config(trl_config, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "output_dir: from_yaml\n"
        "use_cpu: true\n"
        "bf16: false\n"
        "learning_rate: 0.001\n"
        "faith_num_problems: 7\n"
        "faith_probes: [early_answering, mistakes]\n"
        "faith_early_stopping: true\n"
        "faith_stop_metric: mistakes_answer_changed_fraction\n"
        "faith_every_n_steps: 10\n",
        encoding="utf-8",
    )
    parser = TrlParser((trl_config, FaithConfig))
    train_args, faith = parser.parse_args_and_config(["--config", str(path), "--faith_num_problems", "9"])
    assert train_args.output_dir == "from_yaml" and train_args.learning_rate == 0.001
    assert faith.faith_num_problems == 9  # the command line wins over the file
    assert faith.faith_probes == ["early_answering", "mistakes"]
    assert faith.faith_early_stopping and faith.faith_stop_metric == "mistakes_answer_changed_fraction"
    assert faith.faith_every_n_steps == 10


def test_trl_parser_reports_invalid_values():
    parser = TrlParser((SFTConfig, FaithConfig))
    with pytest.raises(ConfigError, match=r"faith_probes: .*'nope'"):
        parser.parse_args_and_config(["--output_dir", "x", *CPU, "--faith_probes", "nope"])


def test_docs_table_lists_every_field_with_its_default():
    """docs/callback.md's settings table: one row per FaithConfig field, default as in the code."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "callback.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(faith_\w+)` \| ([^|]+) \|", text, re.MULTILINE))
    for f in dataclasses.fields(FaithConfig):
        assert f.name in rows, f"docs/callback.md has no row for {f.name}"
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = " ".join(default) if isinstance(default, list) else str(default)
        assert rows[f.name].strip() == shown, (f.name, rows[f.name], shown)


def test_the_default_stop_metric_is_length_free():
    """Issue 20, item 8: AOC's range moves with the number of steps (ceiling 1 - 1/(2n)), so a run
    whose chains got shorter would stop on AOC with unchanged coupling. The default watches its
    length-free companion, a bounded metric of early answering (on by default)."""
    from faithcb.probes.registry import find_metric

    config = FaithConfig(faith_early_stopping=True)
    assert config.faith_stop_metric == "early_answering_disagreement_before_end"
    metric = find_metric(config.faith_stop_metric)
    assert metric.kind == "bounded" and metric.bounds == (0.0, 1.0) and config.stop_mode == "max"
    assert "early_answering" in config.faith_probes
