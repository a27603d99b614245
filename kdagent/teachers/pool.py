"""A pool of OpenAI-compatible endpoints serving one teacher model, load-balanced with a concurrency cap per endpoint.

Each request goes to the healthy endpoint with the fewest requests in flight (at most `concurrency` each).
An endpoint that fails (connection refused or dropped, deadline passed, HTTP 5xx, 429) is taken out of
rotation and its request is sent again to another endpoint; a taken-out endpoint is probed (GET
`{base_url}/models`) once its back-off has passed, 1 s after the failure and doubling to 30 s, and brought
back when the probe answers. A reply is returned to exactly one caller (the request that sent it), so a
request is never lost or counted twice when an endpoint dies under it. A request gives up, with its last
error, when it has failed `max_retries + number of endpoints` times (each endpoint once, and the retries one
endpoint would get), or when every endpoint is out of rotation and has failed (a request or a probe) more than
`max_retries` times since its last reply: then the pool is down and requests fail at once, until a probe brings
an endpoint back.
An error that is the request's own (a 400, a 404 for an unknown model) is raised at once, not retried.
"""

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx  # imported here, once: importing it from the request threads races
import openai

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


def shown(url: str) -> str:
    """An endpoint's URL as logged: without credentials or query (a key may ride in either)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def endpoint_fault(exc: BaseException) -> bool:
    """Whether an error says the endpoint, not the request, is at fault (another endpoint may answer)."""
    if isinstance(exc, (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)):
        return True  # APITimeoutError is an APIConnectionError
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429's Retry-After asks for, if it says."""
    response = getattr(exc, "response", None)
    try:
        return float(response.headers.get("retry-after")) if response is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class Endpoint:
    url: str
    chat: object  # a LangChain chat model (its own retries off: the pool retries elsewhere)
    probe: Callable[[], bool]
    in_flight: int = 0
    served: int = 0  # replies returned
    in_rotation: bool = True
    failures: int = 0  # times taken out (a failed request or probe) since its last reply; sets the back-off
    failed: int = 0  # failed requests in all
    retry_at: float = 0.0
    probing: bool = False
    last_error: BaseException | None = field(default=None, repr=False)


class EndpointPool:
    """Stands where one chat model would (`invoke(messages, **kwargs)`), over several endpoints."""

    def __init__(self, endpoints: list[Endpoint], concurrency: int, max_retries: int):
        self.endpoints = endpoints
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.max_in_flight = concurrency * len(endpoints)
        self.events: list[str] = []  # endpoints taken out of rotation and brought back, in order
        self._cond = threading.Condition()
        self._turn = 0  # round-robin among equally loaded endpoints

    def __repr__(self) -> str:
        return f"EndpointPool({[shown(e.url) for e in self.endpoints]}, concurrency={self.concurrency})"

    def stats(self) -> dict[str, dict]:
        with self._cond:
            return {
                shown(e.url): {"served": e.served, "failed": e.failed, "in_rotation": e.in_rotation}
                for e in self.endpoints
            }

    def invoke(self, messages, **kwargs):
        failed = 0
        while True:
            endpoint = self._acquire()
            try:
                result = endpoint.chat.invoke(messages, **kwargs)
            except Exception as exc:
                fault = endpoint_fault(exc)
                self._release(endpoint, exc if fault else None)
                if not fault:
                    raise
                failed += 1
                if failed >= self.max_retries + len(self.endpoints):
                    raise
                continue
            self._release(endpoint, None, served=True)
            return result

    # -- choosing an endpoint ----------------------------------------------------------------------------------
    def _acquire(self) -> Endpoint:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [e for e in self.endpoints if not e.in_rotation and not e.probing and e.retry_at <= now]
                if due:
                    self._probe(due[0])  # releases the lock while it waits for the answer
                    continue
                healthy = [e for e in self.endpoints if e.in_rotation]
                free = [e for e in healthy if e.in_flight < self.concurrency]
                if free:
                    n = len(self.endpoints)
                    endpoint = min(free, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._turn) % n))
                    self._turn = (self.endpoints.index(endpoint) + 1) % n
                    endpoint.in_flight += 1
                    return endpoint
                if healthy:
                    self._cond.wait()  # every endpoint in rotation is at its cap
                elif all(e.failures > self.max_retries for e in self.endpoints):
                    last = max(self.endpoints, key=lambda e: e.retry_at).last_error
                    raise last if last is not None else ConnectionError("every teacher endpoint is out of rotation")
                else:
                    waits = [e.retry_at - now for e in self.endpoints if not e.probing]
                    self._cond.wait(timeout=max(0.05, min(waits)) if waits else None)

    def _probe(self, endpoint: Endpoint) -> None:
        """Called with the lock held; asks the endpoint whether it is back, without the lock."""
        endpoint.probing = True
        self._cond.release()
        try:
            ok = endpoint.probe()
        except Exception:
            ok = False
        finally:
            self._cond.acquire()
        endpoint.probing = False
        if ok:
            endpoint.in_rotation = True  # its failure count stands until it answers a request
            self._note(f"teacher endpoint {shown(endpoint.url)} answered its probe: back in rotation")
        else:
            self._take_out(endpoint, None)
        self._cond.notify_all()

    def _release(self, endpoint: Endpoint, fault: BaseException | None, served: bool = False) -> None:
        with self._cond:
            endpoint.in_flight -= 1
            if served:
                endpoint.served += 1
                endpoint.failures = 0
            elif fault is not None:
                endpoint.failed += 1
                endpoint.last_error = fault
                if endpoint.in_rotation:  # a request sent before it was taken out leaves its back-off as it is
                    from kdagent.errors import one_line

                    self._take_out(endpoint, fault)
                    self._note(
                        f"teacher endpoint {shown(endpoint.url)} taken out of rotation ({type(fault).__name__}: "
                        f"{one_line(str(fault), 120)}); probing it in {endpoint.retry_at - time.monotonic():.0f} s"
                    )
            self._cond.notify_all()

    def _take_out(self, endpoint: Endpoint, fault: BaseException | None) -> None:
        endpoint.in_rotation = False
        endpoint.failures += 1
        wait = min(FIRST_BACKOFF_S * 2 ** (endpoint.failures - 1), MAX_BACKOFF_S)
        asked = retry_after(fault) if fault is not None else None
        endpoint.retry_at = time.monotonic() + max(wait, min(asked or 0.0, MAX_BACKOFF_S))

    def _note(self, message: str) -> None:
        self.events.append(message)
        print(f"[kdagent] {message}", file=sys.stderr, flush=True)


def models_probe(base_url: str, api_key: str, timeout_s: float) -> Callable[[], bool]:
    """A probe that lists the endpoint's models (GET {base_url}/models): every OpenAI-compatible server has it."""

    def probe() -> bool:
        response = httpx.get(
            f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s
        )
        return response.status_code == 200

    return probe
