"""``actrhost load``: a load generator for any running node.

Several generator processes attach to the node as Shell clients and call, tell or stream
to one target; latencies go into mergeable log-bucketed histograms, merged across the
processes; the result is a table on stdout, and optionally JSON and a PNG plot.

This ``__init__`` imports nothing on purpose: ``actrhost``'s argument parser imports
:mod:`._args` at every start, and the generator's imports (zmq, protobuf) should be paid
only when ``load`` actually runs. Entry point: :func:`._main.run_cli`.
"""
