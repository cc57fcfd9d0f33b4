"""How much a process may have on its way to its node's gateway: bytes, not frames.

Workers and Shells send every call and tell for another node to one socket of their
node's gateway. ZeroMQ bounds its queues in messages (``_rpc.GATEWAY_SEND_HWM``), not
bytes: 1,280 tells of 32 KiB were 40 MiB on their way when the gateway told their sender
to wait for a full link (``_held_targets``), past the 8 MiB its hold keeps, and the
gateway then stopped reading its socket for every node. So a sender also keeps at most
:data:`CREDIT_BYTES` that the gateway has not read yet: the gateway says how much it
read from each connection in a **read** notice, every :data:`READ_EVERY_BYTES`, on that
connection, and a send that would pass the credit waits for one, if one is due: with less
than :data:`READ_EVERY_BYTES` unread the gateway may have read it all and owe no notice,
so a large frame goes then (a frame of 900 KB after one of 200 KB waited :data:`WAIT_S`
for a notice that was never coming, session 44). So a frame larger than the credit goes
too, with that little ahead of it.

Small sends never wait: a lone call is far below the credit. A wait ends after
:data:`WAIT_S` without a notice (a notice lost, the gateway gone before it answered), so
that this costs a second, never a hang; a gateway that went away resets the count.
"""

from __future__ import annotations

import asyncio

from . import _envelope as wire
from ._envelope import RESPONSE, Envelope
from ._errors import BadRequest, DeadlineExceeded

#: The route of the notice: a RESPONSE without a request id, its payload the bytes read.
READ_ROUTE = "actrhost.gateway.Read"
#: Bytes a sender may have sent to its gateway and not seen read.
CREDIT_BYTES = 1024 * 1024
#: The gateway says what it read from a connection once this much came on it: a quarter of
#: the credit, so that a flood's sender hears before it has to wait.
READ_EVERY_BYTES = CREDIT_BYTES // 4
#: Connections whose bytes read since their last notice the gateway keeps count of at most
#: (the oldest go first: Shells come and go; a count lost only delays their next notice).
CONNECTIONS_MAX = 4096
#: How long a send waits for a read notice before it goes anyway.
WAIT_S = 1.0


def read_notice(nbytes: int) -> bytes:
    """The encoded notice that the gateway read ``nbytes`` more from a connection."""
    return wire.encode(Envelope(RESPONSE, READ_ROUTE, str(nbytes).encode()))


def is_read_notice(env: Envelope) -> bool:
    """Whether a RESPONSE on a link to the gateway is a read notice."""
    return not env.request_id and env.route_key == READ_ROUTE


def bytes_read(env: Envelope) -> int:
    """The bytes a read notice says were read; ``BadRequest`` if it says none."""
    try:
        nbytes = int(bytes(env.payload))
    except ValueError:
        nbytes = -1
    if nbytes < 0:
        raise BadRequest(f"a read notice of {bytes(env.payload)[:20]!r}")
    return nbytes


class GatewayCredit:
    """A sender's side: the bytes sent to the gateway that it has not said it read."""

    def __init__(self) -> None:
        self.unread = 0
        self._read = asyncio.Event()
        #: Sends that waited for a notice, and that went after WAIT_S without one.
        self.waits = 0
        self.waits_timed_out = 0

    def room_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` may go now (cheap: the common case is far below). Past the
        credit only while a read notice is due: once the gateway reads what is unread,
        at least :data:`READ_EVERY_BYTES`, it says so; with less it may never."""
        return self.unread + nbytes <= CREDIT_BYTES or self.unread < READ_EVERY_BYTES

    def sent(self, nbytes: int) -> None:
        """``nbytes`` went to the gateway's socket."""
        self.unread += nbytes

    def read(self, nbytes: int) -> None:
        """The gateway says it read ``nbytes`` more."""
        self.unread = max(0, self.unread - nbytes)
        self._read.set()

    def reset(self) -> None:
        """The gateway went away: what it had not read will not be (a new one starts)."""
        self.read(self.unread)

    async def wait(self, nbytes: int, deadline: float) -> None:
        """Wait until ``nbytes`` may go, at most :data:`WAIT_S` (then it goes anyway);
        ``DeadlineExceeded`` if ``deadline`` (loop time) comes first."""
        self.waits += 1
        loop = asyncio.get_running_loop()
        give_up = loop.time() + WAIT_S
        while not self.room_for(nbytes):
            now = loop.time()
            if now >= deadline:
                raise DeadlineExceeded(
                    f"the node's gateway read nothing more of this process's "
                    f"{self.unread:,} bytes before the deadline (it is stuck, or its "
                    "links are full)"
                )
            if now >= give_up:
                self.waits_timed_out += 1
                self.unread = 0  # (a notice lost, or a gateway gone: go on)
                return
            self._read.clear()
            try:
                async with asyncio.timeout_at(min(deadline, give_up)):
                    await self._read.wait()
            except TimeoutError:
                continue


class ReadCounts:
    """The gateway's side: per connection (routing id), the bytes read since it was last
    told (:data:`READ_EVERY_BYTES`)."""

    def __init__(self) -> None:
        self._since_told: dict[bytes, int] = {}  # (oldest first)

    def add(self, routing_id: bytes, nbytes: int) -> int:
        """``nbytes`` came on ``routing_id``: the bytes to tell it were read now, or 0."""
        count = self._since_told.pop(routing_id, 0) + nbytes
        if count >= READ_EVERY_BYTES:
            return count
        self._since_told[routing_id] = count
        if len(self._since_told) > CONNECTIONS_MAX:
            del self._since_told[next(iter(self._since_told))]
        return 0

    def unsent(self, routing_id: bytes, nbytes: int) -> None:
        """The notice for ``nbytes`` could not go: they are told with the next one."""
        self._since_told[routing_id] = self._since_told.get(routing_id, 0) + nbytes
