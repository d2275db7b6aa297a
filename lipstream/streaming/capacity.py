"""How many sessions this machine can run: measured once at start-up, used as the default limit.

A session costs, per video frame, one engine step (motion model + render, timed on speech-like
audio, as a mean) and one video encode; a core has FRAME_S (40 ms) to spend per frame per
session. So

    max_sessions = floor(cores * FRAME_S / (engine_s + encode_s) * SAFETY)

SAFETY leaves room for what is not timed here: Opus decode and encode, RTP/SRTP, the event loop,
and viewers (each viewer encodes its own copy of the video).
"""

import math
import os
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from lipstream.engine.audio import speechlike
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_PTS_PER_FRAME
from lipstream.streaming.clock import FRAME_S
from lipstream.streaming.encoders import MIME_TYPES
from lipstream.streaming.worker import FrameEngine

SAFETY = 0.5
WARMUP_FRAMES = 3
TIMED_FRAMES = 25  # a second of video: the head's moves (on ~36% of frames) are in the mean
# What one worker process holds once started (the engine, onnxruntime, OpenCV, aiortc): 315 MB
# resident, measured with `lipstream serve --workers 2` on a 2-core machine, rounded up.
WORKER_START_MB = 320
# More server processes than this per core only add memory and hand-offs: 4 workers on 2 cores
# served fewer sessions than 2 did (docs/profile.md, section 12).
MAX_WORKERS_PER_CORE = 4
MEMINFO = "/proc/meminfo"
KB_PER_MB = 1024


@dataclass(frozen=True)
class Capacity:
    cores: int
    engine_ms: float  # per frame, rendered
    encode_ms: float  # per frame, in the codec the senders prefer
    max_sessions: int

    def describe(self) -> str:
        return (f"capacity: {self.cores} cores, {self.engine_ms:.1f} ms engine + {self.encode_ms:.1f} ms "
                f"encode per frame -> max {self.max_sessions} sessions")


def workers_problem(count: int) -> str | None:
    """Why `count` worker processes cannot run here (one line for --workers), or None. Each one
    loads the whole engine, so a count far past the cores (a typo, 1000) would take the machine's
    memory before a session starts."""
    cores = os.cpu_count() or 1
    if count > cores * MAX_WORKERS_PER_CORE:
        return (f"--workers {count} is more than {MAX_WORKERS_PER_CORE} per core "
                f"({cores} cores here): use at most {cores * MAX_WORKERS_PER_CORE}")
    free_mb = available_memory_mb()
    if free_mb is not None and count * WORKER_START_MB > free_mb:
        return (f"--workers {count} needs ~{count * WORKER_START_MB} MB ({WORKER_START_MB} MB each) "
                f"and {free_mb} MB is available: use at most {max(1, free_mb // WORKER_START_MB)}")
    return None


def available_memory_mb() -> int | None:
    """MemAvailable from the kernel (Linux), or None where it does not say."""
    try:
        with open(MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // KB_PER_MB
    except OSError:
        pass
    return None


def estimate_capacity(engine: FrameEngine, cores: int | None, video_codec: str) -> Capacity:
    """Time a throwaway engine on a second of speech-like audio and the senders' encoder of
    `video_codec` (encoders.py: VP8 or H264) on a moving picture (~0.5 s in all)."""
    cores = cores or os.cpu_count() or 1
    engine.push_audio(np.zeros(engine.latency_samples, np.float32), SAMPLE_RATE)
    frame = engine.pop_frame()
    assert frame is not None
    engine_s = _time_engine(engine)
    encode_s = _time_encoder(frame.image, video_codec)
    per_frame_s = engine_s + encode_s
    sessions = max(1, math.floor(cores * FRAME_S / per_frame_s * SAFETY))
    return Capacity(cores, engine_s * 1000, encode_s * 1000, sessions)


def _time_engine(engine: FrameEngine) -> float:
    """Mean seconds of one engine step as speech drives it: the mouth moves every frame and the
    head's whole-frame move comes on about a third of them. A worker pays every step, so the mean;
    silence's median (the estimate before) left both out: 0.7-1.0 ms against 3.2-4.6 on a quiet
    2-core machine, and the default admitted 10 sessions where 6 were at the edge."""
    frame = SAMPLES_PER_VIDEO_FRAME
    speech = speechlike((WARMUP_FRAMES + TIMED_FRAMES) * FRAME_S)
    times = []
    for i in range(WARMUP_FRAMES + TIMED_FRAMES):
        start = time.perf_counter()
        engine.push_audio(speech[i * frame : (i + 1) * frame], SAMPLE_RATE)
        engine.pop_frame()
        if i >= WARMUP_FRAMES:
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def _time_encoder(image: np.ndarray, video_codec: str) -> float:
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=MIME_TYPES[video_codec], clockRate=90000,
                                                payloadType=96))
    times = []
    for i in range(WARMUP_FRAMES + TIMED_FRAMES):
        # a moving picture, as a talking face is: a static one encodes almost for free
        frame = av.VideoFrame.from_ndarray(np.roll(image, i % 8, axis=0), format="rgb24")
        # as the session's track stamps them: aiortc's H.264 encoder needs the time base
        frame.pts, frame.time_base = i * VIDEO_PTS_PER_FRAME, VIDEO_TIME_BASE
        start = time.perf_counter()
        encoder.encode(frame)
        if i >= WARMUP_FRAMES:
            times.append(time.perf_counter() - start)
    return float(np.median(times))
