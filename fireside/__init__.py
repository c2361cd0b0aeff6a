"""Fireside: a self-hostable ChatGPT — train a GPT-style model, serve it, chat with it."""

__version__ = "0.1.0"
