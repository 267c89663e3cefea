"""The one exception type users see for bad input."""


class ConfigError(ValueError):
    """Bad input (config field, file, checkpoint): one sentence naming the field and the fix.

    Raised before any device work starts; `main.py` and the command-line tools print the
    message alone, without a traceback, and exit non-zero.
    """
