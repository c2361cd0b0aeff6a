"""Fireside: a self-hostable ChatGPT — train a GPT-style model, serve it, chat with it."""

import os

__version__ = "0.1.0"

# Single-stream CPU decode runs its matmuls on the OpenBLAS that numpy ships
# (`fireside.model.serving`). After a call, OpenBLAS's workers spin for 2^28 cycles (~0.1 s)
# before sleeping, and spinning on the cores that torch's threads need, they made the next
# multi-row step (a prompt arriving while a reply streams) 2.2x slower. 2^20 cycles (~0.4 ms)
# still spans the gaps between the matmuls of a step. OpenBLAS reads this once, when numpy
# loads it: importing fireside before numpy or torch is what makes it apply.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
