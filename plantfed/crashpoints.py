"""Named points where a process can be made to die on purpose, for fault tests.

``crash_point(name)`` kills the calling process with SIGKILL when the environment
variable ``PLANTFED_CRASH_AT`` equals ``name``; otherwise it does nothing. Fault
tests use it to kill a coordinator at an exact step of the round protocol (after
opening a round, after dispatching it, while closing it), which a timed signal
from outside cannot hit reliably.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

CRASH_ENV = "PLANTFED_CRASH_AT"


def crash_point(name: str) -> None:
    """Die at once, as a power cut would, when ``PLANTFED_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        logger.warning("Crash point %s reached: killing this process (pid %d)", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
