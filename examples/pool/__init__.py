"""Several instances of one actor type, and a dispatcher spreading work over them."""

from .actors import Dispatcher, Square

__all__ = ["Dispatcher", "Square"]
