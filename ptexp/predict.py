"""`ptexp-predict RUN_DIR [EXAMPLE ...] [--file F]`: classify texts or sentence pairs with a finished run.

Loads the base model named in the run's config and hands it to the run's method, which loads
what the run saved the way a user of it would (a peft adapter with ``PeftModel.from_pretrained``,
a fine-tuned model with ``from_pretrained``). The examples are read and checked against the run
(single texts or pairs) before any model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ptexp.errors import ConfigError
from ptexp.experiment import DEFAULT_METHOD
from ptexp.layout import ADAPTER_DIR, CONFIG_FILE, RUN_FILE

log = logging.getLogger(__name__)

PAIR_SEPARATOR = "\t"

EPILOG = """\
examples (one per argument, or one per stdin line when there are no arguments and no --file):
  single-sentence run:  ptexp-predict RUN "great flight" "lost my bag"
  sentence-pair run:    each example is the two texts joined by a tab (or by --sep):
                        ptexp-predict RUN $'A man plays guitar.\\tSomeone makes music.'
                        ptexp-predict RUN --sep ' ||| ' 'A man plays guitar. ||| Someone makes music.'
                        printf 'first\\tsecond\\n' | ptexp-predict RUN
  a file:               ptexp-predict RUN --file test.tsv  (the run's text columns, both for a pair
                        run; --text-column / --text-pair-column name others; the predictions are
                        written with each input row)

A run is a pair run when it was trained with dataset.text_pair_column set (see its config.yaml).
A single text given to a pair run is an error (exit 2), as are --sep and --text-pair-column
given to a single-sentence run. Texts that start with '-' go after '--'.
"""


def read_run(run_dir: Path) -> tuple[Any, list[str]]:
    """(config, label names) of a finished run; a ConfigError when the folder is not one."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    for needed in (RUN_FILE, ADAPTER_DIR, CONFIG_FILE):
        if not (run_dir / needed).exists():
            raise ConfigError(
                f"{run_dir} is not a finished ptexp run: it has no {needed}. Give a run folder such as "
                "outputs/runs/<date>/<time>_<overrides> (one with metrics.json and adapter/)."
            )
    labels = json.loads((run_dir / RUN_FILE).read_text())["labels"]
    return OmegaConf.load(run_dir / CONFIG_FILE), labels


def _method_name(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.select(cfg, "method.name", default=DEFAULT_METHOD))  # runs from before methods


def load_predictor(run_dir: Path) -> tuple[Any, Any, Any, list[str], Any]:
    """(tokenizer, model, task, label names, run config) of a finished run."""
    cfg, labels = read_run(run_dir)
    from transformers import AutoTokenizer

    from ptexp.embedded import resolve_model_path
    from ptexp.methods import get_method
    from ptexp.modeling import quiet_new_head
    from ptexp.tasks import get_task

    run_dir = Path(run_dir)
    task = get_task(cfg.dataset.task)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / ADAPTER_DIR)
    # The head "newly initialized" is restored by the method right after; a report of anything
    # else still shows (and the missing-key check below names what stays random).
    with quiet_new_head():
        base, info = task.auto_model_class().from_pretrained(
            resolve_model_path(cfg.model.name_or_path),
            revision=cfg.model.revision,
            trust_remote_code=cfg.model.get("trust_remote_code", False),
            output_loading_info=True,
            **task.model_kwargs(labels),
        )
        if base.config.pad_token_id is None and tokenizer.pad_token_id is not None:
            base.config.pad_token_id = tokenizer.pad_token_id  # as training did (ptexp.modeling)
        model = get_method(_method_name(cfg)).load(run_dir, cfg, base, tokenizer)
    peft_config = getattr(model, "peft_config", {}).get("default")
    restored = (peft_config.modules_to_save or []) if peft_config is not None else []
    unrestored = [k for k in info["missing_keys"] if not set(k.split(".")) & set(restored)]
    if peft_config is not None and unrestored:
        log.warning("weights neither in %s nor in the adapter (left random): %s", cfg.model.name_or_path, unrestored)
    model.eval()
    return tokenizer, model, task, labels, cfg


