"""Receive media without decoding it: frames and packets are counted from RTP arrivals instead.

On a 2-core machine, decoding the avatar (or its Opus) next to the server would take the CPU the
server is measured on; a soak or a capacity run only needs to know that media arrives and when.
The RTP path itself is untouched: jitter buffers, receiver reports and bandwidth estimates still
run, so the server sees the same peer. What is cut is everything after the jitter buffer: aiortc
hands each reassembled frame to a decoder thread through a `queue.Queue`, and each wake-up is a
GIL hand-off with the event loop (a third of a counting client's non-idle samples in py-spy, most
of it waiting for the GIL; its CPU, old and new clients interleaved: ~0.75x).
"""

import queue
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

_SKIPPED_KINDS: set[str] = set()  # "audio", "video": receivers of these kinds made from now on
_RECEIVER_INIT = RTCRtpReceiver.__init__  # aiortc's own, put back by decode_everything()


class _StopOnlyQueue(queue.Queue[Any]):
    """A decoder thread's input that lets through only aiortc's stop signal (None): the thread
    sleeps until the receiver stops, and then ends (and ends its track) as usual."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)


def skip_video_decoding() -> None:
    """From now on, no aiortc receiver in this process decodes video."""
    _skip_decoding("video")


def skip_audio_decoding() -> None:
    """From now on, no aiortc receiver in this process decodes audio (tests that read the received
    sound must not call this)."""
    _skip_decoding("audio")


def decode_everything() -> None:
    """Undo the skip_*_decoding calls: receivers made from now on decode every kind again (for a
    test that skips decoding in a process whose later tests read what they receive)."""
    _SKIPPED_KINDS.clear()
    RTCRtpReceiver.__init__ = _RECEIVER_INIT  # type: ignore[method-assign]


def _skip_decoding(kind: str) -> None:
    if not _SKIPPED_KINDS:
        _wrap_receiver_init()
    _SKIPPED_KINDS.add(kind)


def _wrap_receiver_init() -> None:
    init = RTCRtpReceiver.__init__

    def counting_init(receiver: RTCRtpReceiver, kind: str, transport: RTCDtlsTransport) -> None:
        init(receiver, kind, transport)
        if kind in _SKIPPED_KINDS:  # aiortc's private queue, swapped before its thread starts
            receiver._RTCRtpReceiver__decoder_queue = _StopOnlyQueue()  # type: ignore[attr-defined]

    RTCRtpReceiver.__init__ = counting_init  # type: ignore[method-assign, assignment]
