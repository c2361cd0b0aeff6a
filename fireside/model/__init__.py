"""One Transformer for the Llama family, its HF-format checkpoints, tokenizer and chat template."""

from fireside.model.checkpoint import load_model, save_model
from fireside.model.config import ARCHITECTURES, ModelConfig
from fireside.model.pretrained import Pretrained, load_pretrained, save_pretrained
from fireside.model.tokenizer import Tokenizer, train_tokenizer
from fireside.model.transformer import KVCache, Transformer

__all__ = [
    "ARCHITECTURES",
    "KVCache",
    "ModelConfig",
    "Pretrained",
    "Tokenizer",
    "Transformer",
    "load_model",
    "load_pretrained",
    "save_model",
    "save_pretrained",
    "train_tokenizer",
]
