"""The Chromium latency measurement as a command: run it (against a URL or a spawned server),
print one table with the pages side by side, write JSON."""

import asyncio
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lipstream.engine.avatar import Avatar
from lipstream.measure.browser_latency import BrowserConfig, BrowserRun, PageRun, measure_browser
from lipstream.measure.chromium import ChromiumMissing
from lipstream.measure.counting import skip_video_decoding
from lipstream.measure.mouth import MouthOpenDetector
from lipstream.measure.output import write_json
from lipstream.measure.report import BUSY_FRACTION, BUSY_WARNING, delay_recovered_ms, percentiles
from lipstream.measure.server import loopback_only, spawned_server


def run_browser_latency(url: str | None, config: BrowserConfig, out: Path,
                        token: str | None = None) -> BrowserRun:
    """Measure against `url` (its default avatar; with the server's `token`, if it has one), or a
    `lipstream serve` spawned on a free loopback port if None."""
    loopback_only()
    skip_video_decoding()  # the publisher's own video: only Chromium's is measured
    try:
        run = measure_at(url, config, MouthOpenDetector(Avatar.default()), token)
    except ChromiumMissing as missing:
        raise SystemExit(f"cannot measure through Chromium: {missing}") from None
    summary = summarise(run)
    print_report(run, summary)
    json_path = out.with_suffix(".json")
    write_json(json_path, {"summary": summary, "run": asdict(run)})
    print(f"wrote {json_path}")
    return run


def measure_at(url: str | None, config: BrowserConfig, detector: MouthOpenDetector,
               token: str | None = None) -> BrowserRun:
    if url is not None:
        return asyncio.run(measure_browser(url, config, detector, token))
    with spawned_server("--max-sessions", "1") as target:
        return asyncio.run(measure_browser(target.url, config, detector))


def page_summary(page: PageRun) -> dict[str, Any]:
    """Percentiles over the onsets sent without an injected delay, and the self-check."""
    onsets = page.onsets
    plain = [o for o in onsets if o.injected_delay_ms == 0]
    return {"onsets": len(page.onsets),
            "found": sum(not math.isnan(o.to_presented_ms) for o in page.onsets),
            "to_received_ms": percentiles([o.to_received_ms for o in plain]),
            "to_presented_ms": percentiles([o.to_presented_ms for o in plain]),
            "injected_delay_recovered_ms": {
                "received": delay_recovered_ms([(o.injected_delay_ms, o.to_received_ms) for o in onsets]),
                "presented": delay_recovered_ms([(o.injected_delay_ms, o.to_presented_ms) for o in onsets])},
            "frames": page.frames, "missed_frames": page.missed_frames,
            "clock_uncertainty_ms": page.clock_uncertainty_ms, "muted": page.muted,
            "jitter_buffer_targets_ms": page.targets}


def summarise(run: BrowserRun) -> dict[str, Any]:
    injected = max((o.injected_delay_ms for page in run.pages for o in page.onsets), default=0.0)
    return {"pages": {page.name: page_summary(page) for page in run.pages},
            "onsets_sent": run.onsets_sent, "injected_delay_ms": injected,
            "server_not_in_time_fraction": round(run.skipped_fraction, 4),
            "load_average_1min": round(os.getloadavg()[0], 2)}  # at the end: the machine is shared


def print_report(run: BrowserRun, summary: dict[str, Any]) -> None:
    print(f"{'page':>8} {'onsets':>7} {'-> received p50/p95 ms':>23} {'-> presented p50/p95 ms':>24} "
          f"{'frames':>7} {'missed':>7} {'clock +/- ms':>13}")
    for name, s in summary["pages"].items():
        received, presented = s["to_received_ms"], s["to_presented_ms"]
        print(f"{name:>8} {s['found']:>3}/{s['onsets']:<3} {received['p50']:>13.1f} / "
              f"{received['p95']:<7.1f} {presented['p50']:>14.1f} / {presented['p95']:<7.1f} "
              f"{s['frames']:>7} {s['missed_frames']:>7} {s['clock_uncertainty_ms']:>13.2f}"
              + (" (played muted)" if s["muted"] else ""))
    if summary["injected_delay_ms"]:
        print(f"self-check: {summary['injected_delay_ms']:.0f} ms injected into every other onset; measured "
              + "; ".join(f"{name}: {s['injected_delay_recovered_ms']['presented']:.1f} ms presented, "
                          f"{s['injected_delay_recovered_ms']['received']:.1f} ms received"
                          for name, s in summary["pages"].items()))
    busy = BUSY_WARNING if run.skipped_fraction > BUSY_FRACTION else ""
    print(f"onsets sent: {run.onsets_sent} (those before a page presented its first frame are left out); "
          f"server frames during the run: {run.server_frames}; not rendered in time: "
          f"{run.skipped_fraction * 100:.1f}%{busy}; load average {summary['load_average_1min']:.1f}")
