#!/usr/bin/env python3
"""1 MiB data-stream chunks to the chain's Tail (configs/chain.toml).

Closed loop with 2 chunks in flight, and open loop at 1,000 chunks/s (1 GiB/s); chunks go
through the shared-memory ring, the Tail counts them (streams_in.chunks_received).

    python scripts/load_streams.py OUT_DIR [--quick] [--duration S] [--no-plot]

Writes one JSON and one PNG per run, and summary.json, into OUT_DIR (see load_scenarios.py).
"""

import sys

from load_scenarios import main

if __name__ == "__main__":
    sys.exit(main("streams"))
