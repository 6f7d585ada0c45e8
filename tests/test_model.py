"""The peft model ptexp builds: parameter counts match P-tuning's formula (GUIDE §3)."""

from __future__ import annotations

import pytest

from ptexp.methods import get_method
from ptexp.modeling import build_model, count_parameters
from ptexp.tasks import get_task
from tests.conftest import compose_cfg


@pytest.mark.parametrize("n,h", [(4, 16), (10, 128), (1, 8)])
def test_mlp_trainable_parameters_match_formula(tiny_bert, n: int, h: int) -> None:
    cfg = compose_cfg(
        [
            f"model.name_or_path={tiny_bert}",
            "model.extra_trainable_modules=[]",
            f"prompt_encoder.num_virtual_tokens={n}",
            f"prompt_encoder.encoder_hidden_size={h}",
        ]
    )
    labels = ["a", "b", "c"]
    _, model = build_model(cfg, get_task("SEQ_CLS"), labels)
    d, k = 32, len(labels)
    encoder = n * d + (d * h + h) + (h * h + h) + (h * d + d)
    head = d * k + k
    assert count_parameters(model)[0] == encoder + head
    assert get_method("p_tuning").describe(model)["num_virtual_tokens"] == n


def test_lstm_trainable_parameters_match_formula(tiny_bert) -> None:
    n, h, layers = 5, 16, 2
    cfg = compose_cfg(
        [
            f"model.name_or_path={tiny_bert}",
            "model.extra_trainable_modules=[]",
            "prompt_encoder=lstm",
            f"prompt_encoder.num_virtual_tokens={n}",
            f"prompt_encoder.encoder_hidden_size={h}",
            f"prompt_encoder.encoder_num_layers={layers}",
        ]
    )
    _, model = build_model(cfg, get_task("SEQ_CLS"), ["x", "y"])
    d = 32
    lstm = 0
    for layer in range(layers):
        inp = d if layer == 0 else 2 * h
        lstm += 2 * (4 * h * inp + 4 * h * h + 8 * h)  # two directions, W_ih + W_hh + two biases
    mlp = (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
    assert count_parameters(model)[0] == n * d + lstm + mlp + (d * 2 + 2)


def test_extra_trainable_modules_train_the_pooler(tiny_bert) -> None:
    cfg = compose_cfg([f"model.name_or_path={tiny_bert}", "model.extra_trainable_modules=[pooler]"])
    _, model = build_model(cfg, get_task("SEQ_CLS"), ["x", "y"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("pooler" in n for n in trainable)
    assert not any("encoder.layer" in n for n in trainable)


def test_labels_come_from_the_data(tiny_bert) -> None:
    cfg = compose_cfg([f"model.name_or_path={tiny_bert}"])
    _, model = build_model(cfg, get_task("SEQ_CLS"), ["neg", "pos"])
    config = model.base_model.config
    assert config.num_labels == 2 and config.id2label == {0: "neg", 1: "pos"}
