from __future__ import annotations

import random

import pytest
import torch

from faithcb.testing import CHAT_TEMPLATE, FAMILIES, tiny_model, tiny_tokenizer, train_tiny

TEXTS = [
    "Q: 3 + 4 - 2?\nA: 3 + 4 = 7. 7 - 2 = 5. The answer is 5.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\nand  double  spaces, punctuation: {}[]()!?'\"`~@#$%^&*_-=+|\\/<>;",
    "",
]


def _arithmetic(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, starts = [], []
    for _ in range(n):
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
        question = f"Q: {a} + {b} - {c}?\nA: "
        texts.append(
            question + f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}. The answer is {a + b - c}."
        )
        starts.append(len(question))
    return texts, starts


@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips_exactly(text: str) -> None:
    tok = tiny_tokenizer()
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no BOS
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([*ids, tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text
    assert tok.batch_decode([ids], skip_special_tokens=True) == [text]


def test_offsets_mapping_is_per_character() -> None:
    tok = tiny_tokenizer()
    text = "A: 12 + 3\nok"
    enc = tok(text, return_offsets_mapping=True)
    assert enc["offset_mapping"] == [(i, i + 1) for i in range(len(text))]
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        assert tok.convert_ids_to_tokens(token_id) == text[start:end]


def test_special_tokens_and_padding() -> None:
    tok = tiny_tokenizer()
    assert tok.eos_token == "<eos>" and tok.pad_token == "<pad>" and tok.unk_token == "<unk>"
    assert tok.bos_token is None
    assert tok.chat_template is None
    assert tok("é")["input_ids"] == [tok.unk_token_id]
    batch = tok(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 2:].tolist() == [tok.pad_token_id] * 2
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    left = tiny_tokenizer(padding_side="left")
    assert left(["ab", "abcd"], padding=True)["attention_mask"][0] == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        tiny_tokenizer(padding_side="middle")


def test_chat_template() -> None:
    tok = tiny_tokenizer(chat_template=True)
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.eos_token == "<|end|>"
    messages = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|user|>2 + 2?<|end|><|assistant|>4<|end|>"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>2 + 2?<|end|><|assistant|>"
    ids = tok(prompt)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0]) == "<|user|>"
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert tok.decode(ids, skip_special_tokens=True) == "2 + 2?"
    # Both variants share one vocabulary, so a model fits either.
    assert tok.get_vocab() == tiny_tokenizer().get_vocab()


@pytest.mark.parametrize("family", FAMILIES)
def test_families_forward_and_generate(family: str) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tok, family)
    assert not model.training
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    batch = tok(["Q: 1 + 1?", "A:"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    out = model.generate(**tok("Q:", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= 2 + 5
    if family == "llama":
        assert model.config.num_key_value_heads == 2
    if family == "gpt2":
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_tiny_model_is_seeded_and_leaves_global_rng_alone() -> None:
    tok = tiny_tokenizer()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = tiny_model(tok, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = tiny_model(tok, seed=3)
    c = tiny_model(tok, seed=4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    with pytest.raises(ValueError, match="family"):
        tiny_model(tok, "bert")


def test_train_tiny_learns_and_leaves_global_rng_alone() -> None:
    tok = tiny_tokenizer()
    texts, _ = _arithmetic(16)
    model = tiny_model(tok)
    torch.manual_seed(99)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    losses = train_tiny(model, tok, texts, steps=60, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert len(losses) == 60
    assert losses[-1] < 0.5 * losses[0]
    assert not model.training
    # Same seed, same arguments, same model: the same curve.
    first = train_tiny(tiny_model(tok), tok, texts, steps=4, batch_size=4)
    second = train_tiny(tiny_model(tok), tok, texts, steps=4, batch_size=4)
    assert first == second


def _token_losses(model: torch.nn.Module, tok: object, text: str) -> torch.Tensor:
    ids = tok(text, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    # Entry i is the loss of predicting character i + 1 from the characters before it.
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")


def test_train_tiny_completion_only_learns_the_answers() -> None:
    tok = tiny_tokenizer()
    texts, starts = _arithmetic(16)
    model = tiny_model(tok)
    losses = train_tiny(model, tok, texts, steps=80, batch_size=8, completion_starts=starts)
    assert losses[-1] < 0.5 * losses[0]
    per_token = _token_losses(model, tok, texts[0])
    # The question's characters were never in the loss, the answer's were. The first answer
    # characters repeat the question ("3 + 4 = ..."), so the gap is wide.
    question = per_token[: starts[0] - 1].mean()
    answer = per_token[starts[0] - 1 :].mean()
    assert answer < 1.0 < question
    with pytest.raises(ValueError, match="completion_starts"):
        train_tiny(model, tok, texts, steps=1, completion_starts=starts[:-1])


def test_train_tiny_with_gpt2_and_chat_tokenizer() -> None:
    tok = tiny_tokenizer(chat_template=True)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"{i}?"}, {"role": "assistant", "content": str(i)}], tokenize=False
        )
        for i in range(10)
    ]
    model = tiny_model(tok, "gpt2")
    losses = train_tiny(model, tok, texts, steps=60, batch_size=8)
    assert losses[-1] < 0.5 * losses[0]


def test_scripted_lm_follows_its_script():
    from faithcb.scoring import ScoreRequest
    from faithcb.testing import ScriptedLM

    tok = tiny_tokenizer()
    lm = ScriptedLM(tok, {"Q1": "1 + 1 = 2.", "Q2": "x" * 50}, lambda body, question: body[-2], pick=lambda options: 1)
    ended, cut = lm.generate([lm.encode("Q1\n"), lm.encode("Q2\n")], max_new_tokens=20, keep_stop=True)
    assert lm.decode(ended) == "1 + 1 = 2." and ended[-1] == tok.eos_token_id  # shorter than the limit: ended
    assert len(cut) == 20 and tok.eos_token_id not in cut  # ran into the limit
    assert lm.prompt_texts == ["Q1\n", "Q2\n"]
    context = lm.encode("Q1\n1 + 1 = 2.\nSo")
    assert lm.decode(lm.answer([context])[0]) == " 2\n"  # the rule reads the chain up to the cue
    (result,) = lm.score([ScoreRequest(context, len(context), (), (), (tuple(lm.encode(" 2\n")), tuple(lm.encode(" 3\n"))), group=0)])
    assert [c.greedy for c in result.continuations] == [True, False] and lm.scored == 1
    choice = lm.encode("Q1\nA) 1\nB) 2\nSo")
    (letters,) = lm.score([ScoreRequest(choice, len(choice), (), (), (), (lm.encode("A")[0], lm.encode("B")[0]), group=1)])
    assert letters.choice_logprobs == (-5.0, 0.0)  # pick(options) -> B
