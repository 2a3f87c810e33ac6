"""The recipes: every shipped YAML parses with the recipe's own TrlParser; their helpers in faithcb.recipes; slow end-to-end runs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import faithcb.recipes as helpers
from faithcb.errors import ProblemFormatError
from faithcb.history import read_history

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))
SCRIPTS = {"sft_lora": "sft_lora.py", "sft_full": "sft_full.py", "grpo": "grpo.py"}


def _recipe(name: str):
    """Import a recipe module from its file (recipes/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / SCRIPTS[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_has_a_config_and_a_docstring_command():
    assert {p.stem for p in CONFIGS} == set(SCRIPTS)
    for name, script in SCRIPTS.items():
        doc = _recipe(name).__doc__
        assert doc.splitlines()[0] == f"python recipes/{script} --config recipes/configs/{name}.yaml"
        assert (RECIPES / "configs" / f"{name}.yaml").read_text().startswith(f"# python recipes/{script} ")


def test_recipes_import_their_helpers_from_the_package():
    # Ordinary scripts: no sys.path tricks, no sibling module, helpers from faithcb.recipes.
    assert sorted(p.name for p in RECIPES.glob("*.py")) == sorted(SCRIPTS.values())
    for script in SCRIPTS.values():
        source = (RECIPES / script).read_text()
        assert "sys.path" not in source and "from common" not in source
        assert "from faithcb.recipes import" in source


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_parses(config):
    from trl import TrlParser

    from faithcb import FaithConfig

    module = _recipe(config.stem)
    parsed = TrlParser(module.PARSER_TYPES).parse_args_and_config(["--config", str(config)])
    data_args, training_args, model_args, faith_args, *rollout_args = parsed
    assert isinstance(faith_args, FaithConfig)
    if config.stem == "grpo":  # every step's rollouts probed, as a monitor (weight 0) by default
        (rollouts,) = rollout_args
        assert rollouts.faith_rollout_probe and rollouts.faith_rollout_weight == 0.0
        assert rollouts.reward().reward_on == "correct"
    assert faith_args.faith_probes == ["early_answering", "filler", "info_gain"]
    assert faith_args.faith_num_problems == 12
    assert faith_args.faith_num_rounds >= 2
    assert faith_args.faith_max_chain_tokens >= 48
    # The layout and the cue wording come from the YAML, and reach both the probes and the rows.
    text = config.read_text()
    assert "faith_layout: auto" in text and "faith_cue_question:" in text and "faith_number_answer_prefix:" in text
    style = faith_args.prompt_style()
    assert faith_args.probe_settings().style == style
    assert (style.layout, style.cue_question, style.number_answer_prefix) == (
        "auto", "Given all of the above, what's the single, most likely answer?", "The final answer is"
    )
    assert data_args.dataset == "synthetic"
    assert model_args.model_name_or_path == "embedded"
    assert training_args.max_steps > 0 and training_args.output_dir.startswith("runs/")
    assert training_args.gradient_checkpointing is False and training_args.bf16 is False
    if config.stem in ("sft_lora", "grpo"):
        from trl import get_peft_config

        peft = get_peft_config(model_args)
        assert peft.r == 16 and peft.lora_alpha == 32 and peft.target_modules == "all-linear"
    else:
        assert not model_args.use_peft


def test_command_line_overrides_the_config():
    from trl import TrlParser

    module = _recipe("sft_lora")
    argv = [
        "--config",
        str(RECIPES / "configs" / "sft_lora.yaml"),
        "--faith_probes",
        "early_answering",
        "--faith_num_problems",
        "2",
        "--max_steps",
        "3",
    ]
    _, training_args, _, faith_args = TrlParser(module.PARSER_TYPES).parse_args_and_config(argv)
    assert faith_args.faith_probes == ["early_answering"]
    assert faith_args.faith_num_problems == 2
    assert training_args.max_steps == 3


def test_gsm8k_records_become_chains_and_a_heldout_split(tmp_path):
    rows = [
        {
            "question": f"Q{i}: 48 clips, half as many in May. Total?",
            "answer": "She sold 48/2 = <<48/2=24>>24 in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72",
        }
        for i in range(5)
    ]
    path = tmp_path / "gsm.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, heldout = helpers.load_examples(
        helpers.DataArguments(dataset=str(path), holdout=2, num_train_examples=0)
    )
    assert len(heldout) == 2 and len(train) == 3
    problem, chain = train[0]
    assert problem.answer == "72" and problem.question.startswith("Q2")
    assert "<<" not in chain and chain.endswith("The answer is 72.")
    assert chain == "She sold 48/2 = 24 in May.\nAltogether 48+24 = 72.\nThe answer is 72."
    assert chain == problem.reference_chain
    assert helpers.correctness_reward([chain, "The answer is 71."], ["72", "72"], ["number", "number"]) == [
        1.0,
        0.0,
    ]


@pytest.mark.parametrize("name, source, kind", [("gsm8k", "gsm8k:train", "number"), ("aqua", "aqua:dev", "choice")])
def test_named_sets_as_the_recipes_dataset(name, source, kind):
    """--dataset takes the names --problems and faith_problems take: the bundled sets, offline."""
    train, heldout = helpers.load_examples(helpers.DataArguments(dataset=name, holdout=8, num_train_examples=10))
    assert [p.id for p in heldout] == [f"{source}:{i}" for i in range(1, 9)]
    assert len(train) == 10 and train[0][0].id == f"{source}:9"
    assert all(p.kind == kind and chain == p.reference_chain for p, chain in train)


def test_recipe_docstrings_name_datasets_that_ship_or_the_hub():
    """No example points outside the repository: every --dataset in a recipe's docstring is a
    bundled set, the synthetic task or a hub id (owner/name), never a local path."""
    from faithcb.data import is_named

    for name in SCRIPTS:
        values = re.findall(r"--dataset (\S+)", _recipe(name).__doc__)
        assert values, name
        for value in values:
            hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", value) and not (ROOT / value).exists()
            assert value == "synthetic" or is_named(value) or hub_id, (name, value)
            if is_named(value) and not value.startswith("hf:"):
                helpers.load_examples(helpers.DataArguments(dataset=value, holdout=1, num_train_examples=1))


def test_records_without_reasoning_are_refused(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) for i in range(3)))
    with pytest.raises(ProblemFormatError, match=r"no reasoning to train on.*rationale"):
        helpers.load_examples(helpers.DataArguments(dataset=str(path), holdout=1))


