"""A real aiortc peer talks to `lipstream serve` for 20 s on loopback and checks what comes back:
the frame rate, the mouth (FaceMesh on the received frames), and audio-video sync."""

import asyncio
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.audio import AudioIn, load_audio
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.controls import JAW_OPEN
from lipstream.engine.engine import Engine
from lipstream.streaming.client import (
    Reception,
    realtime_fps,
    received_audio,
    transport_offsets_s,
)
from lipstream.streaming.server import ServeConfig
from lipstream.training.evaluate import MouthMeter
from tests.conftest import espeak_wav
from tests.serving import MachineLoad, loopback_only, record_session, seams

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


@dataclass(frozen=True)
class Recorded:
    reception: Reception
    load: MachineLoad  # what other programs took of the CPU meanwhile


@pytest.fixture(scope="module")
def recorded(script: np.ndarray, avatar: Avatar) -> Recorded:
    config = ServeConfig(max_sessions=1, loopback_ice=False)
    with pytest.MonkeyPatch.context() as patch, MachineLoad() as load:
        loopback_only(patch)
        publisher = asyncio.run(record_session(script, config, keep_size=256, **seams(avatar)))
    return Recorded(publisher.received, load)


def test_frames_arrive_at_25_fps_without_gaps(recorded: Recorded) -> None:
    reception = recorded.reception
    media_s = np.asarray(reception.video_pts) / 90_000
    arrival_s = np.asarray(reception.video_arrival)
    assert media_s[-1] >= SPEECH_S
    fps = realtime_fps(reception)
    assert fps >= 24.5, f"{fps:.2f} fps"
    # Pauses: in arrival, and frames the server skipped because its sender had stalled > 200 ms.
    gaps_ms = np.diff(arrival_s)[np.diff(arrival_s) > 0.1] * 1000
    skipped = int(np.sum(np.diff(reception.video_pts) // 3600 - 1))
    busy = recorded.load.others_cores
    said = f"gaps of {np.round(gaps_ms)} ms, {skipped} frames skipped; other programs used {busy:.1f} cores"
    if gaps_ms.size == 0 and skipped == 0:
        return
    assert busy >= 0.25, said  # a quiet machine: no excuse for any pause
    if busy < 1.0:  # others kept up to half the machine busy: pauses must stay rare and short
        assert gaps_ms.size <= 0.02 * arrival_s.size and np.all(gaps_ms < 400), said
        assert skipped <= 0.02 * arrival_s.size, said
    else:  # less than one core left for server and client together: pauses say nothing
        warnings.warn(f"pauses not judged: {said}", stacklevel=1)


def test_audio_and_video_leave_together(recorded: Recorded) -> None:
    """Each frame's packets arrive with the audio of the same media time (before jitter buffers,
    which a receiver sizes itself: it lines the streams up by their RTP timestamps)."""
    offsets_ms = transport_offsets_s(recorded.reception) * 1000
    median, p10, p90 = np.percentile(offsets_ms, [50, 10, 90])
    assert abs(median) <= 20, f"median {median:.1f} ms (10-90%: {p10:.1f}..{p90:.1f})"


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


def test_mouth_opens_with_the_sound_and_closes_in_silence(recorded: Recorded, avatar: Avatar) -> None:
    reception = recorded.reception
    with MouthMeter() as meter:
        readings = [meter.read(image) for image in reception.images]
    assert np.mean([r.found for r in readings]) > 0.95, "FaceMesh lost the face in the received video"
    aperture = np.array([r.aperture for r in readings])
    loud = _frame_loudness(reception)
    speaking = loud > 0.05
    silent = np.convolve(loud > 0.005, np.ones(11), mode="same") == 0  # and for +-200 ms around
    assert speaking.sum() > 50 and silent.sum() > 50
    open_, shut = np.median(aperture[speaking]), np.median(aperture[silent])
    assert open_ > 2 * shut + 0.01, f"mouth aperture {open_:.3f} speaking vs {shut:.3f} silent"

    # Sync by content, with sub-frame resolution: replay the received audio through an engine of
    # our own and find the shift between its jaw control and the mouth FaceMesh reads in the
    # received frames. 0 means frame n shows the mouth made from the audio that plays with it.
    index = np.asarray(reception.video_pts) // 3600  # frame numbers: a stalled sender skips some
    lag_frames = _best_lag_frames(aperture, index, _replayed_jaw(reception, avatar, int(index[-1]) + 1))
    picture_late_ms = float(np.median(transport_offsets_s(reception))) * 1000 - lag_frames * FRAME_S * 1000
    assert abs(lag_frames * FRAME_S * 1000) <= 20 and abs(picture_late_ms) <= 20, \
        f"content shift {lag_frames:+.2f} frames; picture {picture_late_ms:+.1f} ms after its sound"

    # The same, as an eye sees it at a vowel onset: the first half-open frame is on screen when the
    # sound starts (frame centre within 20 ms of it) or one frame before (the model looks 40 ms
    # ahead and may start opening early), never after.
    frame_starts = np.asarray(reception.video_pts) / 90_000
    half_open = shut + 0.5 * (open_ - shut)
    onsets = _vowel_onsets_s(reception)
    assert len(onsets) >= 3
    offsets_ms = []
    for onset in onsets:
        at = int(np.searchsorted(frame_starts, onset, side="right")) - 1
        first_open = at - 4 + int(np.argmax(aperture[at - 4 : at + 5] > half_open))
        offsets_ms.append((frame_starts[first_open] + FRAME_S / 2 - onset) * 1000)
    said = f"half-open frame centre - onset: {np.round(offsets_ms)}"
    if recorded.load.others_cores >= 1.0:  # renders skipped to keep time repeat a shut mouth: not judged
        if not all(-60 <= o <= 20 for o in offsets_ms):
            warnings.warn(f"onsets not judged: {said}; other programs used "
                          f"{recorded.load.others_cores:.1f} cores", stacklevel=1)
        return
    assert all(-60 <= o <= 20 for o in offsets_ms), said


def _replayed_jaw(reception: Reception, avatar: Avatar, n_frames: int) -> np.ndarray:
    """Jaw control per frame from the received audio (which starts with the server's primer)."""
    audio, rate = received_audio(reception)
    resampler = AudioIn()
    pcm = np.concatenate([resampler.push(audio, rate), resampler.flush()])
    engine, jaw = Engine(avatar), []
    for start in range(0, pcm.size, SAMPLES_PER_VIDEO_FRAME):
        engine.push_audio(pcm[start : start + SAMPLES_PER_VIDEO_FRAME], SAMPLE_RATE)
        while (frame := engine.pop_frame(render=False)) is not None:
            jaw.append(frame.controls[JAW_OPEN])
    return np.pad(np.array(jaw), (0, max(n_frames - len(jaw), 0)))[:n_frames]


def _best_lag_frames(aperture: np.ndarray, index: np.ndarray, jaw: np.ndarray, span: int = 3) -> float:
    """k maximising corr(aperture of frame n, jaw[n + k]), refined between frames by a parabola."""
    inner = (index >= span) & (index + span < jaw.size)
    corr = [np.corrcoef(aperture[inner], jaw[index[inner] + k])[0, 1] for k in range(-span, span + 1)]
    best = int(np.argmax(corr))
    assert 0 < best < 2 * span, f"no correlation peak within {span} frames: {np.round(corr, 2)}"
    left, mid, right = corr[best - 1 : best + 2]
    return best - span + 0.5 * (left - right) / (left - 2 * mid + right)
