"""The one exception type users see for bad input."""


class ConfigError(ValueError):
    """Bad input (config field, file, checkpoint): one sentence naming the field and the fix.

    Raised before any device work starts; `main.py` and the command-line tools print the
    message alone, without a traceback, and exit non-zero.
    """


def loaded_config(flag_values, name: str = 'config'):
    """The ``--config`` flag's ConfigDict, or a ConfigError naming the file if it failed to
    load (config_flags defers the failure to the first attribute access)."""
    try:
        config = getattr(flag_values, name)
        if config is not None:
            config.keys()  # forces the deferred load error, if any
        return config
    except (OSError, ImportError, SyntaxError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = ' '.join(line.strip() for line in first[-3:])
        raise ConfigError(f'--{name} could not be loaded ({detail}); give an existing '
                          'configs/<name>.py file.') from None
