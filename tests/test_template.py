"""Template P-tuning (method=p_tuning_template): templates parse or fail naming the key, the
encoder places prompts and anchor words where the template says, a prepend-only template
reproduces method=p_tuning number for number, and template runs train on single texts and
pairs, predict back what they predicted, and resume to the same figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptexp.errors import ConfigError
from ptexp.methods import get_method
from ptexp.methods.p_tuning_template import PLACEHOLDER, TemplateEncoder, parse_template
from tests.conftest import assert_resume_matches, compose_cfg, set_key, tiny_overrides

METHOD = get_method("p_tuning_template")
D, LABELS, HIDDEN = 32, 3, 16  # the tiny BERT's width; tweet labels; tiny_overrides' encoder width


def encoder_params(prompts: int) -> int:
    """peft's MLP prompt encoder: an embedding per prompt, then Linear-ReLU-Linear-ReLU-Linear."""
    return prompts * D + (D * HIDDEN + HIDDEN) + (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * D + D)


def template_overrides(tiny_bert: Path, files: dict[str, Path], root: Path, template: str) -> list[str]:
    return [
        *tiny_overrides(tiny_bert, files, root),
        "method=p_tuning_template",
        f'method.template="{template}"',
        "logger=none",
        "dataset.max_train_samples=64",
        "dataset.max_eval_samples=48",
        "dataset.max_test_samples=48",
    ]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def pair_overrides(tiny_bert: Path, pair_files: dict[str, Path], root: Path, template: str) -> list[str]:
    columns = ("dataset.text_", "dataset.label_column")
    kept = [o for o in template_overrides(tiny_bert, pair_files, root, template) if not o.startswith(columns)]
    return [*kept, "dataset.text_column=first", "dataset.text_pair_column=second", "dataset.label_column=same_mood"]


# -- the template ----------------------------------------------------------------------------


def test_a_quoted_template_override_composes() -> None:
    cfg = compose_cfg(["method=p_tuning_template", 'method.template="[P:3] {text} [P:3] {text_pair} [P:3]"'])
    assert cfg.method.template == "[P:3] {text} [P:3] {text_pair} [P:3]"
    assert compose_cfg(["method=p_tuning_template"]).method.template == "[P:3] {text} [P:3]"


def test_templates_parse_to_slots_gaps_and_a_canonical_form() -> None:
    triple = parse_template("[P:3] {text} [P:3] {text_pair} [P:3]")
    assert triple.slots == ("text", "text_pair") and triple.num_prompts == 9
    anchored = parse_template("  [P:2]{text}[P:2]  It   was [P:1] ")
    assert anchored.gaps == ((2,), (2, "It was", 1)) and anchored.words == ["It was"]
    assert str(anchored) == "[P:2] {text} [P:2] It was [P:1]"
    # Adjacent blocks are one block: the k-th placeholder is the k-th prompt either way.
    assert str(parse_template("[P:3][P:2] {text}")) == "[P:5] {text}"


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("[P:3] {txt}", "unknown slot"),
        ("[P:3] [MASK] {text}", "unknown placeholder"),
        ("[P:x] {text}", "unknown placeholder"),
        ("[P:0] {text}", "at least one prompt"),
        ("[P:3] {text_pair} {text}", "before {text}"),
        ("[P:3] {text_pair}", "no {text} slot"),
        ("{text} It was", "no [P:n] block"),
        ("[P:2] {text} {text}", "twice"),
        ("[P:2] {text} ]", "unmatched"),
    ],
)
def test_bad_templates_are_config_errors_naming_the_key(template: str, why: str) -> None:
    with pytest.raises(ConfigError, match="method.template") as err:
        parse_template(template)
    assert why in str(err.value)


def test_check_matches_the_template_slots_to_the_dataset_and_warns_on_num_virtual_tokens() -> None:
    cfg = compose_cfg(["method=p_tuning_template", 'method.template="[P:3] {text} [P:3] {text_pair} [P:3]"'])
    with pytest.raises(ConfigError, match="no dataset.text_pair_column"):
        METHOD.check(cfg)
    set_key(cfg, "dataset.text_pair_column", "second")
    assert METHOD.check(cfg) == []  # the group's default, there on every run: no noise
    assert METHOD.check(set_key(cfg, "prompt_encoder.num_virtual_tokens", 9)) == []
    warnings = METHOD.check(set_key(cfg, "prompt_encoder.num_virtual_tokens", 12))
    assert len(warnings) == 1 and "num_virtual_tokens=12 has no effect" in warnings[0] and "places 9" in warnings[0]
    with pytest.raises(ConfigError, match="has no {text_pair} slot"):
        METHOD.check(set_key(cfg, "method.template", "[P:3] {text}"))
    with pytest.raises(ConfigError, match="not a key of method=p_tuning_template"):
        METHOD.check(set_key(cfg, "method.num_virtual_tokens", 3))


