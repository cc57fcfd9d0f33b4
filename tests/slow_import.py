"""A handler module that takes 30 s to import in a forkserver, and none elsewhere
(tests/test_supervisor.py: a supervisor killed while its forkserver starts)."""

from __future__ import annotations

import sys
import time

from actrhost import Actor

if "forkserver" in sys.argv:
    time.sleep(30)


class Nothing(Actor):
    """Serves nothing."""