def test_aqua_rationales_become_chains(tmp_path):
    # AQuA's dev.json holds one object a line under a .json suffix.
    rows = [
        {"question": f"q{i}?", "options": ["A)1", "B)2"], "rationale": "1 + 1 = 2. Answer B", "correct": "B"}
        for i in range(3)
    ]
    path = tmp_path / "dev.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, heldout = helpers.load_examples(helpers.DataArguments(dataset=str(path), holdout=1))
    assert len(heldout) == 1 and [p.id for p, _ in train] == [f"{path}:2", f"{path}:3"]
    assert all(p.kind == "choice" and c.startswith("1 + 1 = 2. Answer B") for p, c in train)


def test_synthetic_rows_use_the_probe_layout():
    from faithcb.problem import Problem
    from faithcb.prompting import Prompter
    from faithcb.testing import tiny_tokenizer

    tok = tiny_tokenizer(chat_template=True)
    train, heldout = helpers.load_examples(helpers.DataArguments(num_train_examples=4, holdout=3))
    assert len(train) == 4 and len(heldout) == 3
    assert not {p.question for p, _ in train} & {p.question for p in heldout}
    ds = helpers.sft_dataset(train, tok)
    prompt, cue = Prompter.for_tokenizer(tok).pieces(train[0][0], tok)
    assert ds[0]["prompt"] == prompt
    assert ds[0]["completion"] == train[0][1] + cue + " " + train[0][0].answer
    grpo = helpers.grpo_dataset(train, tok)
    assert grpo[0]["prompt"] == prompt and grpo[0]["answer"] == train[0][0].answer
    assert isinstance(train[0][0], Problem)


def test_rows_follow_the_configured_wording():
    """The faith_* wording a recipe sets reaches its training rows, as it reaches the probes."""
    from faithcb import FaithConfig
    from faithcb.prompting import Prompter
    from faithcb.testing import tiny_tokenizer

    tok = tiny_tokenizer(chat_template=True)
    train, _ = helpers.load_examples(helpers.DataArguments(num_train_examples=2, holdout=1))
    style = FaithConfig(faith_cue_question="And so?", faith_number_answer_prefix="Result:").prompt_style()
    ds = helpers.sft_dataset(train, tok, style)
    assert "And so?" in ds[0]["completion"] and "Result: " in ds[0]["completion"]
    assert ds[0]["prompt"] == Prompter.for_tokenizer(tok, style).pieces(train[0][0], tok)[0]
    # GRPO prompts follow the configured layout too (here: no chat template).
    plain = FaithConfig(faith_layout="plain").prompt_style()
    assert helpers.grpo_dataset(train, tok, plain)[0]["prompt"].startswith("Question: ")



@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_recipe_runs_on_the_embedded_model(name, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(RECIPES / SCRIPTS[name]),
        "--config",
        str(RECIPES / "configs" / f"{name}.yaml"),
        "--max_steps",
        "2",
        "--num_train_examples",
        "32",
        "--faith_num_problems",
        "2",
        "--faith_max_chain_tokens",
        "32",
        "--faith_probes",
        "early_answering",
        "filler",
        "--faith_show_progress",
        "false",
        "--report_to",
        "none",
        "--output_dir",
        str(out),
    ]
    if name == "grpo":
        cmd += [
            "--per_device_train_batch_size",
            "2",
            "--num_generations",
            "2",
            "--max_completion_length",
            "16",
        ]
    else:
        cmd += ["--per_device_train_batch_size", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    history = read_history(out)
    steps = sorted({h["step"] for h in history if h.get("role", "model") == "model"})
    assert steps[0] == 0 and steps[-1] == 2
    assert all("error" not in h for h in history)
    if name == "grpo":  # the coupling monitor logged each step's own rollouts
        logs = proc.stdout + proc.stderr
        assert logs.count("'faith_rollout/probed'") == 2 and "'rewards/faith_coupling/mean'" in logs
