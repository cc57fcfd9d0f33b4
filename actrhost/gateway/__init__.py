"""The gateway process: WebRTC (aiortc) and signaling for a node's remote traffic.

Started by the supervisor as ``python -m actrhost.gateway`` when the config has
``[signaling]``; see docs/gateway.md. Nothing here is public API: aiortc objects never
leave this package, and workers never import it (aiortc costs ≈ 250 ms to import).
"""
