"""Stop signals of a running command: SIGINT and SIGTERM stop it with one line and exit 130 or 143."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop), handled like Ctrl-C."""


class StopSignals:
    """SIGINT and SIGTERM while a command runs (main thread only): the first one stops the command.

    A stop signal sent to the process group also stops DataLoader workers, and PyTorch's SIGCHLD
    handler then raises "worker killed" errors anywhere, even in a finaliser during the unwinding.
    Once stopping, those are consequences of the stop, not failures: SIGCHLD goes back to its default,
    unraisable errors are silenced, and :func:`main` reports any error as the stop (exit 130 or 143).

    The stop is raised wherever the main thread is, which can be inside a DataLoader's queue while it
    holds a lock, and the unwinding can then wait on that lock for ever. So the stop also arms a
    watchdog: if the command has not returned ``GRACE_SECONDS`` later, it prints the stop's line and
    exits at once. Nothing is lost by that: every file of a run is written atomically, so any moment
    leaves a run that resumes (the issue-22 interruption tests).
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
    GRACE_SECONDS = 30.0

    def __init__(self, stopped_line: Callable[[bool], str]) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._hook = sys.unraisablehook
        self._stopped_line = stopped_line
        self._watchdog: threading.Timer | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.getsignal(signum) for signum in self.HANDLED}
            signal.signal(signal.SIGINT, self._stop)
            signal.signal(signal.SIGTERM, self._stop)
            self._hook = sys.unraisablehook
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if self._previous:
            sys.unraisablehook = self._hook

    @property
    def terminated(self) -> bool:
        return self.signum == signal.SIGTERM

    def _stop(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # already stopping: the cleanup finishes, then the command exits
            return
        self.signum = signum
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # workers stopped by the same signal are no error
        self._watchdog = threading.Timer(self.GRACE_SECONDS, self._exit_now)
        self._watchdog.daemon = True
        self._watchdog.start()
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def _exit_now(self) -> None:
        """The watchdog: the unwinding is stuck; report the stop and leave without waiting for it."""
        print(self._stopped_line(self.terminated), file=sys.stderr, flush=True)
        os._exit(143 if self.terminated else 130)

    def _unraisable(self, unraisable: Any) -> None:
        if self.signum is None:
            self._hook(unraisable)


def stopped_line(command: str, run_dir: Path | None, terminated: bool) -> str:
    """What an interrupted command prints: on a new line, with how to resume a run that has a checkpoint."""
    line = f"\ngdram {command}: {'terminated' if terminated else 'interrupted'}"
    if run_dir is not None:
        if (run_dir / "last.pt").is_file():
            line += f"; resume with: gdram train --resume --out {shlex.quote(str(run_dir))}"
        else:
            line += f"; no checkpoint was written in {run_dir} yet"
    return line
