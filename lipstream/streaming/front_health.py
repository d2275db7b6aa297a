"""The front's /healthz: its workers' load summed, and how many of them serve.

A load balancer reads the status code: 200 while at least one worker serves ("ok", or "degraded"
when others are hung or restarting: the front admits only to the serving ones, and `max_sessions`
counts only their room), 503 when none does ("unavailable", with Retry-After) or when the front is
shutting down ("stopping"). The body says the rest: `workers` counts the serving workers (it
counted every running one, a hung one too), `worker_states` what every worker is doing.
"""

from dataclasses import asdict, dataclass

from aiohttp import web


@dataclass(frozen=True)
class WorkerHealth:
    """A worker's /healthz, as last read by the front."""

    sessions: int = 0
    max_sessions: int = 0
    viewers: int = 0


@dataclass(frozen=True)
class WorkerStates:
    """How many workers are in each state; they add up to the front's --workers."""

    serving: int = 0  # answered its /healthz just now
    hung: int = 0  # alive, but did not answer within the status timeout (stopped, stuck, swamped)
    restarting: int = 0  # exited; being started again
    stopping: int = 0  # being stopped with the front

    @property
    def status(self) -> str:
        if self.stopping:
            return "stopping"
        if not self.serving:
            return "unavailable"
        return "degraded" if self.hung or self.restarting else "ok"

    def none_serving(self) -> str:
        """Why no worker takes a session, in words (when `serving` is 0)."""
        if self.stopping:
            return "the server is shutting down"
        others = [f"{n} {state}" for state, n in (("hung", self.hung), ("restarting", self.restarting)) if n]
        return f"no worker is serving ({', '.join(others)})"


def health_response(states: WorkerStates, healths: list[WorkerHealth], retry_after_s: int) -> web.Response:
    """The front's /healthz answer: `healths` of the workers that run (a hung one's as last read)."""
    body: dict[str, object] = {
        "status": states.status,
        "sessions": sum(h.sessions for h in healths),
        "max_sessions": sum(h.max_sessions for h in healths),
        "viewers": sum(h.viewers for h in healths),
        "workers": states.serving,
        "worker_states": asdict(states),
    }
    if states.serving:  # (never while stopping)
        return web.json_response(body)
    if states.stopping:  # no retry here: the process is going away
        return web.json_response({"error": states.none_serving()} | body, status=503)
    retry = str(retry_after_s)
    return web.json_response({"error": f"{states.none_serving()}: retry in {retry} s"} | body,
                             status=503, headers={"Retry-After": retry})
