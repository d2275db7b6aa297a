"""The worker processes of `lipstream serve --workers N`: spawning, readiness, restarts, shutdown.

One Python process cannot use two cores for sessions (the GIL, render and encoder threads contend),
so the front (`front.py`) runs N whole servers as children, each on a unix socket in a private
temporary folder. A worker owns its sessions end to end: its own aiortc gathers its own ICE
candidates, so the SDP answer it returns points the peer straight at it and media never crosses
a process.

A worker reads its config from its stdin pipe and exits when that pipe closes, which the kernel
does whenever the front exits, however it exits (SIGTERM, a crash, SIGKILL): no orphan outlives it.
"""

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import aiohttp

from lipstream.errors import LipstreamError
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.front_health import WorkerHealth, WorkerStates
from lipstream.streaming.front_metrics import FrontMetrics, counters_only, gauge_value, sum_exposition

log = logging.getLogger(__name__)

WORKER_MODULE = "lipstream.streaming.worker_main"
READY_TIMEOUT_S = 180.0  # imports, avatar analysis and the capacity estimate, on a busy machine
READY_POLL_S = 0.2
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL: the front must be gone within ~5 s of its own SIGTERM
RESTART_DELAYS_S = (0.5, 2.0, 5.0)  # after consecutive failures: do not spin on a broken start
REQUEST_TIMEOUT_S = 30.0  # an offer's answer waits for ICE gathering
# A worker's /healthz and /metrics answer at once: one that has not within this is hung (or stopped),
# and every admission and the front's own /healthz wait on these reads
STATUS_TIMEOUT_S = 2.0
STATUS_READ = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
HEALTH_POLL_S = 1.0  # how stale the sessions and counters of a worker that crashes may be
SESSIONS_GAUGE = "lipstream_sessions"  # a worker's sessions running now, in its /metrics


class WorkerStartError(LipstreamError):
    """A worker exited or stayed silent before it answered /healthz."""


# What reading a worker's status meets when it does not answer (hung, exited, restarting)
STATUS_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, WorkerStartError)


