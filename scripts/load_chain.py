#!/usr/bin/env python3
"""A chain A -> B -> C: calls to chain.Head.Run (configs/chain.toml), 64 bytes.

Each call is three calls (Shell -> Head -> Middle -> Tail and back), each hop a separate
worker process: closed loop at concurrency 1 and 16, and open loop at 1,000/s.

    python scripts/load_chain.py OUT_DIR [--quick] [--duration S] [--no-plot]

Writes one JSON and one PNG per run, and summary.json, into OUT_DIR (see load_scenarios.py).
"""

import sys

from load_scenarios import main

if __name__ == "__main__":
    sys.exit(main("chain"))