def predict(
    run_dir: Path, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64
) -> list[dict[str, Any]]:
    """The run's prediction (label and class probabilities) for each text, or each pair
    (texts[i], text_pairs[i]) of a run trained on sentence pairs."""
    cfg, _ = read_run(run_dir)
    pair_column = cfg.dataset.text_pair_column
    if pair_column and text_pairs is None:
        raise ConfigError(
            f"{run_dir} classifies sentence pairs (dataset.text_pair_column='{pair_column}'): give the "
            "second text of each example too (text_pairs)."
        )
    if not pair_column and text_pairs is not None:
        raise ConfigError(f"{run_dir} classifies single texts (no dataset.text_pair_column): give no text_pairs.")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ConfigError(f"{len(texts)} texts but {len(text_pairs)} second texts: give one pair per example.")
    import torch

    from ptexp.methods import get_method

    tokenizer, model, task, labels, cfg = load_predictor(run_dir)
    encode = get_method(_method_name(cfg)).encoder(cfg, task)
    out: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        chunk = {"text": texts[start : start + batch_size]}
        if text_pairs is not None:
            chunk["text_pair"] = text_pairs[start : start + batch_size]
        with torch.inference_mode():
            out.extend(task.predict_batch(model, tokenizer, chunk, encode, cfg.dataset.max_length, labels))
    return out


def split_pairs(examples: list[tuple[str, str]], sep: str, pair_column: str) -> tuple[list[str], list[str]]:
    """(first texts, second texts) of examples given as ``first<sep>second``; each example comes
    with where it was given ("argument 2", "stdin line 5") for the error message."""
    shown = "TAB" if sep == PAIR_SEPARATOR else repr(sep)
    firsts, seconds = [], []
    for where, example in examples:
        parts = example.split(sep)
        if len(parts) == 1:
            raise ConfigError(
                f"this run classifies sentence pairs (it was trained with dataset.text_pair_column="
                f"'{pair_column}'), but {where} is a single text ({example[:60]!r}). Give each example as "
                f"the two texts joined by {shown}: $'first\\tsecond' in bash, a first<TAB>second line on "
                "stdin, or --sep ' ||| ' with 'first ||| second'; or --file with both columns."
            )
        if len(parts) > 2 or not all(p.strip() for p in parts):
            raise ConfigError(
                f"{where} ({example[:60]!r}) is not two non-empty texts joined by one {shown}: a pair is "
                "exactly two texts. Choose a separator that occurs in neither text with --sep."
            )
        firsts.append(parts[0])
        seconds.append(parts[1])
    return firsts, seconds


