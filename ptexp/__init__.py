"""ptexp: config-driven P-tuning experiments (Hydra + peft + transformers + W&B)."""

__version__ = "0.1.0"
