"""Tiny in-process models and tokenizers for tests and examples, and ``ScriptedLM``, a model-free fake.

Everything here is built from code (no downloads, no files), so a test suite can run a real
Hugging Face causal LM end to end in seconds on a CPU. Heavy imports happen inside the functions
so that importing :mod:`faithcb.testing` stays cheap.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

from faithcb.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["CHAT_TEMPLATE", "FAMILIES", "ScriptedLM", "tiny_model", "tiny_tokenizer", "train_tiny"]

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
END_TOKEN = "<|end|>"
# The role tokens are always in the vocabulary, with or without the template, so that a model built
# for one tokenizer variant can be used with the other (same ids everywhere).
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN, *ROLE_TOKENS, END_TOKEN)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

FAMILIES = ("llama", "gpt2", "qwen2")

# string.printable minus the exotic whitespace (\t is kept: code and tables use it).
_CHARS = "".join(ch for ch in string.printable if ch not in "\r\x0b\x0c")

_MAX_POSITIONS = 512
# Below this many parameters train_tiny runs on one CPU thread (see there).
_SINGLE_THREAD_PARAMS = 20_000_000


def tiny_tokenizer(*, chat_template: bool = False, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over printable ASCII.

    Every character is one token, so ``decode(encode(text), skip_special_tokens=True) == text`` for
    any printable-ASCII text, and offsets mapping is exact. Special tokens: ``<pad>``, ``<eos>``,
    ``<unk>``, ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``. No BOS is added.

    With ``chat_template=True`` the tokenizer carries :data:`CHAT_TEMPLATE` and its eos token is
    ``<|end|>``, so generation stops at the end of the assistant turn; otherwise ``chat_template``
    is None and eos is ``<eos>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _CHARS:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # `[\s\S]` rather than `.`: the regex dot does not match a newline.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins the pieces with nothing in between; the default decoder would put spaces back.
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=END_TOKEN if chat_template else EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side=padding_side,
        model_max_length=_MAX_POSITIONS,
        # The cleanup would turn " ." into "." and break the exact round trip.
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE if chat_template else None
    return tokenizer


def tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    family: str = "llama",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    max_positions: int = _MAX_POSITIONS,
) -> PreTrainedModel:
    """A randomly initialised float32 causal LM sized for ``tokenizer``, in eval mode.

    ``max_positions`` bounds the context (512 tokens by default; long-chain tests raise it).

    ``family`` is ``"llama"`` (grouped-query attention with 2 key/value heads when ``num_heads``
    is even), ``"gpt2"`` (absolute positions, tied embeddings) or ``"qwen2"``. Weight tying follows
    the family's default. The weights depend only on ``seed``; the global torch RNG is left as it was.
    Dropout is off so that training with :func:`train_tiny` is deterministic and quick.
    """
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    vocab_size = len(tokenizer)
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    config: GPT2Config | LlamaConfig | Qwen2Config
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    else:
        cls = LlamaConfig if family == "llama" else Qwen2Config
        kv_heads = 2 if family == "llama" and num_heads % 2 == 0 else num_heads
        config = cls(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=max_positions,
            attention_dropout=0.0,
            **ids,
        )
    # Initialisation draws from the global RNG; fork it so that callers' seeds are not disturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # GPT-2 otherwise warns on the first loss that its (unset) loss type is unrecognised.
    model.config.loss_type = "ForCausalLM"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


def train_tiny(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    completion_starts: Sequence[int] | None = None,
) -> list[float]:
    """Train ``model`` on ``texts`` (each followed by eos) with plain AdamW; return the loss per step.

    Batches are right-padded with an attention mask and -100 labels on padding. With
    ``completion_starts`` (one character index per text) only the tokens that start at or after
    that character count in the loss, so the model learns the completions, not the questions.
    Batch order comes from a private generator and any dropout runs under a forked RNG, so the
    global torch RNG is left as it was. The model ends in eval mode. On CPU, a model under 20M
    parameters trains on one thread (``torch.set_num_threads`` is restored afterwards).

    Speed: a 2-layer width-64 llama from :func:`tiny_model` on 40 arithmetic texts such as
    ``"Q: 3 + 4 - 2?\\nA: 3 + 4 = 7. 7 - 2 = 5. The answer is 5."``, default 200 steps of batch 16
    (torch 2.13, 2-core machine): about 5 s of CPU on the one thread, so about 5 s wall when idle and
    13-16 s wall with the machine loaded 4x over (two threads: 3 s idle but 110-270 s when loaded,
    hence one). Loss 4.7 -> 0.09, or -> 0.017 with ``completion_starts`` at the answers, after which
    greedy decoding reproduces all 40 answers.
    """
    import torch

    if not texts:
        raise ConfigError("train_tiny needs at least one text")
    if completion_starts is not None and len(completion_starts) != len(texts):
        raise ConfigError(
            f"completion_starts has {len(completion_starts)} entries but there are {len(texts)} texts"
        )
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer needs an eos token and a pad token")
    max_len = int(
        getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 0)
    )
    max_len = max_len or _MAX_POSITIONS

    examples: list[tuple[list[int], list[int]]] = []
    for i, text in enumerate(texts):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start = 0 if completion_starts is None else completion_starts[i]
        ids = [*enc["input_ids"], tokenizer.eos_token_id][:max_len]
        labels = [
            t if s >= start else -100
            for t, (s, _e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        ]
        labels = [*labels, tokenizer.eos_token_id][:max_len]
        examples.append((ids, labels))

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, min(20, steps // 10))

    def lr_factor(step: int) -> float:
        # Short warmup, then cosine to 10%: a constant rate of 3e-3 oscillates at the end.
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    order: list[int] = []
    losses: list[float] = []
    # Tiny matrices gain nothing from intra-op threads, and on a busy machine (parallel test
    # workers) the spinning thread pool made the loop 10-20x slower than one thread.
    threads = torch.get_num_threads()
    single_thread = (
        device.type == "cpu" and sum(p.numel() for p in model.parameters()) < _SINGLE_THREAD_PARAMS
    )
    if single_thread:
        torch.set_num_threads(1)
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(steps):
                batch: list[int] = []
                while len(batch) < batch_size:
                    if not order:
                        order = torch.randperm(len(examples), generator=generator).tolist()
                    batch.append(order.pop())
                width = max(len(examples[j][0]) for j in batch)
                input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, j in enumerate(batch):
                    ids, labs = examples[j]
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    labels[row, : len(labs)] = torch.tensor(labs)
                    attention[row, : len(ids)] = 1
                out = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    labels=labels.to(device),
                )
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(float(out.loss.detach()))
    finally:
        model.eval()
        if single_thread:
            torch.set_num_threads(threads)
    return losses


class ScriptedLM:
    """A ``ScoringLM`` without a model: what it writes and answers is scripted, so a test makes the
    case it checks on purpose (no forward passes; the same on every machine and library version).

    Args:
        tokenizer: a fast tokenizer (``tiny_tokenizer()``).
        chains: what ``generate`` writes: one text for every prompt, ``{question: text}`` (the
            question is the prompt's first line), or ``chains(prompt_text, max_new_tokens) -> text``.
            A text shorter than the limit ends (with the end token when asked to keep it).
        rule: ``rule(body, question) -> answer``: what the model answers after the cue, given the
            chain text the context shows (up to ``cue``) and the question. Greedy decoding and the
            exact check both follow it, so they always agree: the continuation `` <answer>\\n``
            is greedy (log-probability -0.5 per token), every other one is not (-7).
        pick: multiple choice: ``pick(options) -> index`` of the letter the model prefers among
            the lettered options ("A) ...") the context shows.
        cue: where the chain ends in a context (the tests' layout writes "\\nSo" before the answer).

    ``prompts`` keeps every generation prompt (token ids), ``scored`` counts scored requests.
    """

    def __init__(self, tokenizer, chains=" ", rule=lambda body, question: "7", *, pick=None,
                 cue: str = "\nSo", answer_max_tokens: int = 8):
        self.tokenizer = tokenizer
        self.model = None
        self.answer_max_tokens = answer_max_tokens
        self.eos_ids = {tokenizer.eos_token_id}
        self.newline_ids = frozenset(tokenizer("\n", add_special_tokens=False)["input_ids"])
        self.chains, self.rule, self.pick, self.cue = chains, rule, pick, cue
        self.prompts: list[list[int]] = []
        self.scored = 0

    # ------------------------------------------------------------------ the ScoringLM protocol
    def session(self):
        import contextlib

        return contextlib.nullcontext(self)

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(self, prompts, *, max_new_tokens: int, keep_stop: bool = False, **_sampling) -> list[list[int]]:
        out = []
        for prompt in prompts:
            self.prompts.append(list(prompt))
            ids = self.encode(self._chain(self.decode(prompt), max_new_tokens))
            ended = len(ids) < max_new_tokens
            out.append(ids[:max_new_tokens] + ([self.tokenizer.eos_token_id] if ended and keep_stop else []))
        return out

    def answer(self, contexts) -> list[list[int]]:
        return [self._answer_ids(c)[: self.answer_max_tokens] for c in contexts]

    def score(self, requests):
        import dataclasses
        import re

        from faithcb.scoring import ContinuationScore, ScoreResult

        results = []
        for req in requests:
            self.scored += 1
            greedy = self._answer_ids(req.context())
            conts = tuple(ContinuationScore(-0.5 * len(c) if list(c) == greedy else -7.0, list(c) == greedy)
                          for c in req.continuations)
            letters: tuple[float, ...] = ()
            if req.choice_ids and self.pick is not None:
                options = re.findall(r"^[A-J]\) (.*)$", self.decode(req.context()), flags=re.M)
                best = self.pick(options)
                letters = tuple(0.0 if i == best else -5.0 for i in range(len(req.choice_ids)))
            result = ScoreResult(conts, letters)
            if getattr(req, "decode_tokens", 0) and conts and not conts[0].greedy:
                result = dataclasses.replace(result, decoded=tuple(greedy))  # the decoded answer, when asked
            results.append(result)
        return results

    # ------------------------------------------------------------------ the script
    @property
    def prompt_texts(self) -> list[str]:
        return [self.decode(p) for p in self.prompts]

    def _chain(self, prompt_text: str, max_new_tokens: int) -> str:
        if callable(self.chains):
            return self.chains(prompt_text, max_new_tokens)
        if isinstance(self.chains, dict):
            return self.chains[prompt_text.split("\n")[0]]
        return self.chains

    def _answer_ids(self, context) -> list[int]:
        text = self.decode(context)
        question, _, rest = text.partition("\n")
        body = rest[: rest.rfind(self.cue)] if self.cue in rest else rest
        return self.encode(" " + self.rule(body, question) + "\n")
