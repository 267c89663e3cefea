"""The one entry of every command (``main.py`` and ``python -m spnet_jax.<tool>``).

A tool is a module with ``define_flags()`` (its absl flags) and ``main(argv)``; `run` gives
every tool the same behaviour:

* library logs quiet on the terminal (Orbax and friends narrate at INFO; warnings stay);
* flag parsing and config loading inside the error handling: a missing or broken config
  file, an unknown ``--config.<field>`` override or a bad flag value is one sentence;
* `ConfigError` (bad input of any kind) -> ``error: <sentence>`` on stderr, exit status 2,
  before any work; a non-finite loss or a preemption -> its sentence, exit status 1;
* a full disk -> one sentence; any other error (a bug, a library failing) -> one line naming
  it and ``<workdir>/error.log``, which keeps the whole traceback (exit status 1).
"""

from __future__ import annotations

import errno
import logging as std_logging
import os
import re
import sys
import tempfile
import time
import traceback
from types import ModuleType
from typing import Any

from absl import app, flags, logging

from spnet_jax.core.errors import ConfigError
from spnet_jax.train.loop import Preempted
from spnet_jax.train.metrics import NonFiniteLossError

FLAGS = flags.FLAGS
ERROR_LOG = 'error.log'  # where an unexpected error's traceback goes (the workdir, if any)


class QuietLibraries(std_logging.Filter):
    """Keeps the terminal to the project's lines: drops the libraries' INFO chatter (Orbax's
    checkpoint reads and writes, JAX's backend notes); their warnings stay."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return (record.levelno >= std_logging.WARNING
                or f'{os.sep}spnet_jax{os.sep}' in record.pathname
                or record.pathname.endswith('main.py'))


def fail(message: str, status: int = 2) -> None:
    """Prints ``error: <message>`` (one line) and exits."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(status)


def load_config(name: str = 'config') -> Any:
    """The ``--<name>`` flag's ConfigDict (None if not given), or a `ConfigError` naming the
    file: config_flags defers a file's load errors to the first attribute access."""
    try:
        config = getattr(FLAGS, name)
        if config is not None:
            config.keys()  # forces the deferred load error, if any
        return config
    except (OSError, ImportError, SyntaxError, AttributeError, ValueError, TypeError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        detail = ' '.join(line.strip() for line in lines[-3:])
        raise ConfigError(f'--{name} could not be loaded ({detail}); give an existing '
                          'configs/<name>.py file.') from None


def _not_a_field(name: str, argv: list[str]) -> None:
    given = [a.split('=')[0] for a in argv[1:]
             if a.startswith('--config') and a.split('=')[0].split('.')[-1] == name]
    what = given[0] if given else f'--config.{name}'
    fail(f'{what} is not a field of the config; see configs/default.py for the fields and '
         'their meaning.')


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        text = str(e).strip()
        unknown = re.match(r"Unknown command line flag '(config\.[\w.]+)'", text)
        if unknown:
            _not_a_field(unknown.group(1).split('.')[-1], argv)
        first = text.splitlines()[0] if text else type(e).__name__
        fail(f'{first.rstrip(".")}; see --help for the flags.')
    except (OSError, ImportError, SyntaxError, AttributeError, KeyError, ValueError,
            TypeError) as e:  # a config file that fails while the flags are parsed
        text = str(e).strip()
        field = re.fullmatch(r"""["']*(\w+)["']*""", text)
        if isinstance(e, AttributeError | KeyError) and field:
            _not_a_field(field.group(1), argv)
        first = text.splitlines()[-1] if text else type(e).__name__
        fail(f'the config could not be loaded or overridden ({first}); check --config and '
             'the --config.<field> overrides against configs/default.py.')
    return []  # not reached


def _log_path() -> str:
    """``<workdir>/error.log`` when the tool has an existing workdir, else a temporary file."""
    workdir = getattr(FLAGS, 'workdir', None) if 'workdir' in FLAGS else None
    folder = workdir if workdir and os.path.isdir(workdir) else tempfile.gettempdir()
    return os.path.join(folder, ERROR_LOG)


def _unexpected(error: BaseException) -> None:
    """An error that is not bad input: one line on the terminal, the whole traceback in
    ``<workdir>/error.log`` (or a temporary file), exit status 1."""
    path = _log_path()
    try:
        with open(path, 'a') as fh:
            fh.write(f'--- {time.ctime()}: {" ".join(sys.argv)}\n')
            traceback.print_exception(error, file=fh)
    except OSError:
        path = None
    first = (str(error).strip().splitlines() or [''])[0][:300]
    where = f'; the full traceback is in {path}' if path else ''
    fail(f'{type(error).__name__}: {first}{where}.', status=1)


def _unraisable_to_log(unraisable: Any) -> None:
    """`sys.unraisablehook`: exceptions nobody can catch (Orbax's asyncio readers left
    behind by a damaged checkpoint print "Event loop is closed" by the hundred) go to the
    error log, not around the one sentence that matters on the terminal."""
    try:
        with open(_log_path(), 'a') as fh:
            fh.write(f'--- {time.ctime()}: ignored in {unraisable.object!r}\n')
            traceback.print_exception(unraisable.exc_value, file=fh)
    except OSError:
        pass


def run(tool: ModuleType) -> None:
    """Defines ``tool``'s flags and runs its ``main`` under the common behaviour."""
    tool.define_flags()

    def main(argv: list[str]) -> None:
        logging.get_absl_logger().addFilter(QuietLibraries())
        std_logging.getLogger().addFilter(QuietLibraries())
        sys.unraisablehook = _unraisable_to_log
        if len(argv) > 1:
            fail(f'unexpected arguments {argv[1:]}; every input is a --flag (see --help).')
        try:
            tool.main(argv)
        except ConfigError as e:
            fail(str(e))
        except NonFiniteLossError as e:
            fail(f'training stopped: {e}', status=1)
        except Preempted as e:  # not an error: the state is saved, the same command resumes
            print(str(e), file=sys.stderr)
            sys.exit(1)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                _unexpected(e)
            fail(f'the disk is full ({e.filename or e.strerror}); free some space and rerun the '
                 'same command: it resumes from the last checkpoint.', status=1)
        except Exception as e:  # noqa: BLE001 - a bug or a library failure: keep its trace
            _unexpected(e)

    app.run(main, flags_parser=_parse_flags)
