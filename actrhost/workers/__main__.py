"""``python -m actrhost.workers``: a worker process (started by the supervisor only)."""

from __future__ import annotations

import json
import logging
import os
import sys

from ._worker import SPEC_ENV, WorkerSpec, main

if __name__ == "__main__":
    spec = WorkerSpec(**json.loads(os.environ[SPEC_ENV]))
    logging.basicConfig(
        level=os.environ.get("ACTRHOST_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-7s {spec.actor_name}#{spec.index}[%(process)d] "
        "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.exit(main(spec))
