#!/usr/bin/env python3
"""Tells to the echo node: 64-byte tells to demo.Echo.Say (configs/echo.toml).

Closed loop at concurrency 32 and open loop at 5,000/s; the report shows beside the
client's hand-over rate how many tells the node served (tells_served).

    python scripts/load_tells.py OUT_DIR [--quick] [--duration S] [--no-plot]

Writes one JSON and one PNG per run, and summary.json, into OUT_DIR (see load_scenarios.py).
"""

import sys

from load_scenarios import main

if __name__ == "__main__":
    sys.exit(main("tells"))
