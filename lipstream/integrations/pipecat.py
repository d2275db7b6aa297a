"""A Pipecat video service: the pipeline's TTS audio in, a talking face and that same audio out.

    pipeline = Pipeline([..., tts, LipstreamVideoService(Engine(Avatar.default())), transport.output()])

Built the way Pipecat's own avatar services are (Tavus, Simli): the service takes the TTS audio
frames out of the pipeline and pushes, 25 times a second, an `OutputImageRawFrame` (RGB) and the
`TTSAudioRawFrame` it was made from, one after the other, so the output transport receives picture
and sound together. The audio goes out bit-exact, at the rate the TTS made it; both frames carry
`pts = index * 40 ms` (Pipecat's pts are nanoseconds).

- `TTSStoppedFrame` ends the turn (`end_segment()`): its last frames are made at once.
- `StartInterruptionFrame` (the user barged in) drops the speech not yet shown (`clear()`); the
  mouth is back at rest within 3 frames.
- `EndFrame` or `CancelFrame` (also Pipecat's answer to a fatal error) closes the service's
  `AsyncEngine`: a pipeline rebuilt over the same Engine takes it on where it was.
- Between turns the face goes on at 25 fps (blinks, mouth at rest) but pushes no audio frames:
  Pipecat's output transports fill silence themselves and tell the pipeline that the bot stopped
  speaking only when its audio frames stop coming. A transport with `camera_out_is_live=True`
  shows each image as it comes, so it needs them all the time; one without repeats the last.

Pipecat 0.0.49 is the release this is written against (the last that installs beside
mediapipe 0.10.21's `protobuf<5`).
"""

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        ErrorFrame,
        OutputImageRawFrame,
        StartFrame,
        StartInterruptionFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.frames.frames import Frame as PipecatFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as error:  # the extra is optional: say how to get it
    raise ImportError("lipstream.integrations.pipecat needs Pipecat: "
                      "pip install 'lipstream[pipecat]'") from error

from lipstream.engine.audio import MAX_CHANNELS, check_rate
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS, exact_div
from lipstream.engine.engine import Engine
from lipstream.engine.engine import Frame as FaceFrame
from lipstream.errors import AudioError, LipstreamError
from lipstream.streaming.asyncengine import AsyncEngine
from lipstream.streaming.clock import Clock
from lipstream.streaming.pacing import PacingConfig

NS_PER_S = 1_000_000_000
FRAME_NS = exact_div(NS_PER_S, VIDEO_FPS)  # 40 ms in Pipecat's pts unit
# Beyond a frame and its lookahead, a turn starts with one more frame of audio: the resampler to 16 kHz
# holds a few samples back, and a TTS streaming at exactly real time never gets ahead again.
SPARE_SAMPLES = SAMPLES_PER_VIDEO_FRAME
BYTES_PER_SAMPLE = 2  # Pipecat's raw audio is 16-bit
IMAGE_FORMAT = "RGB"  # what Engine frames are, and what Pipecat transports read by default


