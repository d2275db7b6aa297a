"""Receive video without decoding it: frames are counted from RTP arrivals instead.

On a 2-core machine, decoding the avatar next to the server would take the CPU the server is
measured on; a soak only needs to know that frames arrive and when.
"""

from typing import Any

import aiortc.rtcrtpreceiver
from aiortc.codecs.base import Decoder


class CountingOnlyDecoder(Decoder):
    def decode(self, encoded_frame: Any) -> list[Any]:
        return []


def skip_video_decoding() -> None:
    """From now on, every aiortc receiver in this process decodes audio only."""
    get_decoder = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]

    def decoder(codec: Any) -> Decoder:
        video = getattr(codec, "mimeType", "").startswith("video/")
        return CountingOnlyDecoder() if video else get_decoder(codec)

    aiortc.rtcrtpreceiver.get_decoder = decoder  # type: ignore[attr-defined]
