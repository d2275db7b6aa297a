"""How long a request body may take to arrive: a grace period, then a minimum rate.

A fixed deadline either refuses a big photo on a slow uplink or lets a client dribble a small
offer for as long as the deadline; a rate does neither. A 1 byte/s dribble fails when the grace
period ends; an 8 MB photo over a 5 Mbit/s uplink (~13 s) passes.
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class BodyTooSlow(Exception):
    """The body fell behind its pace; the request is answered 408 and its connection closed."""


class BodyPace:
    """Each read must finish by `grace_s` after the first, plus what has arrived at `min_bytes_per_s`."""

    def __init__(self, grace_s: float, min_bytes_per_s: int) -> None:
        self.grace_s, self.min_bytes_per_s = grace_s, min_bytes_per_s
        self._start = asyncio.get_running_loop().time()
        self.received = 0  # bytes

    async def read(self, pending: Awaitable[T]) -> T:
        """`pending` (a read of the body), or BodyTooSlow when it does not finish in time."""
        deadline = self._start + self.grace_s + self.received / self.min_bytes_per_s
        try:
            async with asyncio.timeout_at(deadline):
                got = await pending
        except TimeoutError:
            raise BodyTooSlow() from None
        if isinstance(got, bytes | bytearray):
            self.received += len(got)
        return got
