"""python recipes/grpo.py --config recipes/configs/grpo.yaml

GRPO with a correctness reward (faithcb.answers.extract_answer of the completion == the gold answer),
with FaithfulnessCallback probing the live model: does RL on outcomes keep the chain load-bearing?

The prompts are the probes' own chain prompts, so the chains GRPO rewards are the chains the
probes measure. Defaults (the YAML): the embedded SmolLM2-135M-Instruct, LoRA, the built-in
arithmetic word problems, on CPU. Override any field on the command line, e.g.

    # GSM8K (the bundled 500 problems of its train split); the first 64 are held out for the probes
    python recipes/grpo.py --config recipes/configs/grpo.yaml --dataset gsm8k \
        --max_completion_length 256 --faith_max_chain_tokens 256
    # a hub model and dataset on a GPU (add --use_vllm true where vLLM is installed)
    python recipes/grpo.py --config recipes/configs/grpo.yaml --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset openai/gsm8k --dataset_config main --num_train_examples 0 --max_steps 300 --bf16 true \
        --num_generations 8 --per_device_train_batch_size 8 --max_completion_length 256 \
        --faith_max_chain_tokens 256 --faith_num_problems 64 --report_to wandb

Probe problems: ``--faith_problems gsm8k|aqua|FILE|synthetic:N`` if given, else problems held out of the
training data (``--holdout``). History: ``OUTPUT_DIR/faith_history.jsonl``.

Every step's own rollouts are probed too (``faithcb.CouplingReward``, logged as ``faith_rollout/*``):
a monitor by default (``--faith_rollout_weight 0``); a positive weight rewards coupling beside
correctness. Read ``faith_rollout/`` next to the held-out ``faith/`` rounds (docs/grpo.md).
"""

from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser, get_peft_config

from faithcb import FaithConfig, FaithfulnessCallback
from faithcb.recipes import (
    DataArguments,
    RolloutArguments,
    correctness_reward,
    grpo_dataset,
    load_examples,
    load_model_and_tokenizer,
)

PARSER_TYPES = (DataArguments, GRPOConfig, ModelConfig, FaithConfig, RolloutArguments)


def main(data_args, training_args, model_args, faith_args, rollout_args=None):
    rollout_args = rollout_args or RolloutArguments()
    model, tokenizer = load_model_and_tokenizer(model_args)
    train, heldout = load_examples(data_args, seed=training_args.seed)
    reward_funcs = [correctness_reward]
    coupling = rollout_args.reward()
    if coupling is not None:
        reward_funcs.append(coupling)
        training_args.reward_weights = [1.0, rollout_args.faith_rollout_weight]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=grpo_dataset(train, tokenizer, faith_args.prompt_style()),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    # The callback binds the coupling reward to the policy, in the probes' layout and wording.
    callback = FaithfulnessCallback(trainer, faith_args.faith_problems or heldout, faith_args)
    trainer.add_callback(callback)
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main(*TrlParser(PARSER_TYPES).parse_args_and_config())
