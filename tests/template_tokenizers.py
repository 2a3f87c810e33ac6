"""Test tokenizers that carry real, vendored chat templates (tests/fixtures/chat_templates/).

Each tokenizer is :func:`faithcb.testing.tiny_tokenizer` (character-level over printable ASCII, no
downloads) with the model family's own chat template and its turn markers, think tags and
bos/eos added as single tokens, so that a template renders exactly as it does for the real model
and the rendered text tokenizes without ``<unk>``. The metadata beside each template records what
tests/test_layouts.py expects of it; /work/notes/templates.md (the survey) is where it was read off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from faithcb.testing import tiny_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TEMPLATE_DIR = Path(__file__).resolve().parent / "fixtures" / "chat_templates"

# The reasoning-block markers of the <think> families.
THINK_OPEN = "<think>\n"
THINK_CLOSE_QWEN = "\n</think>\n\n"  # Qwen3 / 3.5 / 3.6 close the block like this in assistant turns
# R1-distill, DeepSeek-V3 (TRL) and SmolLM3 never render reasoning in a final turn, so the template
# fixes only the tag; the whitespace around it is the model's habit, not the template's.
THINK_CLOSE_BARE = "</think>"
HARMONY_OPEN = "<|channel|>analysis<|message|>"
HARMONY_CLOSE = "<|end|><|start|>assistant<|channel|>final<|message|>"

_R1_SPECIALS = ("<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>",
                "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>")
_CHATML_SPECIALS = ("<|im_start|>", "<|im_end|>")
_HARMONY_SPECIALS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>",
                     "<|constrain|>")
_LLAMA3_SPECIALS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>")
_PHI3_SPECIALS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


@dataclass(frozen=True)
class TemplateSpec:
    """One vendored template, its tokens, and what the layout tests expect of it.

    ``expects_think``: ``auto`` must pick the ``think`` layout. ``think_opener``: the text that opens
    the reasoning right after the assistant header (``<think>\n``; for harmony the ``analysis``
    channel header; "" for non-reasoning templates). ``native_has_opener``: the template's own
    generation prompt already ends with the opener. ``closer``: the text that, in the cue, ends the
    reasoning (Qwen: ``\n</think>\n\n`` as the template renders it; R1/SmolLM3: the bare tag;
    harmony: the end of the analysis message and the ``final`` channel header).
    ``strips_history_reasoning``: the template deletes everything up to ``</think>`` in earlier
    assistant turns, so a chain placed there would vanish (two_turn is impossible).
    ``stamps_date``: the template reads the clock (``strftime_now``).
    """

    name: str
    file: str
    source: str  # "trl" | "llama.cpp"
    bos: str | None
    eos: str
    specials: tuple[str, ...]
    think_tags: bool  # <think> / </think> are single (non-special) tokens, as in the real vocabularies
    expects_think: bool
    think_opener: str = ""
    native_has_opener: bool = False
    closer: str = ""
    strips_history_reasoning: bool = False
    stamps_date: bool = False

    @property
    def template(self) -> str:
        return (TEMPLATE_DIR / self.file).read_text(encoding="utf-8")


TEMPLATES: dict[str, TemplateSpec] = {
    spec.name: spec
    for spec in (
        # Qwen3: generation prompt is "<|im_start|>assistant\n"; thinking is the model's default.
        TemplateSpec("qwen3", "trl_qwen3.jinja", "trl", None, "<|im_end|>", _CHATML_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, closer=THINK_CLOSE_QWEN),
        TemplateSpec("qwen3_0_6b", "llamacpp_Qwen-Qwen3-0.6B.jinja", "llama.cpp", None, "<|im_end|>",
                     _CHATML_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, closer=THINK_CLOSE_QWEN),
        # Qwen3.5 / 3.6 (thinking default): generation prompt already ends "<think>\n".
        TemplateSpec("qwen3_5_think", "trl_qwen3_5_think.jinja", "trl", None, "<|im_end|>", _CHATML_SPECIALS,
                     True, expects_think=True, think_opener=THINK_OPEN, native_has_opener=True,
                     closer=THINK_CLOSE_QWEN),
        TemplateSpec("qwen3_6", "trl_qwen3_6.jinja", "trl", None, "<|im_end|>", _CHATML_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, native_has_opener=True,
                     closer=THINK_CLOSE_QWEN),
        # Qwen3.5 small models: thinking off by default; the default generation prompt is
        # "<|im_start|>assistant\n<think>\n\n</think>\n\n" (an empty, closed block). The model family
        # has a reasoning block, so auto still picks think, rendered with enable_thinking=True, which
        # makes the generation prompt end "<think>\n" as in 3.5 think (see the survey).
        TemplateSpec("qwen3_5_nothink", "trl_qwen3_5_nothink.jinja", "trl", None, "<|im_end|>",
                     _CHATML_SPECIALS, True, expects_think=True, think_opener=THINK_OPEN,
                     native_has_opener=True, closer=THINK_CLOSE_QWEN),
        # DeepSeek-R1-Distill-Qwen: generation prompt ends "<think>\n"; history loses everything up to </think>.
        TemplateSpec("r1_distill_qwen", "llamacpp_deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "llama.cpp",
                     "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", _R1_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, native_has_opener=True,
                     closer=THINK_CLOSE_BARE, strips_history_reasoning=True),
        # SmolLM3 (Unsloth-edited, as vendored by llama.cpp): thinking on by default, generation
        # prompt "<|im_start|>assistant\n", reasoning passed inline in the content.
        TemplateSpec("smollm3", "llamacpp_HuggingFaceTB-SmolLM3-3B.jinja", "llama.cpp", None, "<|im_end|>",
                     _CHATML_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, closer=THINK_CLOSE_BARE),
        # gpt-oss (harmony; the TRL and llama.cpp files are byte-identical): chain in the analysis
        # channel, answer in the final channel; the system message stamps strftime_now("%Y-%m-%d").
        TemplateSpec("gpt_oss", "trl_gptoss.jinja", "trl", "<|startoftext|>", "<|return|>", _HARMONY_SPECIALS,
                     False, expects_think=True, think_opener=HARMONY_OPEN, closer=HARMONY_CLOSE,
                     stamps_date=True),
        # TRL's "DeepSeek-V3" template is the R1-style one: its generation prompt also ends "<think>\n"
        # and it strips history up to </think> (see the survey), so it is a think template.
        TemplateSpec("deepseek_v3", "trl_deepseekv3.jinja", "trl", "<｜begin▁of▁sentence｜>",
                     "<｜end▁of▁sentence｜>", _R1_SPECIALS, True,
                     expects_think=True, think_opener=THINK_OPEN, native_has_opener=True,
                     closer=THINK_CLOSE_BARE, strips_history_reasoning=True),
        TemplateSpec("llama3_1", "trl_llama3_1.jinja", "trl", "<|begin_of_text|>", "<|eot_id|>", _LLAMA3_SPECIALS,
                     False, expects_think=False),
        TemplateSpec("llama3_2", "trl_llama3_2.jinja", "trl", "<|begin_of_text|>", "<|eot_id|>", _LLAMA3_SPECIALS,
                     False, expects_think=False, stamps_date=True),
        TemplateSpec("phi3_5", "trl_phi3_5.jinja", "trl", "<s>", "<|endoftext|>", _PHI3_SPECIALS,
                     False, expects_think=False),
    )
}
TEMPLATE_NAMES: tuple[str, ...] = tuple(TEMPLATES)
THINK_TEMPLATES = tuple(n for n, s in TEMPLATES.items() if s.expects_think)
TWO_TURN_TEMPLATES = tuple(n for n, s in TEMPLATES.items() if not s.expects_think)


def template_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A fresh character-level fast tokenizer carrying template ``name`` and its special tokens."""
    spec = TEMPLATES[name]
    tok = tiny_tokenizer()
    extra = [t for t in (spec.bos, spec.eos, *spec.specials) if t]
    # The base tokenizer's own role tokens stay (ids are shared); the template's markers become
    # single special tokens and the template's bos/eos replace <eos>.
    tok.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    tok.eos_token = spec.eos
    tok.bos_token = spec.bos
    if spec.think_tags:
        # Real Qwen3 / R1 / SmolLM3 vocabularies have the tags as added, non-special tokens: they
        # survive decode(skip_special_tokens=True).
        tok.add_tokens(["<think>", "</think>"], special_tokens=False)
    tok.chat_template = spec.template
    return tok
