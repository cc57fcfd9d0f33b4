"""The README demo: an echo actor and a client actor that calls it."""

from .actors import Client, Echo

__all__ = ["Client", "Echo"]
