"""Errors a user can act on. Each says what is wrong and, where it can, how to fix it."""


class FiresideError(Exception):
    """Base of every error Fireside raises on purpose."""


class CheckpointError(FiresideError, ValueError):
    """A model directory that cannot be loaded: missing files, bad config, wrong shapes."""


class TokenizerError(FiresideError, ValueError):
    """A tokenizer that is missing, malformed or does not match its model."""


class ChatTemplateError(FiresideError, ValueError):
    """A conversation the chat template refuses, or a template that fails to render."""


class DataError(FiresideError, ValueError):
    """Training data that cannot be used: empty or unreadable inputs, malformed records."""


class TrainingError(FiresideError, ValueError):
    """A training run that cannot start or resume as asked."""


class RunConfigMismatchError(TrainingError):
    """A RUN_DIR whose checkpoints were made with a different configuration."""
