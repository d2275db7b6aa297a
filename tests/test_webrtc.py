"""A real aiortc peer talks to `lipstream serve` for 20 s on loopback and checks what comes back:
the frame rate, the mouth (FaceMesh on the received frames), and audio-video sync."""

import asyncio
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.engine import Engine
from lipstream.streaming.client import (
    Reception,
    fps_and_max_gap,
    received_audio,
    transport_offsets_s,
)
from lipstream.streaming.server import ServeConfig
from lipstream.training.evaluate import MouthMeter
from tests.conftest import espeak_wav
from tests.serving import loopback_only, record_session

SPEECH_S = 20.0
FRAME_S = 0.04


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence, so each vowel starts with a sharp onset."""
    loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory, speech_wav: Path) -> np.ndarray:
    """~20 s at 16 kHz: silence, a long "ah", silence, a sentence; repeated."""
    folder = tmp_path_factory.mktemp("webrtc")
    vowel = _trimmed(load_audio(espeak_wav(folder / "ah.wav", "aaaaah", "-s", "80", "-a", "200")))[:8000]
    sentence = _trimmed(load_audio(speech_wav))
    gap = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    pieces, at = [], 0
    while at < SPEECH_S * SAMPLE_RATE - sentence.size - 3 * gap.size:
        for piece in (gap, vowel, gap, sentence):
            pieces.append(piece / max(np.abs(piece).max(), 1e-6) * 0.5)
            at += piece.size
    return np.concatenate(pieces + [gap]).astype(np.float32)


@pytest.fixture(scope="module")
def reception(script: np.ndarray) -> Reception:
    pcm = script
    avatar = Avatar.default(AvatarConfig(size=256))  # the size FaceMesh reads below; 512 costs 4x
    config = ServeConfig(max_sessions=1, loopback_ice=False)

    with pytest.MonkeyPatch.context() as patch:
        loopback_only(patch)
        publisher = asyncio.run(record_session(pcm, config, keep_size=256, engine_factory=lambda a: Engine(a),
                                               load_avatar=lambda: avatar))
    return publisher.received


def test_frames_arrive_at_25_fps_without_gaps(reception: Reception) -> None:
    fps, max_gap_s = fps_and_max_gap(reception.video_arrival)
    assert len(reception.video_arrival) >= SPEECH_S * 25
    assert fps >= 24.5, f"{fps:.2f} fps"
    assert max_gap_s <= 0.1, f"a {max_gap_s * 1000:.0f} ms gap"
    assert set(np.diff(reception.video_pts).tolist()) == {3600}  # no frame index skipped


def test_audio_and_video_leave_together(reception: Reception) -> None:
    """Each frame's packets arrive with the audio of the same media time (before jitter buffers,
    which a receiver sizes by itself: it lines the streams up by their RTP timestamps)."""
    offsets_ms = transport_offsets_s(reception) * 1000
    median, p5, p95 = np.percentile(offsets_ms, [50, 5, 95])
    assert abs(median) <= 20 and p5 >= -20 and p95 <= 20, f"median {median:.1f}, 5-95% {p5:.1f}..{p95:.1f} ms"


def _frame_loudness(reception: Reception) -> np.ndarray:
    """RMS of the received audio that plays with each received frame (same media time)."""
    audio, rate = received_audio(reception)
    starts = (np.asarray(reception.video_pts) / 90_000 * rate).astype(int)
    step = int(FRAME_S * rate)
    return np.array([np.sqrt(np.mean(audio[s : s + step] ** 2)) if s + step <= audio.size else 0.0
                     for s in starts])


def _vowel_onsets_s(reception: Reception) -> list[float]:
    """Media times where received sound starts after >= 0.5 s of silence and stays loud for
    0.3 s: the "ah"s (the sentence starts with a lip closure, "Papa", so it is left out)."""
    audio, rate = received_audio(reception)
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    starts = [i for j, i in enumerate(loud) if j == 0 or i - loud[j - 1] > rate // 2]
    hop = rate // 50  # 20 ms
    sustained = [i for i in starts if all(np.sqrt(np.mean(audio[k : k + hop] ** 2)) > 0.03
                                          for k in range(i, i + 15 * hop, hop))]
    return [i / rate for i in sustained]


def test_mouth_opens_with_the_sound_and_closes_in_silence(reception: Reception) -> None:
    with MouthMeter() as meter:
        readings = [meter.read(image) for image in reception.images]
    assert np.mean([r.found for r in readings]) > 0.95, "FaceMesh lost the face in the received video"
    aperture = np.array([r.aperture for r in readings])
    loud = _frame_loudness(reception)
    speaking = loud > 0.05
    silent = np.convolve(loud > 0.005, np.ones(11), mode="same") == 0  # and for +-200 ms around
    assert speaking.sum() > 100 and silent.sum() > 100
    open_, shut = np.median(aperture[speaking]), np.median(aperture[silent])
    assert open_ > 2 * shut + 0.01, f"mouth aperture {open_:.3f} speaking vs {shut:.3f} silent"

    # Sync as a viewer sees it: a frame shows for 40 ms, so the best possible is that the first
    # half-open frame is the one on screen when the sound starts: its centre within 20 ms of the
    # onset. Received media times; add how much later the picture arrives than its sound.
    lag_s = float(np.median(transport_offsets_s(reception)))
    frame_starts = np.asarray(reception.video_pts) / 90_000
    half_open = shut + 0.5 * (open_ - shut)
    onsets = _vowel_onsets_s(reception)
    assert len(onsets) >= 3
    offsets_ms = []
    for onset in onsets:
        at = int(np.searchsorted(frame_starts, onset, side="right")) - 1
        first_open = at - 4 + int(np.argmax(aperture[at - 4 : at + 5] > half_open))
        offsets_ms.append((frame_starts[first_open] + FRAME_S / 2 + lag_s - onset) * 1000)
    assert all(abs(o) <= 20 for o in offsets_ms), f"mouth vs sound: {np.round(offsets_ms)} ms"
