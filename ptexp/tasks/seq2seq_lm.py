"""Text-to-text on encoder-decoder models (T5, BART, ...): a source text (and optionally a
second text) in, a target text out, as T5 casts every task.

- Data: ``dataset.text_column`` (and ``text_pair_column``) is the source, ``dataset.label_column``
  the target text; a row without a target is dropped and counted. Targets are checked against
  the model's tokenizer before any weights load: one longer than
  ``dataset.task_options.max_target_length`` tokens stops the run, naming the split, the
  length and the text, instead of training on a cut target; that option (and
  ``max_new_tokens``) must fit what the model's decoder allows.
- Training: the encoder reads the source (prompt methods put their prompts on the encoder
  input), the labels are the target's token ids, padding -100; the model shifts them into the
  decoder input itself.
- Evaluation by generation (``Seq2SeqTrainer`` with ``predict_with_generate``, greedy or beam
  search, ``max_new_tokens``): exact match, ROUGE and sacreBLEU from
  :mod:`ptexp.tasks.generation`, as ``task_options.metrics`` lists them; the best epoch is chosen
  by ``rougeL`` unless ``trainer.metric_for_best_model`` says otherwise.
- Baseline: the stronger (by validation ROUGE-L) of always answering train's most frequent
  target and copying the source.

transformers is imported where it is used, so importing the task stays cheap.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptexp.errors import ConfigError
from ptexp.tasks import register
from ptexp.tasks.base import Task
from ptexp.tasks.generation import GENERATION_METRICS, generation_metrics, most_frequent_target

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger("ptexp.data")

#: Tokenizers that know no length limit report this sentinel (or larger) as model_max_length.
_NO_LIMIT = 10**6


@dataclass
class Seq2SeqOptions:
    metrics: list[str] = field(
        default_factory=lambda: ["rougeL", "exact_match", "bleu"],
        metadata={"help": f"metrics computed on validation and test, from {list(GENERATION_METRICS)}"},
    )
    max_target_length: int = field(
        default=64, metadata={"help": "tokens a target may have (its end token included); a longer target is an error"}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "tokens generated per example; null = max_target_length"}
    )
    num_beams: int = field(default=1, metadata={"help": "beam search width when generating (1 = greedy)"})


#: What Seq2SeqTrainer reads from Seq2SeqTrainingArguments, and this task's values for it.
SEQ2SEQ_ARGUMENTS = {
    "predict_with_generate": True,
    "generation_max_length": None,
    "generation_num_beams": None,
    "generation_config": None,
}


@dataclass(frozen=True)
class Seq2SeqEncoder:
    """``(tokenizer, batch, max_length) -> encoder inputs`` (the source, and the second text when
    there is one; no token_type_ids: T5 and BART take none), carrying the run's generation
    settings to ``ptexp-predict``. A frozen dataclass: datasets fingerprints the map by its pickle."""

    max_new_tokens: int = 64
    num_beams: int = 1

    def __call__(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        return tokenizer(
            batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length, return_token_type_ids=False
        )

    @property
    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}

    @staticmethod
    def of(encode: Any) -> Seq2SeqEncoder:
        """The task's encoder inside ``encode`` (a method may wrap it: template P-tuning); the
        defaults when the method encodes with the bare :meth:`Seq2SeqLM.encode`."""
        while encode is not None and not isinstance(encode, Seq2SeqEncoder):
            encode = getattr(encode, "encode", None)
        return encode if encode is not None else Seq2SeqEncoder()


def target_limit(cfg: Any, backbone_config: Any) -> tuple[int | None, str]:
    """(tokens a target may have in this model, what limits it): the decoder's positions
    (BART), else what the tokenizer allows (T5's positions are relative), else no limit."""
    limit = getattr(backbone_config, "max_position_embeddings", None)
    if limit is not None:
        return int(limit), "decoder positions"
    from transformers import AutoTokenizer

    from ptexp.embedded import resolve_model_path

    path = str(Path(resolve_model_path(cfg.model.name_or_path)).expanduser())
    length = AutoTokenizer.from_pretrained(path, revision=cfg.model.revision).model_max_length
    if length and length < _NO_LIMIT:
        return int(length), "tokens its tokenizer allows (model_max_length)"
    return None, ""


@functools.cache
def _generation_trainer() -> type:
    from transformers import Seq2SeqTrainer

    from ptexp.trainer import ResumableTrainerMixin

    class GenerationTrainer(ResumableTrainerMixin, Seq2SeqTrainer):
        """``Seq2SeqTrainer`` (evaluates by generating) with ptexp's resumable checkpoints; every
        evaluation and prediction generates with the task's settings (max_new_tokens, num_beams)."""

        def __init__(
            self,
            *args_: Any,
            generation_kwargs: dict[str, Any] | None = None,
            metric_names: tuple[str, ...] | None = None,
            **kwargs: Any,
        ) -> None:
            args = kwargs.get("args")
            # The run's TrainingArguments (built once, by ptexp.validate) with the four fields
            # Seq2SeqTrainingArguments adds: generate when evaluating; the task's own settings
            # (max_new_tokens, num_beams) come as generate() arguments below.
            for key, value in SEQ2SEQ_ARGUMENTS.items():
                if args is not None and not hasattr(args, key):
                    setattr(args, key, value)
            super().__init__(*args_, **kwargs)
            self.generation_kwargs = dict(generation_kwargs or {})
            if metric_names and self.compute_metrics is not None:
                self.compute_metrics = functools.partial(self.compute_metrics, metrics=tuple(metric_names))

        def prediction_step(self, model: Any, inputs: Any, prediction_loss_only: bool, ignore_keys: Any = None, **gen):
            # Seq2SeqTrainer writes generate's defaults (max_length=20, ...) into the model's
            # generation config after each generate: every later generate with max_new_tokens
            # would then warn that both are set, and a saved model would keep them. Undone.
            config = self.model.generation_config
            before = dict(vars(config))
            try:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen)
            finally:
                vars(config).clear()
                vars(config).update(before)

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval", **gen):
            gen = {**self.generation_kwargs, **gen}
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen)

        def predict(self, test_dataset: Any, ignore_keys: Any = None, metric_key_prefix: str = "test", **gen):
            gen = {**self.generation_kwargs, **gen}
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen)

    return GenerationTrainer


