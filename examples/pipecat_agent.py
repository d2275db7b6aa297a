"""A local Pipecat pipeline with lipstream's face: an "agent" that says a fixed text (espeak-ng),
the LipstreamVideoService, and an output that records what a transport would send into an MP4.

    python examples/pipecat_agent.py --text "Hello there." --out agent.mp4

pipecat-ai 0.0.49 (the release that installs beside mediapipe 0.10.21) has no SmallWebRTCTransport,
and its other video transports need a cloud service (Daily, LiveKit) or a desktop (Tk), so this
example records instead of serving.
"""

import argparse
import asyncio
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from pipecat.frames.frames import EndFrame, Frame, OutputImageRawFrame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from scipy.io import wavfile

from lipstream import SAMPLES_PER_VIDEO_FRAME, Avatar, Engine
from lipstream.engine.audio import AudioIn
from lipstream.integrations.pipecat import FRAME_NS, LipstreamVideoService
from lipstream.streaming.files import Mp4Writer

TTS_CHUNK_MS = 20


def espeak(text: str) -> list[TTSAudioRawFrame]:
    """The agent's speech as a streaming TTS would push it: 20 ms int16 frames."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "say.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        rate, pcm = wavfile.read(path)
    step = rate * TTS_CHUNK_MS // 1000
    return [TTSAudioRawFrame(pcm[i : i + step].tobytes(), rate, 1) for i in range(0, pcm.size, step)]


class Recorder(FrameProcessor):
    """Writes each image at its frame and each audio frame at the same time, as a transport plays them."""

    def __init__(self, writer: Mp4Writer) -> None:
        super().__init__()
        self._writer = writer
        self._resampler = AudioIn()  # the file's audio track is 16 kHz

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            width, height = frame.size
            image = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
            self._writer.write_video(image, frame.pts // FRAME_NS)
        elif isinstance(frame, TTSAudioRawFrame):
            pcm = self._resampler.push(np.frombuffer(frame.audio, np.int16), frame.sample_rate)
            self._writer.write_audio(pcm, frame.pts // FRAME_NS * SAMPLES_PER_VIDEO_FRAME)
        await self.push_frame(frame, direction)


async def main(text: str, out: Path, seconds: float) -> None:
    avatar = Avatar.default()
    with Mp4Writer(out, avatar.image.shape[0]) as writer:
        face = LipstreamVideoService(Engine(avatar))
        task = PipelineTask(Pipeline([face, Recorder(writer)]), PipelineParams(allow_interruptions=True))
        running = asyncio.create_task(PipelineRunner().run(task))
        await task.queue_frames([*espeak(text), TTSStoppedFrame()])
        await asyncio.sleep(seconds)
        await task.queue_frame(EndFrame())
        await running
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", default="Hello! I am a talking face in a Pipecat pipeline.")
    parser.add_argument("--out", type=Path, default=Path("agent.mp4"))
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the pipeline runs")
    args = parser.parse_args()
    asyncio.run(main(args.text, args.out, args.seconds))
