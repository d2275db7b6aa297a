"""Receive media without decoding it: frames and packets are counted from RTP arrivals instead.

On a 2-core machine, decoding the avatar (or its Opus) next to the server would take the CPU the
server is measured on; a soak or a capacity run only needs to know that media arrives and when.
The RTP path itself is untouched: jitter buffers, receiver reports and bandwidth estimates still
run, so the server sees the same peer.
"""

from typing import Any

import aiortc.rtcrtpreceiver
from aiortc.codecs.base import Decoder


class CountingOnlyDecoder(Decoder):
    def decode(self, encoded_frame: Any) -> list[Any]:
        return []


def skip_video_decoding() -> None:
    """From now on, no aiortc receiver in this process decodes video."""
    _skip_decoding("video/")


def skip_audio_decoding() -> None:
    """From now on, no aiortc receiver in this process decodes audio (tests that read the received
    sound must not call this)."""
    _skip_decoding("audio/")


def _skip_decoding(mime_prefix: str) -> None:
    get_decoder = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]

    def decoder(codec: Any) -> Decoder:
        skipped = getattr(codec, "mimeType", "").lower().startswith(mime_prefix)
        return CountingOnlyDecoder() if skipped else get_decoder(codec)

    aiortc.rtcrtpreceiver.get_decoder = decoder  # type: ignore[attr-defined]
