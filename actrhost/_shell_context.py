"""The ZeroMQ context of a Shell, and what happens to it when a script drops the Shell
without closing it.

The garbage collector clears the weak references to every object of a cycle before it
runs their ``__del__``. pyzmq's ``Context.__del__`` then destroys the context: it closes
the sockets it still tracks, weakly (none: those references were just cleared), and
calls ``term()``, which waits until every socket is closed. The sockets' own ``__del__``,
which would close them, runs after it, in the same thread: the script hung for ever at
its next collection (QA: an unclosed Shell, then ``gc.collect()``).

So the context of an open Shell is held here, where the collector cannot reach it, and
a Shell collected without ``aclose()`` ends it in a thread of its own, which waits until
the collector has closed the sockets (their ``__del__``) and then lets it go.
"""

from __future__ import annotations

import threading
import warnings
import weakref

import zmq

#: Contexts of Shells not closed yet.
_HELD: set[zmq.Context[zmq.Socket[bytes]]] = set()


class ShellContext:
    """A ZeroMQ context that lives until :meth:`release`, or until its owner is
    collected (then ended in the background, with a ``ResourceWarning``)."""

    def __init__(self, owner: object) -> None:
        self.zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        _HELD.add(self.zctx)
        self._finalizer = weakref.finalize(owner, _abandoned, self.zctx, repr(owner))

    def release(self) -> None:
        """The owner closed every socket and terminated the context (or will not use it
        again): it is an ordinary object again."""
        self._finalizer.detach()
        _HELD.discard(self.zctx)


def _abandoned(zctx: zmq.Context[zmq.Socket[bytes]], owner: str) -> None:
    warnings.warn(f"unclosed {owner}: use `async with` or aclose()", ResourceWarning, 2)
    threading.Thread(target=_end, args=(zctx,), name="actrhost-unclosed-shell", daemon=True).start()


def _end(zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    zctx.term()  # once the collector has closed the sockets
    _HELD.discard(zctx)
