"""Two actors that call each other: Ping calls Pong, Pong calls back into Ping."""

from .actors import Ping, Pong

__all__ = ["Ping", "Pong"]