class LipstreamVideoService(FrameProcessor):  # type: ignore[misc]  # Pipecat ships no type hints
    """Turns the TTS audio of a Pipecat pipeline into a talking face, with that audio, in sync.

    `paced=False` hands frames out as fast as the audio allows and makes no idle frames (tests,
    offline rendering); `pacing` tunes the paced frames' just-in-time start (`AsyncEngine`'s);
    `clock` replaces the monotonic clock of the pacing (tests).
    """

    def __init__(self, engine: Engine, *, paced: bool = True, pacing: PacingConfig | None = None,
                 clock: Clock | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._faces = AsyncEngine(engine, paced=paced, clock=clock, pacing=pacing)
        self._render_task: asyncio.Task[None] | None = None
        self._closed = False  # the AsyncEngine let the Engine go: the next pipeline's service may take it
        # A turn's first frame needs its lookahead: pushed chunk by chunk, the paced face would find
        # too little, flush the turn and show silence in the middle of its first word. So a turn's
        # audio is held until a frame, its lookahead and a spare frame are in, then pushed at once.
        self._cushion_s = (engine.latency_samples + SPARE_SAMPLES) / SAMPLE_RATE
        self._held: list[TTSAudioRawFrame] = []
        self._flowing = False  # the turn's start has been pushed: the rest goes straight in

    async def process_frame(self, frame: PipecatFrame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._push_speech(frame)  # it leaves again with the frame made from it
            return
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # first, so that the images follow it
            self._start()
            return
        if isinstance(frame, TTSStoppedFrame):
            await self._release()
            await self._faces.end_segment()
            self._flowing = False
        elif isinstance(frame, StartInterruptionFrame):
            self._held, self._flowing = [], False
            await self._faces.clear()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
        await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()

    async def _push_speech(self, frame: TTSAudioRawFrame) -> None:
        try:
            check_audio_frame(frame)
        except AudioError as error:  # one bad frame from a TTS: said upstream, the turn goes on
            await self.push_error(ErrorFrame(str(error)))
            return
        self._held.append(frame)
        if self._flowing or sum(map(duration_s, self._held)) >= self._cushion_s:
            await self._release()

    async def _release(self) -> None:
        """Push the held audio (one call per run of one format), and everything after it directly."""
        held, self._held = self._held, []
        self._flowing = self._flowing or bool(held)
        for run in runs_of_one_format(held):
            try:
                await self._faces.push_audio(np.concatenate([pcm_of(f) for f in run]),
                                             sample_rate=run[0].sample_rate)
            except LipstreamError as error:  # e.g. the rate changed within a turn: the message says how
                await self.push_error(ErrorFrame(str(error)))

    def _start(self) -> None:
        if self._render_task is None:
            self._render_task = self.get_event_loop().create_task(self._render())

    async def _stop(self) -> None:
        """Stop making frames and let the Engine go. Once only: EndFrame or CancelFrame, then Pipecat's
        cleanup, each come here, and by then the Engine may already be in the next service."""
        task, self._render_task = self._render_task, None
        # A fatal error's CancelFrame comes back inside the render task that pushed the error: that
        # task ends by itself, and awaiting it from itself would never return.
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # it ends with CancelledError
        if not self._closed:
            self._closed = True
            await self._faces.close()  # after the render task: nothing iterates it any more

    async def _render(self) -> None:
        try:
            async for face in self._faces:
                await self.push_frame(image_frame(face))
                if np.any(face.input_audio):  # speech, not the silence of an idle face
                    await self.push_frame(audio_frame(face))
        except LipstreamError as error:
            await self.push_error(ErrorFrame(str(error), fatal=True))


def check_audio_frame(frame: TTSAudioRawFrame) -> None:
    """AudioError unless the frame's bytes are whole 16-bit samples of its channels at a usable rate."""
    check_rate(frame.sample_rate)
    if not isinstance(frame.num_channels, int) or not 1 <= frame.num_channels <= MAX_CHANNELS:
        raise AudioError(f"TTS audio with {frame.num_channels!r} channels: give 1 to {MAX_CHANNELS}")
    if len(frame.audio) % (BYTES_PER_SAMPLE * frame.num_channels):
        raise AudioError(f"TTS audio of {len(frame.audio)} bytes is not whole 16-bit samples of "
                         f"{frame.num_channels} channel(s)")


def pcm_of(frame: TTSAudioRawFrame) -> npt.NDArray[np.int16]:
    """Pipecat's raw audio (16-bit little-endian, interleaved) as (samples,) or (samples, channels)."""
    pcm = np.frombuffer(frame.audio, dtype="<i2")
    return pcm if frame.num_channels == 1 else pcm.reshape(-1, frame.num_channels)


def duration_s(frame: TTSAudioRawFrame) -> float:
    return float(len(frame.audio) / (BYTES_PER_SAMPLE * frame.num_channels * frame.sample_rate))


def runs_of_one_format(frames: list[TTSAudioRawFrame]) -> list[list[TTSAudioRawFrame]]:
    """Consecutive frames grouped by (rate, channels): what one push can carry."""
    runs: list[list[TTSAudioRawFrame]] = []
    for frame in frames:
        if runs and (runs[-1][0].sample_rate, runs[-1][0].num_channels) == (frame.sample_rate,
                                                                             frame.num_channels):
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def image_frame(face: FaceFrame) -> OutputImageRawFrame:
    height, width = face.image.shape[:2]
    out = OutputImageRawFrame(image=face.image.tobytes(), size=(width, height), format=IMAGE_FORMAT)
    out.pts = face.index * FRAME_NS
    return out


def audio_frame(face: FaceFrame) -> TTSAudioRawFrame:
    """The samples pushed for this frame, as they were pushed (int16, the TTS's rate)."""
    pcm = face.input_audio.astype("<i2", copy=False)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    out = TTSAudioRawFrame(audio=pcm.tobytes(), sample_rate=face.input_rate, num_channels=channels)
    out.pts = face.index * FRAME_NS
    return out
