"""Child processes of the harness: `matchmaker` workers and daemons.

Peak resident set size comes from `wait4`'s `ru_maxrss`. Linux records in a
process's `ru_maxrss` the high-water RSS of the memory it had *before* exec
too, and a child started by the harness itself would begin as a copy of (or,
with vfork, share) the harness, whose NumPy arrays would then show up as the
worker's peak. So every child is started by a *spawner*: this file run as a
fresh, minimal Python (`python3 -S -I procs.py`, about 10 MB resident). It
starts the commands with `posix_spawn`, reaps them with `wait4`, and reports
each exit status and `ru_maxrss` back over a pipe. The spawner's own size is
the floor of what can be measured: a process smaller than it reports it.

Every live child is registered, so `stop_all` can end them on any exit path
(normal end, error, Ctrl-C, SIGTERM); if the harness dies without doing so,
the spawner sees its pipe close and stops them itself.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

_LIVE: dict[int, "Child"] = {}
_SPAWNER: "Spawner | None" = None


class Spawner:
    """The helper process that starts and reaps every child (see the module
    docs). Requests and replies are JSON lines over its stdin and stdout."""

    def __init__(self) -> None:
        import subprocess  # here: the spawner itself stays as small as it can

        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own session: Ctrl-C reaches the harness, which stops the
            # children itself (SIGTERM, so that workers hand back their rows).
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._req = self.proc.stdin
        self._rep = self.proc.stdout.fileno()
        self._buf = b""
        self._started: dict[int, dict] = {}  # spawn id -> reply
        self.exits: dict[int, dict] = {}  # pid -> {"status", "maxrss"}
        self._next = 0

    def spawn(self, args: list[str], env: dict[str, str], stdout: str, stderr: str) -> int:
        """Starts `args`; returns its pid. stdout and stderr are file paths
        (stderr is appended to)."""
        self._next += 1
        sid = self._next
        request = {"id": sid, "args": args, "env": env, "stdout": stdout, "stderr": stderr}
        self._req.write((json.dumps(request) + "\n").encode())
        self._req.flush()
        while sid not in self._started:
            self._read(None)
        reply = self._started.pop(sid)
        if "error" in reply:
            raise RuntimeError(f"could not start {args[0]}: {reply['error']}")
        return reply["pid"]

    def collect(self, timeout: float | None = 0.0) -> None:
        """Reads the exit reports available within `timeout` seconds."""
        self._read(timeout)

    def close(self) -> None:
        """Ends the spawner (after its children have been stopped)."""
        try:
            self._req.close()
        except OSError:
            pass
        import subprocess

        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _read(self, timeout: float | None) -> None:
        ready, _, _ = select.select([self._rep], [], [], timeout)
        if not ready:
            return
        chunk = os.read(self._rep, 65536)
        if not chunk:
            raise RuntimeError("the process spawner died")
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "exit" in msg:
                self.exits[msg["exit"]] = msg
            else:
                self._started[msg["id"]] = msg


def serve(req_fd: int, rep_fd: int) -> None:
    """The spawner's loop: start requested commands, report exits. Ends when
    the harness closes its end of the request pipe, after stopping whatever
    is still running."""
    # The harness decides when children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    buf = b""
    out = os.fdopen(rep_fd, "w", buffering=1)

    def report(msg: dict) -> None:
        try:
            out.write(json.dumps(msg) + "\n")
        except (BrokenPipeError, ValueError):
            pass  # the harness is gone; the loop ends at EOF on its requests

    def reap() -> None:
        for pid in list(children):
            try:
                got, status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                continue
            if got:
                children.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                report({"exit": pid, "status": code, "maxrss": usage.ru_maxrss})

    open_ = True
    while open_:
        ready, _, _ = select.select([req_fd, wake_r], [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        reap()
        if req_fd in ready:
            chunk = os.read(req_fd, 65536)
            if not chunk:
                open_ = False
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                req = json.loads(line)
                try:
                    with open(req["stdout"], "wb") as so, open(req["stderr"], "ab") as se:
                        pid = os.posix_spawn(
                            req["args"][0],
                            req["args"],
                            req["env"],
                            file_actions=[
                                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                (os.POSIX_SPAWN_DUP2, so.fileno(), 1),
                                (os.POSIX_SPAWN_DUP2, se.fileno(), 2),
                            ],
                            # What this process ignores, children must not.
                            setsigdef=(
                                signal.SIGINT,
                                signal.SIGTERM,
                                signal.SIGHUP,
                                signal.SIGCHLD,
                                signal.SIGPIPE,
                                signal.SIGXFSZ,
                            ),
                        )
                    children.add(pid)
                    report({"id": req["id"], "pid": pid})
                except OSError as e:
                    report({"id": req["id"], "error": str(e)})
    # The harness is gone: stop what it left behind.
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)


def start_spawner() -> None:
    """Starts the spawner."""
    global _SPAWNER
    if _SPAWNER is None:
        _SPAWNER = Spawner()


def close_spawner() -> None:
    """Ends the spawner; call after `stop_all`."""
    global _SPAWNER
    if _SPAWNER is not None:
        _SPAWNER.close()
        _SPAWNER = None


class Child:
    """One `matchmaker` process. Its stdout goes to a file `stdout_path`
    (read once it has exited); its stderr is appended to `log_path`."""

    def __init__(self, args: list[str], env: dict[str, str], stdout_path: str, log_path: str):
        assert _SPAWNER is not None, "start_spawner() first"
        self.args = args
        self._stdout_path = stdout_path
        self.pid = _SPAWNER.spawn(args, env, stdout_path, log_path)
        self.started = time.monotonic()
        self.ended: float | None = None
        self.returncode: int | None = None
        self.maxrss_kb = 0
        self.stdout = ""
        _LIVE[self.pid] = self

    def poll(self) -> bool:
        """Whether the process has exited (collecting its report if so)."""
        if self.returncode is not None:
            return True
        assert _SPAWNER is not None
        _SPAWNER.collect(0.0)
        report = _SPAWNER.exits.pop(self.pid, None)
        if report is None:
            return False
        self.ended = time.monotonic()
        self.returncode = report["status"]
        self.maxrss_kb = report["maxrss"]  # kilobytes on Linux
        try:
            with open(self._stdout_path, "rb") as f:
                self.stdout = f.read().decode(errors="replace")
            os.unlink(self._stdout_path)
        except OSError:
            pass
        _LIVE.pop(self.pid, None)
        return True

    def wait(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for the process to exit."""
        deadline = time.monotonic() + timeout
        while not self.poll():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            assert _SPAWNER is not None
            _SPAWNER.collect(min(left, 0.005))
            if self.pid in _SPAWNER.exits:
                continue
        return True

    def signal(self, sig: int) -> None:
        """Sends a signal to the process if it is still running."""
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (a worker finishes its batch and hands back the rest), then
        SIGKILL after `grace` seconds."""
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


if __name__ == "__main__":
    serve(sys.stdin.fileno(), sys.stdout.fileno())
