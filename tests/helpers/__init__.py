"""Helpers the tests share, one module per concern (import them as ``helpers.<module>``):

- ``vocabulary``: the one prompt layout (``STYLE``) and the problems the tiny models learn: the
  word problems of the engine tests (``probe_problems``, ``train_texts``) and the compact
  arithmetic of the training-loop tests (``arithmetic``, ``arithmetic_problems``, ``arithmetic_texts``).
- ``models``: tiny models trained once per session on that vocabulary, the tokenizer, one thread.
- ``trainers``: tiny Trainer / SFTTrainer / GRPOTrainer runs with ``FaithfulnessCallback`` attached.
- ``distributed``: launching ``tests/dist_worker.py`` (plain or under ``torchrun``) with a timeout,
  and reading what each rank wrote.
- ``wandb_log``: reading an offline W&B run's ``.wandb`` log back.
- ``chains``: ``Chain`` objects and probe outcomes built by hand, and a ``ScoringLM`` with scripted answers.

Fake language models live in :mod:`faithcb.testing` beside the tiny models and tokenizers.
"""
