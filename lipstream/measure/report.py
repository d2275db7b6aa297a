"""The latency measurement as a command: run it (against a URL or a spawned server), print one
table, write JSON and a PNG (per-onset latency and a stacked decomposition of the median)."""

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.constants import HOP_MS, VIDEO_FPS
from lipstream.engine.motion import load_motion_model
from lipstream.measure.latency import LatencyConfig, LatencyRun, OnsetLatency, measure_latency
from lipstream.measure.output import write_json
from lipstream.measure.server import loopback_only, spawned_server
from lipstream.streaming.clock import AUDIO_CHUNK_MS

FRAME_MS = 1000 / VIDEO_FPS
# NOTES.md: aiortc's video receiver holds each frame until the next one's first packet (this
# client). The server's own audio receive path adds no wait unless a packet is missing.
AIORTC_VIDEO_HOLD_MS = FRAME_MS
SERVER_STAGES = ("audio_in", "queue", "engine", "ready_margin")
BUSY_FRACTION = 0.1  # a server that skipped more frames than this was not keeping real time
BUSY_WARNING = " -- the server was not keeping real time (busy machine?): these latencies are not its own"


def run_latency(url: str | None, config: LatencyConfig, out: Path, token: str | None = None) -> LatencyRun:
    """Measure against `url` (with its `token`, if it needs one), or a `lipstream serve` spawned on
    a free loopback port if None."""
    loopback_only()
    if url is not None:
        run = measure_latency(url, config, token=token)
    else:
        with spawned_server("--max-sessions", "1") as target:
            run = measure_latency(target.url, config)
    summary = summarise(run)
    print_report(run, summary)
    write_outputs(run, summary, out)
    return run


def percentiles(values: list[float]) -> dict[str, float]:
    found = [v for v in values if not math.isnan(v)]
    if not found:
        return {"p50": math.nan, "p95": math.nan, "n": 0}
    return {"p50": round(float(np.percentile(found, 50)), 1),
            "p95": round(float(np.percentile(found, 95)), 1), "n": len(found)}


def decomposition(run: LatencyRun, to_rtp_p50_ms: float) -> dict[str, float]:
    """Where the median onset -> first RTP packet goes, from known delays and the server's
    stage means; what they do not explain (encoding, pacing, the network) is the remainder."""
    lookahead_ms = load_motion_model().lookahead_frames * HOP_MS
    parts = {"client packet (the onset's 20 ms chunk)": float(AUDIO_CHUNK_MS),
             "server inbox cushion": run.stage_means_ms.get("input_depth", 0.0),
             "model lookahead + one frame": lookahead_ms + FRAME_MS,
             **{f"server {stage}": run.stage_means_ms.get(stage, 0.0) for stage in SERVER_STAGES}}
    parts["rest: encode, send, network"] = to_rtp_p50_ms - sum(parts.values())
    return {name: round(ms, 1) for name, ms in parts.items()}


def injected_delay_recovered_ms(onsets: list[OnsetLatency]) -> float:
    """Median onset -> RTP of the delayed bursts minus that of the others (nan if none delayed)."""
    return delay_recovered_ms([(o.injected_delay_ms, o.to_rtp_ms) for o in onsets])


def delay_recovered_ms(measured: Sequence[tuple[float, float]]) -> float:
    """From (injected ms, measured ms) per onset: the median measured with a delay injected
    minus the median without (nan if either has no figure)."""
    def median(delayed: bool) -> float:
        found = [ms for injected, ms in measured if (injected > 0) == delayed]
        return float(np.nanmedian(found)) if found and not np.isnan(found).all() else math.nan

    return round(median(True) - median(False), 1)


def summarise(run: LatencyRun) -> dict[str, Any]:
    """Percentiles over the onsets sent without an injected delay, and the self-check."""
    plain = [o for o in run.onsets if o.injected_delay_ms == 0]
    to_rtp = percentiles([o.to_rtp_ms for o in plain])
    to_decoded = percentiles([o.to_decoded_ms for o in plain])
    facemesh = percentiles([o.facemesh_to_decoded_ms for o in plain])
    return {"injected_delay_ms": max(o.injected_delay_ms for o in run.onsets),
            "injected_delay_recovered_ms": injected_delay_recovered_ms(run.onsets),
            "to_rtp_ms": to_rtp, "to_decoded_ms": to_decoded, "facemesh_to_decoded_ms": facemesh,
            "first_frame_ms": run.first_frame_ms, "detector_agreement": run.detector_agreement,
            "server_not_in_time_fraction": round(run.skipped_fraction, 4),
            "decomposition_ms": decomposition(run, to_rtp["p50"]),
            "client_video_hold_ms": AIORTC_VIDEO_HOLD_MS}


def print_report(run: LatencyRun, summary: dict[str, Any]) -> None:
    print(f"{'onset s':>8} {'injected ms':>11} {'-> RTP ms':>10} {'-> decoded ms':>14} "
          f"{'FaceMesh: -> decoded ms':>24}")
    for o in run.onsets:
        print(f"{o.onset_s:>8.2f} {o.injected_delay_ms:>11.0f} {o.to_rtp_ms:>10.1f} {o.to_decoded_ms:>14.1f} "
              f"{o.facemesh_to_decoded_ms:>24.1f}")
    for name in ("to_rtp_ms", "to_decoded_ms", "facemesh_to_decoded_ms"):
        s = summary[name]
        print(f"onset {name[:-3].replace('_', ' ')}: p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms "
              f"({s['n']} onsets)")
    if summary["injected_delay_ms"]:
        print(f"self-check: {summary['injected_delay_ms']:.0f} ms injected into every other onset, "
              f"{summary['injected_delay_recovered_ms']:.1f} ms measured (medians)")
    print(f"new session, POST -> first frame decoded: {run.first_frame_ms:.1f} ms")
    print(f"mouth detector agrees with FaceMesh on {run.detector_agreement * 100:.1f}% of frames")
    busy = BUSY_WARNING if run.skipped_fraction > BUSY_FRACTION else ""
    print(f"server frames during the run: {run.server_frames}; not rendered in time: "
          f"{run.skipped_fraction * 100:.1f}%{busy}")
    print("median onset -> RTP, decomposed (ms): "
          + ", ".join(f"{k} {v:.1f}" for k, v in summary["decomposition_ms"].items()))


def write_outputs(run: LatencyRun, summary: dict[str, Any], out: Path) -> None:
    """OUT.json, and OUT.png when matplotlib is installed."""
    json_path = out.with_suffix(".json")
    write_json(json_path, {"summary": summary, "run": asdict(run)})
    png_path = out.with_suffix(".png")
    print(f"wrote {json_path}" + (f" and {png_path}" if plot(run, summary, png_path) else " (no matplotlib)"))


def plot(run: LatencyRun, summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    t = [o.onset_s for o in run.onsets]
    for label, values in (("-> first RTP packet", [o.to_rtp_ms for o in run.onsets]),
                          ("-> decoded", [o.to_decoded_ms for o in run.onsets]),
                          ("-> decoded (FaceMesh)", [o.facemesh_to_decoded_ms for o in run.onsets])):
        left.plot(t, values, marker="o", label=label)
    left.set(xlabel="onset, s of sent audio", ylabel="ms after onset", title="speech onset -> mouth opens")
    left.legend()
    left.grid(alpha=0.3)
    bottom = 0.0
    for name, ms in summary["decomposition_ms"].items():
        right.bar(0, ms, bottom=bottom, label=f"{name} {ms:.0f}")
        bottom += ms
    right.set(xticks=[], ylabel="ms", title="median onset -> RTP")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
