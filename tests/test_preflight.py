"""Setup mistakes surface as ConfigError when the callback or engine is built, before step 0."""

from __future__ import annotations

import pytest
from helpers.models import tokenizer
from helpers.trainers import attach, faith_config, make_trainer
from transformers import CanineTokenizer

from faithcb.callback import FaithfulnessCallback
from faithcb.engine import FaithfulnessEngine
from faithcb.errors import ConfigError
from faithcb.settings import ProbeSettings
from faithcb.tasks.arithmetic import make_problems
from faithcb.testing import tiny_tokenizer

# A real chat template of the kind that drops earlier assistant turns from the conversation it
# renders (R1-style templates do this with everything before </think>): the chain never appears.
DROPS_ASSISTANT_TURNS = (
    "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def trainer(tmp_path):
    return make_trainer("trainer", tmp_path, max_steps=2)


def test_trainer_without_tokenizer(trainer):
    trainer.processing_class = None
    with pytest.raises(ConfigError, match=r"trainer: has no tokenizer"):
        FaithfulnessCallback(trainer, make_problems(2), faith_config())


@pytest.mark.slow
def test_slow_tokenizer(trainer):
    trainer.processing_class = CanineTokenizer()  # a real tokenizer without offset mappings
    with pytest.raises(ConfigError, match=r"tokenizer: CanineTokenizer is a slow tokenizer"):
        FaithfulnessCallback(trainer, make_problems(2), faith_config())
    with pytest.raises(ConfigError, match=r"slow tokenizer"):
        FaithfulnessEngine(trainer.model, CanineTokenizer(), ProbeSettings())


def test_chat_template_that_does_not_render_the_chain(trainer):
    tok = tiny_tokenizer(chat_template=True)
    tok.chat_template = DROPS_ASSISTANT_TURNS
    trainer.processing_class = tok
    with pytest.raises(ConfigError, match=r"chat template.*does not render assistant content verbatim"):
        FaithfulnessCallback(trainer, make_problems(2), faith_config())
    with pytest.raises(ConfigError, match=r"does not render assistant content verbatim"):
        FaithfulnessEngine(trainer.model, tok, ProbeSettings())


def test_base_evaluator_without_peft(trainer):
    with pytest.raises(ConfigError, match=r"faith_evaluator: 'base' needs a PEFT model"):
        FaithfulnessCallback(trainer, make_problems(2), faith_config(faith_evaluator="base"))
    with pytest.raises(ConfigError, match=r"evaluator: 'base' needs a PEFT model"):
        FaithfulnessEngine(trainer.model, tokenizer(), ProbeSettings(evaluator="base"))


def test_a_round_never_swallows_a_config_error(trainer, monkeypatch):
    """Runtime failures become a warning; a ConfigError raised inside a round stops training."""

    def misconfigured(self, problems):
        raise ConfigError("something only a round could see")

    monkeypatch.setattr(FaithfulnessEngine, "records", misconfigured)
    attach(trainer, faith_config(faith_strict=False))
    with pytest.raises(ConfigError, match="only a round could see"):
        trainer.train()
    assert trainer.state.global_step == 0