def decode(tokenizer: Any, token_ids: Any) -> list[str]:
    """Texts of generated (or label) token ids; -100 (the Trainer's padding) read as padding."""
    ids = np.asarray(token_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    ids = np.where(ids < 0, tokenizer.pad_token_id or 0, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]


@register
class Seq2SeqLM(Task):
    name = "SEQ_2_SEQ_LM"
    # ROUGE-L: partial credit (the longest common word sequence), so it separates epochs that
    # exact match scores alike, and it means the same for one-word answers and for long texts;
    # sacreBLEU is 0 for any one- to three-word target (it needs 4-grams), exact match is coarse.
    default_metric = "rougeL"
    #: The default task_options.metrics, the selection metric first: what reports tabulate.
    metrics = ("rougeL", "exact_match", "bleu")
    schema = Seq2SeqOptions
    stratify_column = None  # free text: carved splits are random

    # -- before anything loads ---------------------------------------------------------------
    def selectable_metrics(self) -> tuple[str, ...]:
        return (*GENERATION_METRICS, "loss")  # rouge1 and rouge2 too, when task_options.metrics has them

    def check(self, cfg: Any) -> list[str]:
        warnings = super().check(cfg)
        options = self.options(cfg.dataset)
        unknown = [m for m in options.metrics if m not in GENERATION_METRICS]
        if unknown or not options.metrics:
            raise ConfigError(
                f"dataset.task_options.metrics={list(options.metrics)}: choose one or more of "
                f"{list(GENERATION_METRICS)} (dataset.task={self.name})."
            )
        chosen = (cfg.get("trainer") or {}).get("metric_for_best_model")
        selection = str(chosen).removeprefix("eval_") if chosen else self.default_metric
        if selection != "loss" and selection not in options.metrics:
            raise ConfigError(
                f"The best epoch is chosen by '{selection}'"
                f"{' (the default of dataset.task=' + self.name + ')' if not chosen else ''}, but "
                f"dataset.task_options.metrics={list(options.metrics)} does not compute it: add it to the metrics "
                "or set trainer.metric_for_best_model to one of them (or loss)."
            )
        for key in ("max_target_length", "num_beams"):
            if getattr(options, key) <= 0:
                raise ConfigError(f"dataset.task_options.{key}={getattr(options, key)} must be a positive integer.")
        if options.max_new_tokens is not None and options.max_new_tokens <= 0:
            raise ConfigError(
                f"dataset.task_options.max_new_tokens={options.max_new_tokens} must be a positive integer "
                "(or null: max_target_length)."
            )
        method = str((cfg.get("method") or {}).get("name", ""))
        if method == "linear_probe":
            raise ConfigError(
                f"method=linear_probe trains only a classification head, and dataset.task={self.name} has none: "
                "an encoder-decoder writes its answer with its language-model head, so the probe would train "
                "nothing. Use p_tuning, p_tuning_template, prompt_tuning, prefix_tuning, lora or full_finetune."
            )
        if (cfg.get("trainer") or {}).get("predict_with_generate") is False:
            raise ConfigError(f"trainer.predict_with_generate=false: dataset.task={self.name} evaluates by generating.")
        return warnings

    def check_backbone(self, model_name: str, backbone_config: Any) -> None:
        if getattr(backbone_config, "is_encoder_decoder", False):
            return
        kind = getattr(backbone_config, "model_type", "?")
        raise ConfigError(
            f"model.name_or_path='{model_name}' is not an encoder-decoder model (model_type '{kind}', "
            f"config.is_encoder_decoder is false), and dataset.task={self.name} generates the target with a "
            "decoder that reads an encoded source: give a T5- or BART-style model (e.g. model=t5-small). An "
            "encoder-only model (BERT, MiniLM) suits dataset.task=SEQ_CLS; a decoder-only one (GPT-2, Llama) "
            "dataset.task=CAUSAL_LM."
        )

    def check_lengths(self, cfg: Any, backbone_config: Any, virtual_tokens: int) -> None:
        """max_target_length and max_new_tokens fit the decoder (its positions, or for T5, whose
        positions are relative, what its tokenizer allows)."""
        options = self.options(cfg.dataset)
        limit, where = target_limit(cfg, backbone_config)
        for key in ("max_target_length", "max_new_tokens"):
            value = getattr(options, key)
            if limit is not None and value is not None and value > limit:
                raise ConfigError(
                    f"dataset.task_options.{key}={value} exceeds the {limit} {where} of {cfg.model.name_or_path}: "
                    f"lower it to at most {limit}."
                )

    def check_data(self, splits: DatasetDict, cfg: Any) -> None:
        """Every target fits ``max_target_length`` tokens of the model's tokenizer (before any
        weights load): a cut target would be trained on and scored wrongly."""
        from transformers import AutoTokenizer

        from ptexp.embedded import resolve_model_path

        cap = self.options(cfg.dataset).max_target_length
        path = str(Path(resolve_model_path(cfg.model.name_or_path)).expanduser())
        tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.model.revision)
        for split, d in splits.items():
            targets = list(d["label"])
            lengths = [len(ids) for ids in tokenizer(text_target=targets)["input_ids"]]
            long = [i for i, n in enumerate(lengths) if n > cap]
            if long:
                worst = max(long, key=lambda i: lengths[i])
                text = targets[worst] if len(targets[worst]) <= 60 else targets[worst][:57] + "..."
                raise ConfigError(
                    f"{len(long)} target(s) of the {split} split (column dataset.label_column="
                    f"'{cfg.dataset.label_column}') are longer than dataset.task_options.max_target_length={cap} "
                    f"tokens of {cfg.model.name_or_path}'s tokenizer; the longest has {lengths[worst]} tokens "
                    f"({text!r}). A cut target would be trained on and scored wrongly: raise "
                    f"dataset.task_options.max_target_length to at least {lengths[worst]} (as far as the model "
                    "allows), or shorten those targets."
                )

    # -- data --------------------------------------------------------------------------------
    def is_complete(self, example: dict[str, Any]) -> bool:
        target = example.get("label")
        return (
            target is not None
            and str(target).strip() != ""
            and all(isinstance(example[c], str) and example[c].strip() for c in self.input_roles if c in example)
        )

    def encode_labels(self, splits: DatasetDict, dataset_cfg: Any, names: dict[str, str]) -> tuple[DatasetDict, list]:
        """Targets as text (a ClassLabel's names, numbers as written); no label vocabulary."""
        from datasets import ClassLabel, DatasetDict, Value

        out = DatasetDict()
        for split, d in splits.items():
            feature = d.features["label"]
            if isinstance(feature, ClassLabel):
                # -1 is a ClassLabel's "no label" (e.g. GLUE's test splits): no target, dropped.
                before = len(d)
                d = d.filter(lambda ex: ex["label"] >= 0, desc="labelled rows")
                if len(d) < before:
                    log.warning(
                        "dropped %d rows of %s labelled -1 (no target)", before - len(d), names.get(split, split)
                    )
                d = d.map(lambda ex, f=feature: {"target": f.int2str(ex["label"])}).remove_columns("label")
                d = d.rename_column("target", "label")
            elif feature != Value("string"):
                d = d.cast_column("label", Value("string"))
            out[split] = d
        return out, []

    def baseline(self, splits: DatasetDict, label_names: list[str]) -> dict[str, Any]:
        """The stronger, by validation ROUGE-L, of answering train's most frequent target and of
        copying the source; scored with every generation metric."""
        metrics = GENERATION_METRICS
        gold = {s: list(splits[s]["label"]) for s in ("validation", "test")}
        frequent = most_frequent_target(list(splits["train"]["label"]), gold, metrics)
        copy: dict[str, Any] = {"name": "copy the source"}
        for split, references in gold.items():
            copy[split] = generation_metrics(list(splits[split]["text"]), references, metrics)
        return max((frequent, copy), key=lambda b: b["validation"][self.default_metric])

    # -- model -------------------------------------------------------------------------------
    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def trainer_class(self) -> type:
        return _generation_trainer()

    def trainer_kwargs(self, tokenizer: Any, label_names: list[str], cfg: Any) -> dict[str, Any]:
        return {
            "generation_kwargs": self.encoder(cfg).generation_kwargs,
            "metric_names": tuple(self.options(cfg.dataset).metrics),
        }

    # -- inputs ------------------------------------------------------------------------------
    def encode(self, tokenizer: Any, batch: dict[str, list], max_length: int) -> Any:
        return Seq2SeqEncoder()(tokenizer, batch, max_length)

    def encoder(self, cfg: Any) -> Seq2SeqEncoder:
        options = self.options(cfg.dataset)
        return Seq2SeqEncoder(options.max_new_tokens or options.max_target_length, options.num_beams)

    def tokenize(
        self, splits: DatasetDict, tokenizer: Any, max_length: int, encode: Callable[..., Any] | None = None
    ) -> DatasetDict:
        """Encoder inputs by ``encode`` (the method's, e.g. a template, or the task's) and the
        target's token ids as labels (whole: :meth:`check_data` has refused targets that are too long)."""
        encode = encode or self.encode

        def encode_with_targets(batch: dict[str, list]) -> dict[str, list]:
            inputs = dict(encode(tokenizer, batch, max_length))
            return {**inputs, "labels": tokenizer(text_target=batch["label"])["input_ids"]}

        columns = splits["train"].column_names
        # datasets caches this map by fingerprint: a sweep tokenises each split once.
        return splits.map(encode_with_targets, batched=True, remove_columns=columns, desc="tokenize")

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)

    # -- outputs -----------------------------------------------------------------------------
    def metrics_function(self, tokenizer: Any, label_names: list[str]) -> Callable[..., dict[str, float]]:
        """Every generation metric; the run's trainer keeps those ``task_options.metrics`` names
        (it gets them from :meth:`trainer_kwargs`, which sees the config)."""

        def compute(eval_pred: Any, metrics: tuple[str, ...] = GENERATION_METRICS) -> dict[str, float]:
            predictions = eval_pred.predictions
            predictions = predictions[0] if isinstance(predictions, tuple) else predictions
            return generation_metrics(decode(tokenizer, predictions), decode(tokenizer, eval_pred.label_ids), metrics)

        return compute

    def prediction_records(
        self, examples: Dataset, predictions: Any, label_names: list[str], tokenizer: Any
    ) -> list[dict[str, Any]]:
        generated = decode(tokenizer, predictions)
        if len(generated) != len(examples):
            raise ValueError(f"{len(generated)} predictions for {len(examples)} examples: pass the untokenised split")
        columns = [c for c in self.input_roles if c in examples.column_names]
        inputs = [examples[c] for c in columns]
        return [
            {**dict(zip(columns, values)), "gold": gold, "generated": text}
            for *values, gold, text in zip(*inputs, examples["label"], generated)
        ]

    def predict_batch(
        self,
        model: Any,
        tokenizer: Any,
        batch: dict[str, list],
        encode: Callable[..., Any],
        max_length: int,
        label_names: list[str],
    ) -> list[dict[str, Any]]:
        import torch

        # Sources only: the training collator would also pad (absent) labels.
        pad = functools.partial(tokenizer.pad, return_tensors="pt")
        inputs = self.collated(tokenizer, encode(tokenizer, batch, max_length), pad)
        settings = Seq2SeqEncoder.of(encode).generation_kwargs
        with torch.inference_mode():
            out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **settings)
        return [{"generated": text} for text in decode(tokenizer, out.cpu().numpy())]

    def format_prediction(self, result: dict[str, Any]) -> str:
        return result["generated"]
