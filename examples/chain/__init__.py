"""A chain of three actors, A -> B -> C, each call passing on to the next one."""

from .actors import Head, Middle, Tail

__all__ = ["Head", "Middle", "Tail"]
