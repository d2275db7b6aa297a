"""Headless Debian Chromium as a real WebRTC peer, driven by pip playwright (never `playwright
install`: that downloads a browser). Flags from NOTES.md; the fake microphone plays a WAV."""

import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.measure.chromium import CHROMIUM_FLAGS, chromium_path

FAKE_MIC_RATE = 48_000  # 16-bit mono 48 kHz: the safest fake-microphone format (NOTES.md)


def chromium_executable() -> str:
    if path := chromium_path():
        return path
    pytest.skip("chromium is not installed (apt-get install chromium)")


def chromium_flags(fake_mic_wav: Path) -> list[str]:
    return [
        *CHROMIUM_FLAGS,
        "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic_wav}",
    ]


def write_fake_mic_wav(path: Path, audio_16k: np.ndarray) -> Path:
    """float32 16 kHz mono -> a 16-bit mono 48 kHz WAV (Chromium loops it; a 24-bit WAV would
    play silence without an error)."""
    frame = av.AudioFrame.from_ndarray(audio_16k.reshape(1, -1).astype(np.float32), format="flt",
                                       layout="mono")
    frame.sample_rate = SAMPLE_RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=FAKE_MIC_RATE)
    chunks = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes(np.concatenate(chunks).astype(np.int16).tobytes())
    return path


async def launch(playwright: Any, profile: Path, fake_mic_wav: Path, *extra_flags: str) -> Any:
    """A browser context with a fresh profile folder (no state from any earlier run)."""
    return await playwright.chromium.launch_persistent_context(
        str(profile), executable_path=chromium_executable(), headless=True,
        args=[*chromium_flags(fake_mic_wav), *extra_flags], viewport={"width": 800, "height": 1000})


# Receive-side numbers of a page's RTCPeerConnection (`pcExpression` evaluates to it).
INBOUND_STATS_JS = """async (pcExpression) => {
  const pc = eval(pcExpression);
  const out = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = {
      timestamp: s.timestamp, framesDecoded: s.framesDecoded, framesDropped: s.framesDropped,
      framesPerSecond: s.framesPerSecond, frameWidth: s.frameWidth, freezeCount: s.freezeCount,
      totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel,
      totalSamplesReceived: s.totalSamplesReceived, concealedSamples: s.concealedSamples,
    };
  });
  return out;
}"""


async def inbound_stats(page: Any, pc_expression: str) -> dict[str, dict[str, float]]:
    stats: dict[str, dict[str, float]] = await page.evaluate(INBOUND_STATS_JS, pc_expression)
    return stats


async def drop_file(page: Any, selector: str, path: Path, mime: str) -> None:
    """Drag-and-drop of a file, as a person does it: a `drop` event carrying a DataTransfer."""
    await page.evaluate("""async ([selector, bytes, name, mime]) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
      const zone = document.querySelector(selector);
      for (const type of ["dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
      }
    }""", [selector, list(path.read_bytes()), path.name, mime])


async def switch_microphone(page: Any) -> None:
    """Another microphone from the list (named once permission was given): same session, new track."""
    names = await page.eval_on_selector_all("#mic option", "options => options.map(o => o.text)")
    assert names and all(names), f"no named microphones after permission: {names}"
    before = await page.evaluate("window.lipstream.mic.getAudioTracks()[0].id")
    await page.select_option("#mic", index=len(names) - 1)
    await page.wait_for_function(f"window.lipstream.mic.getAudioTracks()[0].id !== '{before}'")
    sent = await page.evaluate("window.lipstream.pc.getSenders().find(s => s.track).track.id")
    assert sent == await page.evaluate("window.lipstream.mic.getAudioTracks()[0].id")


async def frames_decoded(page: Any) -> float:
    return (await inbound_stats(page, "window.lipstream.pc"))["video"]["framesDecoded"]
