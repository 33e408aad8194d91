"""The plugin's error types, in a module of their own so that every module can raise them without importing another."""


class ConfigError(ValueError):
    """A setting that cannot work: the message names the key, the value and the allowed range."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint that ``weights_only=True`` with the allow-list cannot load (it would run code)."""


class ColdStartLeak(AssertionError):
    """A held-out item reached something that is fitted (a training split, a tokenizer, negatives, embeddings)."""


__all__ = ["ColdStartLeak", "ConfigError", "UnsafeCheckpointError"]
