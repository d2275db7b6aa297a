"""The control stream when its peer stops reading: a real aiortc publisher in its own process
(tests/stalled_peer.py), frozen with SIGSTOP so that its SCTP acknowledges nothing. The server's
queue for that channel stays under its limit, the messages it cannot send are counted as dropped,
the session's video goes on, and after SIGCONT fresh messages reach the peer again.

    python -m tests.test_control_backpressure [STOPPED_S]

prints what the server holds for the channel, every half second while the peer is stopped.
"""

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCDataChannel

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import VIDEO_FPS
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.controlstream import MAX_BUFFERED_BYTES
from lipstream.streaming.session import Session, SessionConfig
from tests.serving import RunningServer, loopback_only, serving

REPO = Path(__file__).resolve().parents[1]
STOPPED_S = 6.0  # well past MAX_BUFFERED_BYTES' seconds of messages, well short of the transport timeout
SAMPLE_PERIOD_S = 0.1
FLOWING_MESSAGES = 25  # a second's worth reached the peer: the channel is open and flowing
RESUME_WITHIN_S = 10.0  # aiortc retransmits the oldest unacknowledged chunk every second or so
CONFIG = ServeConfig(max_sessions=1, loopback_ice=False)
DROPPED = re.compile(r"^lipstream_control_messages_dropped_total ([\d.e+-]+)$", re.M)

pytestmark = pytest.mark.usefixtures("loopback")


@dataclass
class PeerLine:
    """What the peer process last printed: control messages received and the newest one's frame."""

    messages: int = 0
    frame: int = -1


class PeerProcess:
    """tests/stalled_peer.py, running; `last` follows its reports."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.last = PeerLine()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            _, messages, _, frame = line.decode().split()
            self.last = PeerLine(int(messages), int(frame))

    async def wait_for(self, done: Callable[[PeerLine], bool], within_s: float) -> PeerLine:
        deadline = time.monotonic() + within_s
        while not done(self.last):
            assert time.monotonic() < deadline, f"the peer reported {self.last} after {within_s} s"
            await asyncio.sleep(SAMPLE_PERIOD_S)
        return self.last

    def signal(self, number: int) -> None:
        self.process.send_signal(number)


@contextlib.asynccontextmanager
async def peer_process(url: str) -> AsyncIterator[PeerProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.stalled_peer", url, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(REPO)})
    peer = PeerProcess(process)
    try:
        yield peer
    finally:
        process.send_signal(signal.SIGCONT)  # a stopped process does not act on SIGKILL's exit
        process.kill()
        await process.wait()
        peer._reader.cancel()


def only_session(server: RunningServer) -> Session:
    (session,) = server.state.sessions.values()
    return session


def control_channel(session: Session) -> RTCDataChannel:
    channel = session.controls.channel
    assert channel is not None, "the server did not take the peer's control channel"
    return channel


async def dropped(http: aiohttp.ClientSession, server: RunningServer) -> float:
    async with http.get(f"{server.url}/metrics") as response:
        found = DROPPED.search(await response.text())
    return float(found.group(1)) if found else 0.0


async def most_buffered_while_stopped(peer: PeerProcess, channel: RTCDataChannel, stopped_s: float) -> int:
    """SIGSTOP the peer for `stopped_s`; the most bytes its channel held meanwhile."""
    peer.signal(signal.SIGSTOP)
    most, deadline = 0, time.monotonic() + stopped_s
    while time.monotonic() < deadline:
        most = max(most, channel.bufferedAmount)
        await asyncio.sleep(SAMPLE_PERIOD_S)
    return most


async def test_a_stopped_peer_holds_a_bounded_queue_its_drops_are_counted_and_messages_resume(
        avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http), peer_process(server.url) as peer:
        await peer.wait_for(lambda line: line.messages >= FLOWING_MESSAGES, within_s=30)
        session = only_session(server)
        channel, sent_before = control_channel(session), session.video.sent
        assert await dropped(http, server) == 0  # a peer that reads loses nothing
        most = await most_buffered_while_stopped(peer, channel, STOPPED_S)
        assert most <= MAX_BUFFERED_BYTES, f"{most} bytes queued for a stopped peer"
        assert await dropped(http, server) >= FLOWING_MESSAGES  # over a second's worth, counted
        # The session's video went on meanwhile (a liveness check: the box is shared).
        assert session.video.sent - sent_before > STOPPED_S * VIDEO_FPS / 2 and not session.ending
        newest = session.video.sent  # frames 0..newest - 1 were made before the peer went on
        peer.signal(signal.SIGCONT)
        await peer.wait_for(lambda line: line.frame >= newest, within_s=RESUME_WITHIN_S)
        assert channel.bufferedAmount < MAX_BUFFERED_BYTES


async def measure(stopped_s: float) -> None:
    """Print the server's queues for a stopped peer's control channel, then for its resumption."""
    config = ServeConfig(max_sessions=1, loopback_ice=False, session=SessionConfig(transport_timeout_s=60))
    async with serving(config, Avatar.default(AvatarConfig(size=256))) as (server, http), \
            peer_process(server.url) as peer:
        await peer.wait_for(lambda line: line.messages >= FLOWING_MESSAGES, within_s=30)
        channel = control_channel(only_session(server))
        print("s     bufferedAmount  channel queue  sctp outbound  sctp sent  in flight B  dropped"
              "  peer's newest frame")
        peer.signal(signal.SIGSTOP)
        await print_queues(peer, channel, await_s=stopped_s, dropped=lambda: dropped(http, server))
        peer.signal(signal.SIGCONT)
        print(f"SIGCONT; the video is at frame {only_session(server).video.sent}")
        await print_queues(peer, channel, await_s=3.0, dropped=lambda: dropped(http, server))


async def print_queues(peer: PeerProcess, channel: RTCDataChannel, await_s: float,
                       dropped: Callable[[], Awaitable[float]]) -> None:
    sctp, start = channel.transport, time.monotonic()
    while (elapsed := time.monotonic() - start) < await_s:
        # aiortc's private queues, read here only to show where the bytes wait
        print(f"{elapsed:4.1f}  {channel.bufferedAmount:14d}  {len(sctp._data_channel_queue):13d}  "
              f"{len(sctp._outbound_queue):13d}  {len(sctp._sent_queue):9d}  {sctp._flight_size:11d}"
              f"  {await dropped():7.0f}  {peer.last.frame:19d}", flush=True)
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    loopback_only(pytest.MonkeyPatch())  # for as long as this process runs
    asyncio.run(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0))
