"""The seed recipe: P-tuning as most tutorials write it, as one plain script.

AutoTokenizer + AutoModelForSequenceClassification + PromptEncoderConfig + get_peft_model +
TrainingArguments + Trainer, evaluation every epoch, accuracy from a compute_metrics, and the
test split evaluated at the end. It is the peer ptexp is benchmarked against
(scripts/bench.py), so it gets no handicap beyond what tutorials do: ``--padding max_length``
(the tutorials' default) pads every example to ``--max-length``; ``--padding dynamic`` pads
each batch to its longest example (scripts/dynamic_padding.py), the floor for ptexp's overhead.

Data: the same train/validation/test split ptexp uses (``ptexp.data.load_splits`` on the
composed default dataset config), so both peers see identical examples.

Prints one JSON line: metrics, example counts and wall time.

    python scripts/seed_recipe.py --max-train-samples 480 --epochs 2 --padding max_length
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: they are part of what a user waits for

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=EMBEDDED_MODEL, help="model folder or hub id (default: the embedded MiniLM)")
    p.add_argument(
        "--data-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for ptexp's dataset config (repeatable), e.g. dataset=csv dataset.train_file=x.tsv",
    )
    p.add_argument("--max-train-samples", type=int, default=3000)
    p.add_argument("--max-eval-samples", type=int, default=1000)
    p.add_argument("--max-test-samples", type=int, default=2000)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--padding", choices=("max_length", "dynamic"), default="max_length")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.06, help="warm-up steps; below 1 a ratio (transformers 5)")
    p.add_argument("--num-virtual-tokens", type=int, default=10)
    p.add_argument("--encoder-hidden-size", type=int, default=128)
    p.add_argument(
        "--train-pooler",
        action="store_true",
        help="also train BERT's pooler (modules_to_save), as ptexp's minilm config does",
    )
    p.add_argument("--save-strategy", choices=("epoch", "no"), default="epoch")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", default="seed_recipe_out")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> Any:
    """ptexp's own split of its default dataset (or of the overridden one)."""
    from hydra import compose, initialize_config_module

    import ptexp.train  # noqa: F401  (registers ptexp's config schemas and resolvers)
    from ptexp.data import load_splits

    overrides = [
        *args.data_override,
        f"dataset.max_train_samples={args.max_train_samples}",
        f"dataset.max_eval_samples={args.max_eval_samples}",
        f"dataset.max_test_samples={args.max_test_samples}",
    ]
    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return load_splits(cfg.dataset)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)

    import numpy as np
    from peft import PromptEncoderConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from ptexp.embedded import resolve_model_path

    # Seeded before the head and the prompt encoder are initialised, as ptexp does, so both
    # peers start from the same weights.
    set_seed(args.seed)
    data = load_data(args)
    labels = data.label_names
    model_path = resolve_model_path(args.model)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    peft_config = PromptEncoderConfig(
        task_type="SEQ_CLS",
        num_virtual_tokens=args.num_virtual_tokens,
        encoder_hidden_size=args.encoder_hidden_size,
        modules_to_save=["pooler"] if args.train_pooler else None,
    )
    model = get_peft_model(model, peft_config)

    padding = "max_length" if args.padding == "max_length" else False
    max_length = args.max_length

    # Closes over constants only (not `args`, which holds the output folder), so datasets can
    # cache the tokenised splits across runs by fingerprint, as it does for ptexp.
    def tokenize(batch: dict[str, list]) -> Any:
        return tokenizer(batch["text"], truncation=True, padding=padding, max_length=max_length)

    tokenized = data.splits.map(tokenize, batched=True, remove_columns=["text"])

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, gold = eval_pred
        return {"accuracy": float((np.argmax(logits, axis=-1) == gold).mean())}

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy=args.save_strategy,
        save_total_limit=1,
        logging_steps=25,
        report_to="none",
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer) if args.padding == "dynamic" else default_data_collator,
        compute_metrics=compute_metrics,
    )
    train_out = trainer.train()
    test = trainer.evaluate(tokenized["test"], metric_key_prefix="test")
    model.save_pretrained(Path(args.output_dir) / "adapter")

    evals = [
        {"epoch": h.get("epoch"), "accuracy": h["eval_accuracy"], "loss": h["eval_loss"]}
        for h in trainer.state.log_history
        if "eval_accuracy" in h
    ]
    result = {
        "script": "seed_recipe",
        "padding": args.padding,
        "max_length": args.max_length,
        "validation": evals[-1] if evals else {},
        "validation_per_epoch": evals,
        "test": {"accuracy": test["test_accuracy"], "loss": test["test_loss"]},
        "train_runtime": train_out.metrics.get("train_runtime"),
        "train_samples_per_second": train_out.metrics.get("train_samples_per_second"),
        "train_loss": train_out.metrics.get("train_loss"),
        "global_step": trainer.state.global_step,
        "num_examples": {s: len(d) for s, d in data.splits.items()},
        "wall_s": time.perf_counter() - T0,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