def test_effective_config_ignores_num_virtual_tokens_and_template_spacing() -> None:
    def effective(template: str, tokens: int) -> dict:
        return METHOD.effective(
            {
                "method": {"name": "p_tuning_template", "template": template},
                "prompt_encoder": {
                    "encoder_reparameterization_type": "MLP",
                    "num_virtual_tokens": tokens,
                    "encoder_num_layers": 5,
                    "encoder_dropout": 0.1,
                },
            }
        )

    assert effective("[P:3]{text}  [P:3]", 10) == effective("[P:3] {text} [P:3]", 4)
    assert effective("[P:3] {text}", 10) != effective("[P:4] {text}", 10)


# -- the encoder -----------------------------------------------------------------------------


def _encode(tokenizer, template: str, batch: dict[str, list[str]], max_length: int = 32) -> dict[str, list]:
    from ptexp.tasks import get_task

    return TemplateEncoder(parse_template(template), get_task("SEQ_CLS").encode)(tokenizer, batch, max_length)


def test_a_leading_block_goes_before_cls_as_peft_prepends(tokenizer) -> None:
    texts = ["great flight", "lost my bag again and again"]
    plain = tokenizer(texts, truncation=True, max_length=32)
    enc = _encode(tokenizer, "[P:4] {text}", {"text": texts})
    for row in range(2):
        assert enc["input_ids"][row] == [PLACEHOLDER] * 4 + plain["input_ids"][row]
        assert enc["attention_mask"][row] == [1] * (4 + len(plain["input_ids"][row]))
        assert enc["token_type_ids"][row] == [0] * (4 + len(plain["input_ids"][row]))


def test_pair_gaps_go_before_cls_after_the_separator_and_at_the_end(tokenizer) -> None:
    batch = {"text": ["great flight"], "text_pair": ["lost my bag"]}
    enc = _encode(tokenizer, "[P:3] {text} [P:2] {text_pair} [P:1]", batch)
    a = tokenizer("great flight", add_special_tokens=False)["input_ids"]
    b = tokenizer("lost my bag", add_special_tokens=False)["input_ids"]
    cls, sep, p = tokenizer.cls_token_id, tokenizer.sep_token_id, PLACEHOLDER
    assert enc["input_ids"][0] == [p] * 3 + [cls, *a, sep] + [p] * 2 + [*b, sep] + [p]
    assert enc["token_type_ids"][0] == [0] * (3 + len(a) + 2) + [1] * (2 + len(b) + 1 + 1)
    assert enc["attention_mask"][0] == [1] * len(enc["input_ids"][0])


def test_anchor_words_are_real_tokens_and_truncation_cuts_only_the_text(tokenizer) -> None:
    long_text = " ".join(["word"] * 100)
    enc = _encode(tokenizer, "[P:2] {text} [P:2] It was [P:1]", {"text": ["fine", long_text]}, max_length=16)
    anchor = tokenizer("It was", add_special_tokens=False)["input_ids"]
    assert anchor and PLACEHOLDER not in anchor
    fine = tokenizer("fine")["input_ids"]
    assert enc["input_ids"][0] == [PLACEHOLDER] * 2 + fine + [PLACEHOLDER] * 2 + anchor + [PLACEHOLDER]
    assert len(enc["input_ids"][1]) == 16 + 5 + len(anchor)  # the text's own truncation, then the template


def test_an_emptied_second_text_still_gets_its_gap_after_the_separator(tokenizer) -> None:
    from types import SimpleNamespace

    # [CLS] a [SEP] [SEP]: the second text truncated away; its gap goes where it would start.
    ids = [tokenizer.cls_token_id, 2000, tokenizer.sep_token_id, tokenizer.sep_token_id]
    encoding = SimpleNamespace(sequence_ids=lambda row: [None, 0, None, None])
    assert TemplateEncoder._second_text_start(encoding, 0, tokenizer) == 3 == len(ids) - 1


def test_placeholders_survive_the_collators_padding(tokenizer) -> None:
    from ptexp.tasks import get_task

    enc = _encode(tokenizer, "[P:2] {text} [P:1]", {"text": ["ok", "a much longer text than that"]})
    batch = get_task("SEQ_CLS").collator(tokenizer)([{k: enc[k][i] for k in enc} for i in range(2)])
    assert (batch["input_ids"] == PLACEHOLDER).sum(dim=1).tolist() == [3, 3]
    assert batch["input_ids"][0, -1] == tokenizer.pad_token_id and batch["attention_mask"][0, -1] == 0


def test_anchor_words_count_as_virtual_tokens(tiny_bert, tokenizer) -> None:
    cfg = compose_cfg([f"model.name_or_path={tiny_bert}", "method=p_tuning_template"])
    assert METHOD.virtual_tokens(cfg) == 6
    set_key(cfg, "method.template", "[P:2] {text} [P:2] It was [P:1]")
    assert METHOD.virtual_tokens(cfg) == 5 + len(tokenizer("It was", add_special_tokens=False)["input_ids"])


# -- training --------------------------------------------------------------------------------


def _saved_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]


