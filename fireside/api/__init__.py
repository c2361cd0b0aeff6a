"""The OpenAI-compatible HTTP surface: /v1/*, tokenizer routes, health and metrics."""
