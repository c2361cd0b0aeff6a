"""Start `fireside serve` on a tiny random model for the Playwright tests.

The model (a tokenizer trained on a few standard-library modules, a 2-layer Llama with random
weights) and the app's data directory live in a fresh temporary directory, so every run starts
with no accounts and no conversations. Usage: serve_tiny.py PORT
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

from fireside.model import ModelConfig, Transformer, save_pretrained, train_tokenizer
from fireside.model.tokenizer import SPECIAL_TOKENS


def build_model(path: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text(encoding="utf-8") for f in sorted((stdlib / "json").glob("*.py"))]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        architecture="LlamaForCausalLM",
    )
    model = Transformer(config)
    model.init_weights(std=0.5)
    # No special token can win: every answer runs to FIRESIDE_APP_MAX_TOKENS, so a test can
    # stop it or reload while it is still being written.
    with torch.no_grad():
        for token in SPECIAL_TOKENS:
            token_id = tokenizer.token_id(token)
            if token_id is not None:
                model.lm_head.weight[token_id] = 0.0
    save_pretrained(model, tokenizer, path)
    return path


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else "8765"
    root = Path(tempfile.mkdtemp(prefix="fireside-e2e-"))
    model = build_model(root / "model")
    env = dict(
        os.environ,
        FIRESIDE_DATA_DIR=str(root / "data"),
        FIRESIDE_JEMALLOC="0",
        FIRESIDE_APP_MAX_TOKENS=os.environ.get("FIRESIDE_APP_MAX_TOKENS", "1500"),
        # Every spec signs up from 127.0.0.1: the per-address limits would stop them.
        FIRESIDE_SIGNUPS_PER_ADDRESS="100000",
        FIRESIDE_AUTH_FAILURES_PER_ADDRESS="100000",
    )
    fireside = Path(sys.executable).with_name("fireside")
    args = [str(fireside), "serve", "--model", str(model), "--host", "127.0.0.1", "--port", port]
    os.execve(args[0], args, env)


if __name__ == "__main__":
    main()
