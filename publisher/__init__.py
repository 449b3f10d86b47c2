"""publisher: take records in over signed webhooks, check them, publish them through plugins."""

__version__ = "0.1.0"
