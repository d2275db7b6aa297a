"""H.264 against VP8 for the server's video senders: CPU per frame, bitrate and picture, A/B.

The same frames and the same interleaved loop as `benchmarks/vp8.py` (a talking face, and a photo
panning a pixel a frame), encoded through aiortc's sender code path (encode + RTP packetisation)
by: lipstream's VP8 (shipped tuning), aiortc's own H.264 (x264 "medium", 1 Mbit/s start) and
lipstream's H.264 at several x264 presets (VP8's rates, constant rate, one thread); and both
lipstream codecs at the rates a receiver's estimate can ask for. Per candidate: the process's CPU
ms per frame (all threads: aiortc's own x264 runs several), kbit/s, PSNR and SSIM of the decoded
frames against the sent ones. NVENC is not measured here (no GPU): see docs/gpu.md.

    python benchmarks/codecs.py [--frames 300] [--size 512] [--table presets|bitrate]
"""

import time
from collections.abc import Callable
from dataclasses import asdict

from aiortc.codecs.h264 import H264Encoder, h264_depayload
from vp8 import BITRATES, NO_CEILING_BITS_PER_PIXEL, Codec, parse, run_tables, tuned_codec, uncapped, vp8

from lipstream.streaming.codecs import H264_TUNING, H264Tuning, TunedH264Encoder

PRESETS = ("ultrafast", "superfast", "veryfast", "faster")


def h264(tuning: H264Tuning | None = H264_TUNING, bitrate: int | None = None) -> Codec:
    """aiortc's own H.264 (tuning None) or lipstream's, started at `bitrate`."""
    return tuned_codec(H264Encoder, TunedH264Encoder, "h264", h264_depayload, tuning, bitrate)


def h264_uncapped(rate: int) -> Codec:
    return h264(H264Tuning(max_bits_per_pixel=NO_CEILING_BITS_PER_PIXEL), rate)


TABLES: dict[str, dict[str, Codec]] = {
    "presets": {"VP8 lipstream": vp8(), "H.264 aiortc": h264(None),
                **{f"H.264 {preset}": h264(H264Tuning(x264_preset=preset)) for preset in PRESETS}},
    "bitrate": {**{f"VP8 {rate // 1000}k": vp8(uncapped(), rate) for rate in BITRATES},
                **{f"H.264 {rate // 1000}k": h264_uncapped(rate) for rate in BITRATES}},
}


def main() -> None:
    args = parse(__doc__.splitlines()[0], TABLES, "benchmarks/results/codecs.json")
    chosen = {name: TABLES[name] for name in args.table or TABLES}
    clock: Callable[[], float] = time.process_time  # aiortc's own x264 encodes on several threads
    run_tables(chosen, args, clock, asdict(H264_TUNING))


if __name__ == "__main__":
    main()
