"""One training step with and without the Trainer, side by side (issue 10, part 1).

    python scripts/bench_step.py                 # CPU: embedded MiniLM, batch 16, 30 steps
    python scripts/bench_step.py --batch 64 --steps 100   # on a GPU node (uses CUDA when present)

The bare step is what a P-tuning step must cost: forward, backward and AdamW over the same
peft model and the same padded batch, no Trainer. The Trainer step is ptexp's PTuningTrainer
training that model on rows of the same length (no evaluation, no saving, logging every 50
steps), timed between consecutive ``on_step_end`` callbacks, so start-up is not counted.
Both use the run's real model (``ptexp.modeling.build_model`` on the composed default config).
Prints the median milliseconds of each and their ratio (target: Trainer ≤ 1.5× bare), and
the peak GPU memory when on a GPU. Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--tokens", type=int, default=38, help="tokens per row besides the virtual tokens")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both (GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("overrides", nargs="*", help="ptexp config overrides (default: the embedded default)")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from hydra import compose, initialize_config_module
    from transformers import TrainerCallback, TrainingArguments

    import ptexp.naming  # noqa: F401  (resolvers)
    import ptexp.schema  # noqa: F401  (structured configs)
    from ptexp.modeling import build_model
    from ptexp.tasks import get_task
    from ptexp.trainer import PTuningTrainer

    with initialize_config_module(config_module="ptexp.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["logger=none", *args.overrides])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = get_task(cfg.dataset.task)
    labels = ["negative", "neutral", "positive"]
    tokenizer, model = build_model(cfg, task, labels)
    model.to(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, tokenizer.vocab_size, (args.batch, args.tokens), generator=g)
    rows = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(args.batch) % 3}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16)

    # bare: what a step must cost
    batch = {k: v.to(device) for k, v in rows.items()}
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    model.train()  # as the Trainer trains: dropout on
    bare = []
    for _ in range(args.steps + 3):
        _sync()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync()
        bare.append(time.perf_counter() - start)
    bare = bare[3:]  # warm-up

    # the Trainer on rows of the same length
    data = Dataset.from_dict(
        {
            k: v.repeat(args.steps + 3, 1).tolist() if v.dim() == 2 else v.repeat(args.steps + 3).tolist()
            for k, v in rows.items()
        }
    )

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_end(self, *a, **k) -> None:  # noqa: ANN002, ANN003
            _sync()
            self.marks.append(time.perf_counter())

    times = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps + 3,
            learning_rate=1e-3,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=50,
            report_to="none",
            bf16=args.bf16,
            dataloader_pin_memory=device == "cuda",
            disable_tqdm=True,
        )
        trainer = PTuningTrainer(
            model=model, args=training, train_dataset=data, data_collator=task.collator(tokenizer), callbacks=[times]
        )
        trainer.train()
    steps = [b - a for a, b in zip(times.marks[3:], times.marks[4:])]
    bare_ms, trainer_ms = 1000 * statistics.median(bare), 1000 * statistics.median(steps)
    shape = f"batch {args.batch} x ({args.tokens} tokens + prompts)"
    print(f"device {device} ({torch.get_num_threads()} threads), {shape}, {len(steps)} timed steps each")
    print(f"bare step    {bare_ms:8.1f} ms (median)")
    print(f"Trainer step {trainer_ms:8.1f} ms (median)")
    print(f"Trainer / bare: {trainer_ms / bare_ms:.2f} (target <= 1.5)")
    if device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
