"""Units of the pipeline. Every other number is derived from these."""


def exact_div(x: int, y: int) -> int:
    assert x % y == 0, f"{x} is not a multiple of {y}"
    return x // y


SAMPLE_RATE = 16_000  # Hz, the engine's audio rate
VIDEO_FPS = 25
SAMPLES_PER_VIDEO_FRAME = exact_div(SAMPLE_RATE, VIDEO_FPS)  # 640 at 16 kHz, 25 fps

HOP_MS = 10
HOP_SAMPLES = exact_div(SAMPLE_RATE * HOP_MS, 1000)  # 160: one mel frame per 10 ms
N_FFT = 400  # 25 ms analysis window
N_MELS = 80
MEL_FRAMES_PER_VIDEO_FRAME = exact_div(SAMPLES_PER_VIDEO_FRAME, HOP_SAMPLES)  # 4
MEL_FRAMES_PER_SECOND = exact_div(SAMPLE_RATE, HOP_SAMPLES)  # 100

VIDEO_CLOCK_RATE = 90_000  # Hz, RTP video clock
VIDEO_PTS_PER_FRAME = exact_div(VIDEO_CLOCK_RATE, VIDEO_FPS)  # 3600