def _predicts_what_it_saved(run_dir: Path, pairs: bool = False) -> None:
    from ptexp.predict import predict

    saved = _saved_predictions(run_dir)
    again = predict(run_dir, [r["text"] for r in saved], [r["text_pair"] for r in saved] if pairs else None)
    assert [r["label"] for r in again] == [r["label"] for r in saved]
    for mine, theirs in zip(again, saved):
        for label, p in theirs["probs"].items():
            assert mine["probs"][label] == pytest.approx(p, abs=1e-5)


def _peft_name(name: str) -> str:
    """A method=p_tuning trainable tensor's name in this method's model (peft trains copies of
    the head and extra modules, its modules_to_save, and keeps one prompt encoder per adapter)."""
    name = name.replace(".modules_to_save.default.", ".").replace("prompt_encoder.default.", "prompt_encoder.")
    return "base." + name.removeprefix("base_model.") if name.startswith("base_model.") else name


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [[], ["prompt_encoder=lstm", "model.extra_trainable_modules=[pooler]"]], ids=["mlp", "lstm+pooler"]
)
def test_a_prepend_only_template_reproduces_p_tuning(extra: list[str], tiny_bert, tweet_files, tmp_path) -> None:
    """THE correctness test: '[P:4] {text}' is method=p_tuning with 4 virtual tokens, number
    for number (same seed: same initial prompts, encoder and head, same placement, same
    training). On CPU the two are bitwise equal; the tolerance leaves room for GPU kernels."""
    from safetensors.torch import load_file

    from ptexp.run import run

    template = [*template_overrides(tiny_bert, tweet_files, tmp_path, "[P:4] {text}"), *extra]
    mine = run(compose_cfg(template), tmp_path / "template")
    peft = run(compose_cfg([o for o in template if not o.startswith("method")]), tmp_path / "p_tuning")
    assert mine["trainable_params"] == peft["trainable_params"]
    if not extra:
        assert mine["trainable_params"] == encoder_params(4) + D * LABELS + LABELS
    assert mine["train_loss"] == pytest.approx(peft["train_loss"], abs=1e-5)
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1", "loss"):
            assert mine[split][key] == pytest.approx(peft[split][key], abs=1e-5), (split, key)
    for a, b in zip(_saved_predictions(tmp_path / "template"), _saved_predictions(tmp_path / "p_tuning"), strict=True):
        assert a["label"] == b["label"] and a["probs"] == pytest.approx(b["probs"], abs=1e-5)
    trained = load_file(tmp_path / "template" / "trainable_state.safetensors")
    theirs = {_peft_name(k): v for k, v in load_file(tmp_path / "p_tuning" / "trainable_state.safetensors").items()}
    assert set(trained) == set(theirs)
    for name, tensor in trained.items():
        assert (tensor - theirs[name]).abs().max() < 1e-5, name


@pytest.mark.slow
def test_a_333_template_trains_on_pairs_and_predicts_back(tiny_bert, pair_files, tmp_path) -> None:
    from ptexp.run import run

    template = "[P:3] {text} [P:3] {text_pair} [P:3]"
    metrics = run(compose_cfg(pair_overrides(tiny_bert, pair_files, tmp_path, template)), tmp_path / "run")
    assert metrics["trainable_params"] == encoder_params(9) + D * 2 + 2  # labels: same, different
    assert 0 <= metrics["test"]["accuracy"] <= 1 and metrics["saved_bytes"] > 0
    saved = json.loads((tmp_path / "run" / "adapter" / "p_tuning_template.json").read_text())
    assert saved["template"] == template and saved["num_virtual_tokens"] == 9
    _predicts_what_it_saved(tmp_path / "run", pairs=True)


@pytest.mark.slow
def test_an_anchored_template_trains_and_predicts_back(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.run import run

    metrics = run(
        compose_cfg(template_overrides(tiny_bert, tweet_files, tmp_path, "[P:2] {text} [P:2] It was [P:1]")),
        tmp_path / "run",
    )
    assert metrics["trainable_params"] == encoder_params(5) + D * LABELS + LABELS
    _predicts_what_it_saved(tmp_path / "run")


@pytest.mark.slow
def test_a_template_run_resumes_to_the_same_figures(tiny_bert, tweet_files, tmp_path) -> None:
    """A run restarted from its epoch-1 checkpoint (what a kill after that save leaves) ends
    with the uninterrupted run's figures; the finished run predicts back what it saved."""

    assert_resume_matches(template_overrides(tiny_bert, tweet_files, tmp_path, "[P:3] {text} [P:3]"), tmp_path)
    _predicts_what_it_saved(tmp_path / "whole")


def test_prompts_and_anchors_count_against_the_models_positions(tiny_bert, tweet_files, tmp_path) -> None:
    from ptexp.run import prepare

    # The tiny BERT has 96 positions: 32 of text and 70 prompts do not fit.
    cfg = compose_cfg(template_overrides(tiny_bert, tweet_files, tmp_path, "[P:35] {text} [P:35]"))
    with pytest.raises(ConfigError, match=r"the 70 prompt and anchor tokens of method.template=.\[P:35\]"):
        prepare(cfg, tmp_path / "run")
