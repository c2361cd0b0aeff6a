"""A sample of the pretraining mix as plain-text SFT lines (`{"text": ...}`), mixed into chat
fine-tuning by weight so the chat model keeps modelling text (fireside/train/chat_data.py).

Fine-tuning a small model on templated conversations alone takes its held-out bits per byte from
pretraining's level to worse than `xz`: it forgets how text goes. nanochat mixes its SFT tasks
with general data for the same reason. The sample is drawn from the training side of the mix
only (held-out documents never enter it), a window of at most `window` characters from each
document chosen, so long files do not crowd out the rest.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fireside.data.held_out import training_texts


def write_text_sample(
    train: Path, output: Path, *, chars: int, window: int = 6000, seed: int = 0
) -> int:
    """Write about `chars` characters of `train`'s documents (JSONL, `text` per line) to
    `output` as `{"text"}` lines; returns the characters written."""
    texts = [t for t in training_texts([train]) if len(t.strip()) >= 200]
    rng = random.Random(seed)
    rng.shuffle(texts)
    tmp = output.with_name(output.name + ".tmp")
    written = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for text in texts:
            if written >= chars:
                break
            if len(text) > window:
                start = rng.randrange(len(text) - window)
                text = text[start : start + window]
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            written += len(text)
    tmp.replace(output)
    return written
