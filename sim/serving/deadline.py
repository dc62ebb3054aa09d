"""A wall-clock deadline for policy hooks: a hung ``rank`` or ``fit`` fails its run, not the sweep.

Uses ``SIGALRM``, so it applies in the main thread of a process (every run is: serially, or in
its worker process) and interrupts Python code; a hook stuck inside one long C call is stopped
when that call returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HookTimeout", "deadline"]


class HookTimeout(Exception):
    """A hook ran past its deadline."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`HookTimeout` inside the block once ``seconds`` of wall time have passed.

    A no-op for ``seconds <= 0``, outside the main thread, or where ``SIGALRM`` does not exist.
    """
    usable = (
        seconds > 0
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise HookTimeout(f"still running after {seconds:g} s of wall time")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
