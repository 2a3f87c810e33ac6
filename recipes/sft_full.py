"""python recipes/sft_full.py --config recipes/configs/sft_full.yaml

Full-parameter supervised fine-tuning, with FaithfulnessCallback probing the live model.

Defaults (the YAML): the embedded SmolLM2-135M-Instruct on the built-in arithmetic word problems,
on CPU. Override any field on the command line, e.g.

    # GSM8K (the bundled 500 problems of its train split); the first 64 are held out for the probes
    python recipes/sft_full.py --config recipes/configs/sft_full.yaml --dataset gsm8k \
        --max_length 512 --faith_max_chain_tokens 256
    # a hub model and dataset on a GPU
    python recipes/sft_full.py --config recipes/configs/sft_full.yaml --model_name_or_path HuggingFaceTB/SmolLM2-360M-Instruct \
        --dataset openai/gsm8k --dataset_config main --num_train_examples 0 --max_steps 500 --bf16 true \
        --gradient_checkpointing true --max_length 512 --faith_max_chain_tokens 256 --report_to wandb

Probe problems: ``--faith_problems gsm8k|aqua|FILE|synthetic:N`` if given, else problems held out of the
training data (``--holdout``). History: ``OUTPUT_DIR/faith_history.jsonl``.
"""

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

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
    )
    callback = FaithfulnessCallback(trainer, faith_args.faith_problems or heldout, faith_args)
    trainer.add_callback(callback)
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    main(*TrlParser(PARSER_TYPES).parse_args_and_config())