def read_examples_file(
    path: Path, text_column: str, pair_column: str | None, hint: str = ""
) -> tuple[list[str], list[str] | None, list[dict[str, Any]]]:
    """(texts, second texts or None, input rows) of a .csv/.tsv/.jsonl file, read with the same
    row checks as training data (so no row is merged or lost)."""
    from ptexp.data import read_table

    if not path.is_file():
        raise ConfigError(f"--file {path} does not exist.")
    table = read_table(path, f"--file {path}")
    wanted = {text_column: "--text-column"} | ({pair_column: "--text-pair-column"} if pair_column else {})
    for column, option in wanted.items():
        if column not in table.columns:
            role = "text" if option == "--text-column" else "second text of each pair"
            raise ConfigError(
                f"--file {path} has no column '{column}' (the {role}{hint}); its columns are "
                f"{table.columns}. Use {option} to name another."
            )
    if not table.rows:
        raise ConfigError(f"--file {path} holds no rows to classify.")
    columns = {}
    for column in wanted:
        values = [row.get(column) for row in table.rows]
        for line, value in zip(table.lines, values):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(
                    f"--file {path}: the row at line {line} has no text in column '{column}' "
                    f"({value!r}). Fill it in or remove the row."
                )
        columns[column] = values
    pairs = columns[pair_column] if pair_column else None
    return columns[text_column], pairs, table.rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptexp-predict",
        description="Classify texts (or sentence pairs) with the adapter of a finished ptexp run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="a run folder (holds adapter/, config.yaml, run.json)")
    parser.add_argument(
        "examples",
        nargs="*",
        metavar="EXAMPLE",
        help="a text to classify, or for a pair run 'first<TAB>second'; none and no --file reads stdin, one per line",
    )
    parser.add_argument("--file", type=Path, help="a .csv/.tsv/.jsonl file of examples")
    parser.add_argument("--text-column", help="column of --file holding the text (default: the run's)")
    parser.add_argument(
        "--text-pair-column", help="column of --file holding the second text of a pair run (default: the run's)"
    )
    parser.add_argument(
        "--sep", help="separator between the two texts of a pair in arguments and stdin lines (default: a tab)"
    )
    parser.add_argument("--output", type=Path, help="predictions file for --file (default: <file>.predictions.jsonl)")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def _inputs(args: argparse.Namespace, run_cfg: Any) -> tuple[list[str], list[str] | None, list[dict] | None]:
    """(texts, second texts, input rows of --file) from the command line, checked against the run."""
    pair_column = run_cfg.dataset.text_pair_column
    if not pair_column and (args.sep is not None or args.text_pair_column):
        option = "--sep" if args.sep is not None else "--text-pair-column"
        raise ConfigError(
            f"{option} is for sentence-pair runs; {args.run_dir} classifies single texts "
            "(it was trained without dataset.text_pair_column)."
        )
    if args.file and args.examples:
        raise ConfigError("give examples as arguments or with --file, not both.")
    if args.sep == "":
        raise ConfigError("--sep '' is empty: give the string that joins the two texts of a pair.")
    if args.file:
        text_column = args.text_column or run_cfg.dataset.text_column
        pair = (args.text_pair_column or pair_column) if pair_column else None
        hint = "" if args.text_column or args.text_pair_column else ", as the run was trained"
        return read_examples_file(args.file, text_column, pair, hint)
    if args.examples:
        examples = [(f"argument {i}", e) for i, e in enumerate(args.examples, 1)]
    else:
        lines = (line.removesuffix("\n").removesuffix("\r") for line in sys.stdin)
        examples = [(f"stdin line {i}", line) for i, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise ConfigError("no texts to classify: pass them as arguments, with --file, or on stdin.")
    if pair_column:
        texts, pairs = split_pairs(examples, args.sep or PAIR_SEPARATOR, pair_column)
        return texts, pairs, None
    return [e for _, e in examples], None, None


def main(argv: list[str] | None = None) -> int:
    # intermixed: options may come between the run folder and the examples (RUN --sep '|' 'a|b').
    args = _parser().parse_intermixed_args(argv)
    try:
        run_cfg, _ = read_run(args.run_dir)
        texts, pairs, records = _inputs(args, run_cfg)
        results = predict(args.run_dir, texts, pairs, args.batch_size)
    except ConfigError as err:
        print(f"ptexp-predict: {err}", file=sys.stderr)
        return 2
    if records is not None:
        from ptexp.outputs import write_atomic

        output = args.output or args.file.with_suffix(".predictions.jsonl")
        # Prefixed: an input column named "label" (the gold answer) must survive next to the prediction.
        lines = [
            json.dumps({**rec, **{f"predicted_{k}": v for k, v in res.items()}}, ensure_ascii=False, default=str)
            for rec, res in zip(records, results)
        ]
        write_atomic(output, "\n".join(lines) + "\n")
        print(f"wrote {len(results)} predictions to {output}")
    else:
        inputs = texts if pairs is None else [f"{t}\t{p}" for t, p in zip(texts, pairs)]
        from ptexp.tasks import get_task

        task = get_task(run_cfg.dataset.task)
        for text, res in zip(inputs, results):
            print(f"{task.format_prediction(res)}\t{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
