"""python recipes/sft_lora.py --config recipes/configs/sft_lora.yaml

Supervised fine-tuning with LoRA, with FaithfulnessCallback probing the live model during training.

Defaults (the YAML): the embedded SmolLM2-135M-Instruct on the built-in arithmetic word problems,
on CPU, a few minutes. Every field of the YAML can be overridden on the command line, e.g.

    # a shortcut-prone variant of the synthetic task (the answer is in the question)
    python recipes/sft_lora.py --config recipes/configs/sft_lora.yaml --synthetic_key true --synthetic_corrupt_fraction 0.5
    # GSM8K (the bundled 500 problems of its train split); the first 64 are held out for the probes
    python recipes/sft_lora.py --config recipes/configs/sft_lora.yaml --dataset gsm8k \
        --max_length 512 --faith_max_chain_tokens 256
    # a hub model and dataset on a GPU, logging to W&B
    python recipes/sft_lora.py --config recipes/configs/sft_lora.yaml --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
        --dataset openai/gsm8k --dataset_config main --num_train_examples 0 --max_steps 500 --learning_rate 2e-4 \
        --bf16 true --max_length 512 --faith_max_chain_tokens 256 --faith_num_problems 64 --report_to wandb

Probe problems: ``--faith_problems gsm8k|aqua|FILE|synthetic:N`` if given, else problems held out of the
training data (``--holdout``). History: ``OUTPUT_DIR/faith_history.jsonl``; report with
``faithcb report OUTPUT_DIR``.
"""

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from faithcb import FaithConfig, FaithfulnessCallback
from faithcb.recipes import DataArguments, load_examples, load_model_and_tokenizer, sft_dataset

PARSER_TYPES = (DataArguments, SFTConfig, ModelConfig, FaithConfig)


def main(data_args, training_args, model_args, faith_args):
    model, tokenizer = load_model_and_tokenizer(model_args)
    train, heldout = load_examples(data_args, seed=training_args.seed)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=sft_dataset(train, tokenizer, faith_args.prompt_style()),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    callback = FaithfulnessCallback(trainer, faith_args.faith_problems or heldout, faith_args)
    trainer.add_callback(callback)
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    main(*TrlParser(PARSER_TYPES).parse_args_and_config())
