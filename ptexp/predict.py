"""`ptexp-predict RUN_DIR [TEXT ...] [--file F]`: classify texts with a finished run.

Loads the base model named in the run's config and the adapter with
``PeftModel.from_pretrained`` — the same two steps a user of the saved adapter takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ptexp.errors import ConfigError


def load_predictor(run_dir: Path) -> tuple[Any, Any, Any, list[str], Any]:
    """(tokenizer, model, task, label names, run config) of a finished run."""
    from omegaconf import OmegaConf

    from ptexp.outputs import read_json
    from ptexp.run import ADAPTER_DIR, RUN_FILE

    run_dir = Path(run_dir)
    for needed in (RUN_FILE, ADAPTER_DIR, "config.yaml"):
        if not (run_dir / needed).exists():
            raise ConfigError(
                f"{run_dir} is not a finished ptexp run: it has no {needed}. Give a run folder such as "
                "outputs/runs/<date>/<time>_<overrides> (one with metrics.json and adapter/)."
            )
    from peft import PeftModel

    from ptexp.embedded import resolve_model_path
    from ptexp.tasks import get_task

    cfg = OmegaConf.load(run_dir / "config.yaml")
    labels = read_json(run_dir / RUN_FILE)["labels"]
    task = get_task(cfg.dataset.task)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / ADAPTER_DIR)
    base = task.auto_model_class().from_pretrained(
        resolve_model_path(cfg.model.name_or_path), revision=cfg.model.revision, **task.model_kwargs(labels)
    )
    model = PeftModel.from_pretrained(base, run_dir / ADAPTER_DIR)
    model.eval()
    return tokenizer, model, task, labels, cfg


def predict(
    run_dir: Path, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64
) -> list[dict[str, Any]]:
    import torch
    from transformers import DataCollatorWithPadding

    tokenizer, model, task, labels, cfg = load_predictor(run_dir)
    collate = DataCollatorWithPadding(tokenizer)
    out: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        chunk = {"text": texts[start : start + batch_size]}
        if text_pairs is not None:
            chunk["text_pair"] = text_pairs[start : start + batch_size]
        enc = task.encode(tokenizer, chunk, cfg.dataset.max_length)
        batch = collate([{k: enc[k][i] for k in enc} for i in range(len(chunk["text"]))])
        with torch.inference_mode():
            logits = model(**batch).logits
        out.extend(task.decode(logits.float().numpy(), labels))
    return out


def _read_file(path: Path, text_column: str, pair_column: str | None) -> tuple[list[str], list[str] | None, list[dict]]:
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"--file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=suffix == ".jsonl")
    else:
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if text_column not in frame.columns:
        raise ConfigError(
            f"--file {path} has no column '{text_column}' (the run's dataset.text_column); "
            f"its columns are {list(frame.columns)}. Use --text-column to name another."
        )
    pairs = frame[pair_column].astype(str).tolist() if pair_column else None
    return frame[text_column].astype(str).tolist(), pairs, frame.to_dict("records")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ptexp-predict", description="Classify texts with the adapter of a finished ptexp run."
    )
    parser.add_argument("run_dir", type=Path, help="a run folder (holds adapter/, config.yaml, run.json)")
    parser.add_argument("texts", nargs="*", help="texts to classify; none and no --file reads stdin, one per line")
    parser.add_argument("--file", type=Path, help="a .csv/.tsv/.jsonl file of texts")
    parser.add_argument("--text-column", help="column of --file holding the text (default: the run's)")
    parser.add_argument("--output", type=Path, help="predictions file for --file (default: <file>.predictions.jsonl)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        from omegaconf import OmegaConf

        cfg_path = args.run_dir / "config.yaml"
        run_cfg = OmegaConf.load(cfg_path) if cfg_path.is_file() else None
        pairs = None
        records = None
        if args.file:
            if run_cfg is None:
                raise ConfigError(f"{args.run_dir} is not a finished ptexp run: it has no config.yaml.")
            text_column = args.text_column or run_cfg.dataset.text_column
            texts, pairs, records = _read_file(args.file, text_column, run_cfg.dataset.text_pair_column)
        elif args.texts:
            texts = args.texts
        else:
            texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ConfigError("no texts to classify: pass them as arguments, with --file, or on stdin.")
        results = predict(args.run_dir, texts, pairs, args.batch_size)
    except ConfigError as err:
        print(f"ptexp-predict: {err}", file=sys.stderr)
        return 2
    if records is not None:
        from ptexp.outputs import write_atomic

        output = args.output or args.file.with_suffix(".predictions.jsonl")
        lines = [json.dumps({**rec, **res}, ensure_ascii=False, default=str) for rec, res in zip(records, results)]
        write_atomic(output, "\n".join(lines) + "\n")
        print(f"wrote {len(results)} predictions to {output}")
    else:
        for text, res in zip(texts, results):
            probs = " ".join(f"{k}={v:.3f}" for k, v in res["probs"].items())
            print(f"{res['label']}\t{probs}\t{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
