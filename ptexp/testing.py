"""Small real models for tests and benchmarks: a randomly initialised BERT built from a config,
with the embedded MiniLM tokenizer, saved like a hub checkpoint so ``from_pretrained`` loads it."""

from __future__ import annotations

from pathlib import Path


def build_tiny_bert(folder: Path, max_position_embeddings: int = 96, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with random weights (seeded) written to ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ptexp.embedded import resolve_model_path
    from ptexp.schema import EMBEDDED_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
