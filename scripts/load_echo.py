#!/usr/bin/env python3
"""Echo node capacity: 64-byte calls to demo.Echo.Say (configs/echo.toml).

Closed loop at concurrency 1, 8 and 32 (the latency floor and the saturation throughput),
then an open-loop rate ladder for the highest rate whose p99 stays <= 1 ms.

    python scripts/load_echo.py OUT_DIR [--quick] [--duration S] [--no-plot]

Writes one JSON and one PNG per run, and summary.json, into OUT_DIR (see load_scenarios.py).
"""

import sys

from load_scenarios import main

if __name__ == "__main__":
    sys.exit(main("echo"))
