"""The one entry of every command (``main.py`` and ``python -m spnet_jax.<tool>``).

A tool is a module with ``define_flags()`` (its absl flags) and ``main(argv)``; `run` gives
every tool the same behaviour:

* library logs quiet on the terminal (Orbax and friends narrate at INFO; warnings stay);
* flag parsing and config loading inside the error handling: a missing or broken config
  file, an unknown ``--config.<field>`` override or a bad flag value is one sentence;
* `ConfigError` (bad input of any kind) -> ``error: <sentence>`` on stderr, exit status 2,
  before any work; a non-finite loss or a preemption -> its sentence, exit status 1;
* Ctrl-C -> one sentence with what was kept and the command that resumes (exit status 130;
  in training a first Ctrl-C checkpoints after the current step, see `spnet_jax.train.loop`);
* a full disk (however the library words it) -> one sentence with what was kept and the
  command that resumes; any other error (a bug, a library failing) -> one line naming
  it and ``<workdir>/error.log``, which keeps the whole traceback (exit status 1).
"""

from __future__ import annotations

import errno
import logging as std_logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from types import ModuleType
from typing import Any

from absl import app, flags, logging

from spnet_jax.core.errors import ConfigError
from spnet_jax.train.loop import Preempted
from spnet_jax.train.metrics import NonFiniteLossError
from spnet_jax.workdir import checkpoint

FLAGS = flags.FLAGS
ERROR_LOG = 'error.log'  # where an unexpected error's traceback goes (the workdir, if any)


class QuietLibraries(std_logging.Filter):
    """Keeps the terminal to the project's lines: drops the libraries' INFO chatter (Orbax's
    checkpoint reads and writes, JAX's backend notes); their warnings stay, their tracebacks
    go to the error log."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        ours = (f'{os.sep}spnet_jax{os.sep}' in record.pathname
                or record.pathname.endswith('main.py'))
        if not ours and record.exc_info and record.exc_info[1] is not None:
            # A library's traceback (Orbax's save thread on a full disk): the error log keeps
            # it; the terminal gets the one sentence the command ends with.
            _to_log(record.getMessage()[:300], record.exc_info[1])
            return False
        return ours or record.levelno >= std_logging.WARNING


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


# Tools that only read the workdir they are given (``READS_ONLY = True`` in their module:
# export, profile) keep their error log out of it: a reader never writes into a run.
_STATE: dict[str, Any] = {'reads_only': False}


def _workdir() -> str | None:
    workdir = getattr(FLAGS, 'workdir', None) if 'workdir' in FLAGS else None
    return workdir if workdir and os.path.isdir(workdir) else None


def _log_path() -> str:
    """``<workdir>/error.log`` when the tool writes an existing workdir, else a temporary
    file."""
    workdir = None if _STATE['reads_only'] else _workdir()
    return os.path.join(workdir or tempfile.gettempdir(), ERROR_LOG)


def _command() -> str:
    """The command line that was run, as the user would type it again."""
    program = os.path.basename(sys.argv[0])
    if program != 'main.py' and os.path.basename(os.path.dirname(sys.argv[0])) == 'spnet_jax':
        program = f'-m spnet_jax.{program.removesuffix(".py")}'
    return ' '.join(['python', program, *sys.argv[1:]])


def _kept() -> str:
    """What a stopped run leaves in its workdir: finished stages, and the latest checkpoint of
    an unfinished one (what the same command resumes from)."""
    workdir = _workdir()
    if _STATE['reads_only'] or workdir is None:
        return 'nothing was written'
    finished, partial = [], []
    for name in sorted(os.listdir(workdir)):
        folder = os.path.join(workdir, name)
        if checkpoint.is_done(folder):
            finished.append(name)
            continue
        root = os.path.join(folder, checkpoint.CHECKPOINTS)
        steps = sorted(int(n) for n in os.listdir(root) if n.isdigit()) if os.path.isdir(
            root) else []
        if steps:
            partial.append(f'{name} at its checkpoint of step {steps[-1]}')
    parts = ([f'the finished stages {", ".join(finished)}'] if finished else []) + partial
    return f'kept in {workdir}: {"; ".join(parts)}' if parts else f'nothing in {workdir} ' \
        'is finished yet'


def _disk_full(error: BaseException) -> bool:
    """A full disk, however the library words it: OSError(ENOSPC), or TensorStore's
    RESOURCE_EXHAUSTED that Orbax re-raises as a ValueError, anywhere in the chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if 'No space left on device' in text or 'RESOURCE_EXHAUSTED' in text:
            return True
        error = error.__cause__ or error.__context__
    return False


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


def _to_log(what: str, error: BaseException | None) -> None:
    """`sys.unraisablehook` and `threading.excepthook`: exceptions nobody can catch (Orbax's
    asyncio readers left behind by a damaged checkpoint print "Event loop is closed" by the
    hundred; its background save thread re-raises a full disk that the main thread reports
    too) go to the error log, not around the one sentence that matters on the terminal."""
    try:
        with open(_log_path(), 'a') as fh:
            fh.write(f'--- {time.ctime()}: {what}\n')
            traceback.print_exception(error, file=fh)
    except OSError:
        pass


def run(tool: ModuleType) -> None:
    """Defines ``tool``'s flags and runs its ``main`` under the common behaviour."""
    tool.define_flags()
    _STATE['reads_only'] = getattr(tool, 'READS_ONLY', False)

    def main(argv: list[str]) -> None:
        quiet = QuietLibraries()
        logging.get_absl_logger().addFilter(quiet)
        # A logger's filter does not see records that propagate from other loggers (JAX's
        # "Unable to initialize backend 'tpu'"): the handlers' filters do.
        for logger in (std_logging.getLogger(), logging.get_absl_logger()):
            logger.addFilter(quiet)
            for handler in logger.handlers:
                handler.addFilter(quiet)
        sys.unraisablehook = lambda u: _to_log(f'ignored in {u.object!r}', u.exc_value)
        threading.excepthook = lambda h: _to_log(f'in thread {h.thread and h.thread.name}',
                                                 h.exc_value)
        if len(argv) > 1:
            fail(f'unexpected arguments {argv[1:]}; every input is a --flag (see --help).')
        try:
            tool.main(argv)
        except ConfigError as e:
            fail(str(e))
        except NonFiniteLossError as e:
            fail(f'training stopped: {e}', status=1)
        except Preempted as e:  # not an error: the state is saved, the same command resumes
            print(f'{e} ({_command()})', file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            fail(f'interrupted (Ctrl-C); {_kept()}. Rerun the same command to '
                 f'{"resume" if not _STATE["reads_only"] else "start again"}: {_command()}',
                 status=130)
        except Exception as e:  # noqa: BLE001 - a bug or a library failure: keep its trace
            if not _disk_full(e):
                _unexpected(e)
            fail(f'the disk is full ({type(e).__name__} while writing); {_kept()}. Free some '
                 f'space and rerun the same command to resume: {_command()}', status=1)

    app.run(main, flags_parser=_parse_flags)
