"""A typed service from a .proto service block: a Greeter and a Visitor that calls it."""

from .actors import Greeter, Visitor

__all__ = ["Greeter", "Visitor"]
