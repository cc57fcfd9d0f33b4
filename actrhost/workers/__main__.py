"""``python -m actrhost.workers``: a worker process, or with ``forkserver`` the process
that forks them (both started by the supervisor only)."""

from __future__ import annotations

import json
import os
import sys

from ._process import SPEC_ENV, WorkerSpec, configure_logging, main

if __name__ == "__main__":
    if sys.argv[1:2] == ["forkserver"]:
        from ._forkserver import serve_from_argv

        sys.exit(serve_from_argv(sys.argv[2:]))
    spec = WorkerSpec(**json.loads(os.environ[SPEC_ENV]))
    configure_logging(spec, os.environ.get("ACTRHOST_LOG_LEVEL", "INFO"))
    sys.exit(main(spec))
