"""A publisher in its own process, so that a test can freeze it (SIGSTOP) and its SCTP stops
acknowledging what the server sends, as a stopped client process or a hostile one's would.

    python -m tests.stalled_peer URL

It publishes silence with the control stream open (`Publisher(controls=True)`), and prints one
line per second to stdout: `messages N frame F`, the control messages received so far and the
newest one's frame index. ICE stays on 127.0.0.1, as in the tests (tests/serving.py).
"""

import asyncio
import sys

import aiohttp
import pytest

from lipstream.streaming.client import Publisher
from tests.serving import SILENCE, loopback_only

REPORT_PERIOD_S = 1.0


async def publish_and_report(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        publisher = Publisher(url, SILENCE, controls=True)
        await publisher.start(http)
        while True:
            messages = publisher.control_messages
            frame = messages[-1]["frame"] if messages else -1
            print(f"messages {len(messages)} frame {frame}", flush=True)
            await asyncio.sleep(REPORT_PERIOD_S)


if __name__ == "__main__":
    loopback_only(pytest.MonkeyPatch())  # for as long as this process runs
    asyncio.run(publish_and_report(sys.argv[1]))
