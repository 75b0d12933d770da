"""Child processes of the harness: `matchmaker` workers and daemons.

Each child is reaped with `os.wait4`, which also returns its resource usage,
so the harness knows every worker's peak resident set size (`ru_maxrss`).
Every live child is registered, so `stop_all` can end them on any exit path
(normal end, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from typing import IO

_LIVE: dict[int, "Child"] = {}


class Child:
    """One `matchmaker` process. Its stdout is kept in a temporary file (read
    once it has exited); its stderr goes to the harness's worker log."""

    def __init__(self, args: list[str], env: dict[str, str], log: IO[bytes]):
        self.args = args
        self._out = tempfile.TemporaryFile()
        log.flush()
        self.popen = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=log)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.ended: float | None = None
        self.returncode: int | None = None
        self.maxrss_kb = 0
        self.stdout = ""
        _LIVE[self.pid] = self

    def poll(self) -> bool:
        """Reaps the process if it has exited; returns whether it has."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._reaped(status, usage)
        return True

    def wait(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for the process to exit."""
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def signal(self, sig: int) -> None:
        """Sends a signal to the process if it is still running."""
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the worker finishes its batch and hands back the rest),
        then SIGKILL after `grace` seconds."""
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            self.signal(signal.SIGKILL)
            self.wait(5.0)

    def summary(self) -> dict:
        """The JSON summary `matchmaker run --json` printed, or {}."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return {}
        return {}

    def _reaped(self, status: int, usage) -> None:
        self.ended = time.monotonic()
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # Popen must not wait again
        self.maxrss_kb = usage.ru_maxrss  # kilobytes on Linux
        self._out.seek(0)
        self.stdout = self._out.read().decode(errors="replace")
        self._out.close()
        _LIVE.pop(self.pid, None)


def stop_all(grace: float = 10.0) -> None:
    """Ends every child still running: SIGTERM to all, then SIGKILL to those
    still alive after `grace` seconds."""
    children = list(_LIVE.values())
    for c in children:
        c.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in children:
        if not c.wait(max(0.0, deadline - time.monotonic())):
            c.signal(signal.SIGKILL)
            c.wait(5.0)