def split_sessions(total: int | None, count: int) -> list[int | None]:
    """--max-sessions shared out: worker i gets total // count, the first ones one more each."""
    if total is None:
        return [None] * count  # each worker measures its share of the cores at start-up
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def worker_configs(config: ServeConfig, count: int) -> list[ServeConfig]:
    """What each worker serves with: the front's config, its share of sessions and cores."""
    cores_each = max(1, (os.cpu_count() or 1) // count)
    return [replace(config, worker_processes=1, max_sessions=share, capacity_cores=cores_each,
                    workers=config.workers or cores_each)
            for share in split_sessions(config.max_sessions, count)]


class WorkerProcess:
    """One child server: its process, its unix socket and an HTTP client bound to that socket."""

    def __init__(self, index: int, config: ServeConfig, folder: Path) -> None:
        self.index = index
        self.config = config
        self.socket_path = folder / f"worker-{index}.sock"
        self.health = WorkerHealth()
        self.pending = 0  # session offers the front has sent here and not yet seen answered
        self.starts = 0  # a restarted worker has none of the avatars uploaded to its previous life
        self.answering = False  # its last /healthz read was answered in time (else: hung)
        # Its /metrics as last read: while it is hung or has just exited, the front's sums show it
        # as it was then, and when it is retired its counters stay and its sessions are counted ended
        self.last_metrics = ""
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def running(self) -> bool:
        return self._http is not None and self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def room(self) -> int:
        return self.health.max_sessions - self.health.sessions - self.pending

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise WorkerStartError(f"worker {self.index} is not running")
        return self._http

    async def start(self) -> None:
        self.starts += 1
        await self._spawn()
        http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        try:
            await self._until_healthy(http)
        except BaseException:
            await http.close()
            await self.stop()
            raise
        self._http = http

    async def _spawn(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", WORKER_MODULE, str(os.getpid()), stdin=asyncio.subprocess.PIPE,
            start_new_session=True)  # Ctrl-C reaches the front only, which then stops the workers
        assert self._process.stdin is not None
        # the front's log level: `lipstream -v serve` makes the workers verbose too
        level = logging.getLogger().getEffectiveLevel()
        self._process.stdin.write(pickle.dumps((self.index, self.config, str(self.socket_path), level)))
        await self._process.stdin.drain()  # the pipe stays open: its end is the worker's end

    async def _until_healthy(self, http: aiohttp.ClientSession) -> None:
        assert self._process is not None
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while self._process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                if await self._read_health(http):
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise WorkerStartError(f"worker {self.index} did not answer within {READY_TIMEOUT_S:.0f} s "
                                       "of starting: the machine may be overloaded")
            await asyncio.sleep(READY_POLL_S)
        raise WorkerStartError(f"worker {self.index} exited with code {self._process.returncode} "
                               "while starting (its reason is above)")

    async def refresh(self) -> bool:
        """Read /healthz again; False (and no room) when the worker does not answer."""
        try:
            answered = self.running and await self._read_health(self.http)
        except STATUS_ERRORS:
            answered = False
        if not answered:
            self.answering, self.health = False, WorkerHealth(self.health.sessions)
        return answered

    async def read_metrics(self) -> None:
        """Read its /metrics into `last_metrics`; when it does not answer, they stay as last read.
        Every read is remembered: what a crash leaves in the front's sums is then never less than
        the front has already shown, and a summed counter never steps down."""
        try:
            async with self.http.get("http://worker/metrics", timeout=STATUS_READ) as response:
                text = await response.text()
        except STATUS_ERRORS:
            return
        if self.running and response.status == 200:  # (exited while answering: maybe retired already)
            self.last_metrics = text

    def retire(self) -> tuple[str, int]:
        """It exited: its counters and its sessions, as last read, handed over and forgotten here.
        Both come from one read, so its sessions leave the gauge as they join the ended ones."""
        counters, sessions = counters_only(self.last_metrics), gauge_value(self.last_metrics, SESSIONS_GAUGE)
        self.last_metrics, self.health, self.answering = "", WorkerHealth(), False
        return counters, int(sessions)

    async def _read_health(self, http: aiohttp.ClientSession) -> bool:
        async with http.get("http://worker/healthz", timeout=STATUS_READ) as response:
            if response.status != 200:
                return False
            body = await response.json()
        self.health = WorkerHealth(int(body["sessions"]), int(body["max_sessions"]), int(body["viewers"]))
        self.answering = True
        return True

    def admitted(self) -> None:
        """Count a session the worker just accepted, before its next /healthz says so."""
        self.health = replace(self.health, sessions=self.health.sessions + 1)

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self) -> None:
        """SIGTERM (it closes its sessions), SIGKILL after STOP_GRACE_S; idempotent."""
        # Not running from now on; its client closes only once the process is gone, so that the
        # reads in flight end as reads of a worker that went away (closing it under them raised
        # inside aiohttp, a 500 from the front's /healthz during shutdown)
        http, self._http = self._http, None
        try:
            await self._end_process()
        finally:
            if http is not None:
                await http.close()

    async def _end_process(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("worker %d did not stop within %.0f s: killed", self.index, STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class Workers:
    """The front's children: started together, each watched and restarted when it exits."""

    def __init__(self, config: ServeConfig, count: int, metrics: FrontMetrics) -> None:
        self._metrics = metrics
        self._folder = Path(tempfile.mkdtemp(prefix="lipstream-workers-"))  # mode 0700: private
        self.all = [WorkerProcess(i, c, self._folder) for i, c in enumerate(worker_configs(config, count))]
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        # Counters of workers that exited, so that summed counters do not step down at a restart
        self.retired_counters = ""

    async def start(self) -> None:
        starting = [asyncio.ensure_future(w.start()) for w in self.all]
        try:
            await asyncio.gather(*starting)
        except BaseException:  # one failed: the others must not go on starting behind our back
            for task in starting:
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
            await self.stop()
            raise
        self._watchers = [asyncio.create_task(self._watch(w), name=f"watch-worker-{w.index}")
                          for w in self.all]

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.all if w.running]

    def states(self) -> WorkerStates:
        """What the workers are doing, as of their last /healthz reads."""
        if self._stopping:
            return WorkerStates(stopping=len(self.all))
        running = self.running()
        serving = sum(w.answering for w in running)
        return WorkerStates(serving=serving, hung=len(running) - serving,
                            restarting=len(self.all) - len(running))

    def expositions(self) -> list[str]:
        """Every worker's /metrics as last read, and the counters of those that exited (no await
        between: a worker retired meanwhile would be counted twice, or not at all)."""
        return [*(w.last_metrics for w in self.all), self.retired_counters]

    async def _watch(self, worker: WorkerProcess) -> None:
        failures = 0
        while not self._stopping:
            code = await self._wait_watching(worker)
            if self._stopping:
                return
            counters, sessions = worker.retire()
            self.retired_counters = sum_exposition([self.retired_counters, counters])
            self._metrics.sessions_ended.labels("worker_exited").inc(sessions)
            log.error("worker %d (pid %s) exited with code %s; its %d sessions ended; restarting",
                      worker.index, worker.pid, code, sessions)
            await worker.stop()
            failures = await self._restart(worker, failures)

    async def _wait_watching(self, worker: WorkerProcess) -> int:
        """Wait for the worker to exit, reading its health and counters meanwhile (if it crashes,
        its sessions are counted as ended and its counters kept)."""
        exited = asyncio.ensure_future(worker.wait())
        try:
            while not (await asyncio.wait({exited}, timeout=HEALTH_POLL_S))[0]:
                await worker.refresh()
                await worker.read_metrics()
            return exited.result()
        finally:
            exited.cancel()

    async def _restart(self, worker: WorkerProcess, failures: int) -> int:
        """Start the worker again after a delay that grows while starts keep failing."""
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)])
            try:
                await worker.start()
            except (WorkerStartError, OSError) as exc:
                failures += 1
                log.error("worker %d did not restart: %s", worker.index, exc or type(exc).__name__)
                continue
            self._metrics.worker_restarts.inc()
            log.info("worker %d restarted (pid %s)", worker.index, worker.pid)
            return 0
        return failures

    async def stop(self) -> None:
        """Stop watching, stop every worker, remove the sockets' folder; idempotent."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.all), return_exceptions=True)
        shutil.rmtree(self._folder, ignore_errors=True)
