"""One process per workdir: ``<workdir>/.lock`` names the process that writes it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

import jax
from absl import logging

from spnet_jax.core.errors import ConfigError

LOCK = '.lock'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """One process writes a workdir at a time: ``<workdir>/.lock`` holds the holder's host and
    PID while it runs. Another process is refused with one sentence naming them; a lock left
    by a process that no longer runs on this host is taken over (with a warning). Only
    process 0 of a multi-process job holds it (the others write no files)."""
    if jax.process_index() != 0:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK)
    me = {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.time()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = _read(path)
            except (OSError, ValueError):  # being written this instant, or truncated
                time.sleep(0.2)
                holder = _read(path) if os.path.exists(path) else None
                if holder is None:
                    continue
            if holder.get('host') == me['host'] and not _alive(int(holder.get('pid', -1))):
                logging.warning('Taking over %s: process %s that held it no longer runs.',
                                path, holder.get('pid'))
                os.remove(path)
                continue
            raise ConfigError(
                f'{workdir} is in use by process {holder.get("pid")} on {holder.get("host")} '
                f'(since {time.ctime(holder.get("since", 0))}); wait for it to finish, use '
                f'another --workdir, or delete {path} if that process is gone.') from None
        with os.fdopen(fd, 'w') as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


def holder(workdir: str) -> dict | None:
    """``{'host', 'pid', 'since'}`` of the process writing ``workdir`` now, or None (no lock, an
    unreadable one, or one left by a process of this host that no longer runs)."""
    try:
        info = _read(os.path.join(workdir, LOCK))
    except (OSError, ValueError):
        return None
    if info.get('host') == socket.gethostname() and not _alive(int(info.get('pid', -1))):
        return None
    return info


def _read(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)
