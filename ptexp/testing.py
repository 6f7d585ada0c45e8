"""Small real models for tests and benchmarks: a randomly initialised BERT built from a config,
with the embedded MiniLM tokenizer, saved like a hub checkpoint so ``from_pretrained`` loads it."""

from __future__ import annotations

from pathlib import Path


def build_tiny_bert(
    folder: Path, max_position_embeddings: int = 96, seed: int = 0, dropout: float | None = None
) -> Path:
    """A 2-layer, 32-wide BERT with random weights (seeded) written to ``folder``; ``dropout``
    sets every dropout (hidden, attention, classifier head), e.g. 0 for bit-comparable runs."""
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
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = config.classifier_dropout = dropout
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def build_tiny_gpt2(folder: Path, n_positions: int = 128, seed: int = 0, width: int = 32) -> Path:
    """A 2-layer GPT-2 (decoder-only, ``width`` wide) with random weights (seeded), written to
    ``folder`` with the embedded MiniLM tokenizer. The tokenizer's [CLS] serves as BOS and its
    [SEP] as EOS (end of a generated answer), [PAD] pads: the ids the model config names too."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from ptexp.embedded import resolve_model_path
    from ptexp.schema import EMBEDDED_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=width,
        n_layer=2,
        n_head=2,
        n_positions=n_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def build_tiny_t5(folder: Path, seed: int = 0, d_model: int = 32) -> Path:
    """A 2+2-layer, ``d_model``-wide T5 with random weights (seeded) and the MiniLM tokenizer,
    written to ``folder``: padding and the decoder's start are [PAD] (as T5's are its pad),
    the end of a target is [SEP] (the MiniLM tokenizer ends every text with it)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from ptexp.embedded import resolve_model_path
    from ptexp.schema import EMBEDDED_MODEL

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=d_model,
        d_kv=d_model // 2,
        d_ff=2 * d_model,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
