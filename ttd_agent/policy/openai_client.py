"""One HTTP client for every OpenAI-compatible call: both trainers, both `--sampler openai` layouts.

What real servers do, and what this client does about it (docs/llm.md, "When the server fails"):
- 429 (with `Retry-After`, in seconds or as an HTTP date), 408, most 5xx, dropped connections,
  resets and timeouts are transient: the request is sent again after `Retry-After`, else after
  an exponential backoff with full jitter (uniform in [0, min(backoff_max, backoff * 2^k)]),
  at most `request_retries` times and never starting an attempt `retry_time_s` after the first.
- Every attempt has a real deadline (`request_timeout_s`, from the first byte sent to the last
  byte read): the socket's timeout is set to the time left before each read, so a server that
  hangs, or trickles its answer, is given up on instead of waited for.
- A request that still fails raises `RequestFailed` with the reason; the callers turn it into a
  failed sample, so one bad request costs one sample, not the step.
- Admin endpoints (`/load_lora_adapter`, ...) may answer plain text, as `vllm serve` does.
- `max_tokens` or `max_completion_tokens` (OpenAI's reasoning models accept only the latter): a
  400 that names the field as unsupported switches to the other one, once, for the whole client.
- The completion budget is clamped so prompt + completion fit the context the server reports in
  `/models` (vLLM's `max_model_len`), or the one a 400 answer states; a warning the first time.

Stdlib `http.client` rather than an HTTP library: what this needs that urllib lacks is a total
deadline per attempt, which httpx and requests do not offer either (their timeouts, like
urllib's, bound each socket operation). One keep-alive connection per worker thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import email.utils
import http.client
import json
import logging
import os
import random
import re
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))
"""Answers worth sending the same request again for (409: vLLM's "busy loading"; 52x: proxies)."""
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
T = TypeVar("T")


class ServerError(ConnectionError):
    """The server answered with an error or could not be reached (a one-line reason)."""


class RequestFailed(ServerError):
    """A request that failed for good: a permanent answer, or transient ones past the retry bounds."""

    def __init__(self, reason: str, *, status: int | None = None, detail: str = ""):
        super().__init__(reason)
        self.status = status
        self.detail = detail


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class RequestStats:
    """What the requests since the last `drain` cost: sent, retried, failed, and tokens."""

    requests: int = 0
    requests_retried: int = 0
    """Requests that needed at least one more attempt."""
    requests_failed: int = 0
    """Requests that never got an answer (each became a failed sample)."""
    request_retries: int = 0
    """Extra attempts in all."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle connection's socket is readable: the server's close (or stray bytes) came in."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_s, base_s * 2^attempt)] (attempt 0 = the first retry)."""
    return rng.uniform(0.0, min(max_s, base_s * 2.0 ** attempt))


def error_message(payload: bytes) -> str:
    """The message of an error answer, on one line: OpenAI's `error.message`, vLLM's `message`, else the text."""
    text = payload.decode(errors="replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        inner = answer.get("error")
        message = inner.get("message") if isinstance(inner, dict) else inner if isinstance(inner, str) else None
        text = str(message or answer.get("message") or text)
    return " ".join(text.split())[:500]


_CONTEXT = re.compile(r"maximum context length is (\d+)")
_PROMPT = re.compile(r"(\d+) (?:tokens )?in the messages|has (\d+) input tokens|(\d+) (?:prompt|input) tokens")


def context_from_error(detail: str) -> tuple[int, int] | None:
    """(served context, prompt tokens) from a vLLM/OpenAI "maximum context length" 400, if it says both."""
    context, prompt = _CONTEXT.search(detail), _PROMPT.search(detail)
    if context is None or prompt is None:
        return None
    return int(context.group(1)), int(next(g for g in prompt.groups() if g is not None))


def names_unsupported(detail: str, field: str) -> bool:
    """Whether a 400 answer says `field` is not accepted (OpenAI: "Unsupported parameter: 'max_tokens'")."""
    text = detail.lower()
    return field in text and any(word in text for word in ("unsupported", "not supported", "unrecognized",
                                                           "not permitted", "extra inputs", "use 'max"))


class OpenAIClient:
    """JSON (and plain-text admin calls) over HTTP to one OpenAI-compatible base URL, with retries."""

    def __init__(self, settings: LLMSettings, *, rng: random.Random | None = None):
        if not settings.base_url:
            raise ValueError("--sampler openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        self.base_url = settings.base_url.rstrip("/")
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"--base-url must be an http(s) URL like http://127.0.0.1:8000/v1, got {settings.base_url!r}")
        self._https = url.scheme == "https"
        self._host, self._port, self._prefix = url.hostname, url.port, url.path.rstrip("/")
        self.settings = settings
        self.api_key = os.environ.get(settings.api_key_env, "")
        self.token_field = settings.max_tokens_field if settings.max_tokens_field != "auto" else TOKEN_FIELDS[0]
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stats = RequestStats()
        self._contexts: dict[str, int] = {}
        """Served model name -> its context length, from `probe`."""
        self._warned_clamp = False

    # -- accounting ------------------------------------------------------------------------------
    def drain_stats(self) -> dict[str, int]:
        """The counts since the last call (and zero them): one step's requests and tokens."""
        with self._lock:
            stats, self._stats = self._stats, RequestStats()
        return asdict(stats)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    # -- one attempt -------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        """This thread's keep-alive connection; a fresh one where the server has closed it while
        idle (its socket reads as ready before anything was sent), so that a connection dropped
        after a request was sent is always a fault, counted and retried."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and not _closed_by_peer(conn.sock):
            return conn
        self._drop_connection()
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = kind(self._host, self._port, timeout=self.settings.request_timeout_s)
        self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    @staticmethod
    def _time_left(conn: http.client.HTTPConnection, deadline: float) -> None:
        """Give the socket's next operation only the time left (a real deadline, not a per-read one)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        conn.timeout = left
        if conn.sock is not None:
            conn.sock.settimeout(left)

    def _exchange(self, method: str, path: str, data: bytes | None, deadline_s: float) -> tuple[int, Any, bytes]:
        """Send once and read the whole answer within `deadline_s`; (status, headers, body)."""
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        deadline = time.monotonic() + deadline_s
        conn = self._connection()
        try:
            self._time_left(conn, deadline)
            conn.request(method, self._prefix + path, body=data, headers=headers)
            self._time_left(conn, deadline)
            response = conn.getresponse()
            chunks = []
            while True:
                self._time_left(conn, deadline)
                chunk = response.read1(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
            if response.length:  # read1 ends quietly where the connection did, short of Content-Length
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
            response.close()  # read1 leaves a fully read answer open, which blocks the next request
            if response.will_close:
                self._drop_connection()
            return response.status, response.headers, b"".join(chunks)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            self._drop_connection()
            raise _Transient(f"the connection was dropped ({type(error).__name__})") from error
        except http.client.IncompleteRead as error:
            self._drop_connection()
            raise _Transient(f"the connection was dropped in the middle of the answer "
                             f"(after {len(error.partial)} bytes)") from error
        except (TimeoutError, socket.timeout) as error:
            self._drop_connection()
            raise _Transient(f"no complete answer within the {deadline_s:g} s deadline "
                             f"(--request-timeout-s)") from error
        except (OSError, http.client.HTTPException) as error:
            self._drop_connection()
            raise _Transient(f"cannot reach the server ({type(error).__name__}: {error})") from error

    # -- one request, retried --------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """(status, body) of a successful answer, after retrying transient failures within the
        bounds; raises RequestFailed with the reason otherwise."""
        s = self.settings
        data = None if body is None else json.dumps(body).encode()
        give_up_at = time.monotonic() + s.retry_time_s
        retries = 0
        while True:
            try:
                status, headers, payload = self._exchange(method, path, data, s.request_timeout_s)
                if status < 400:
                    return status, payload
                detail = error_message(payload)
                if status not in TRANSIENT_STATUS:
                    raise RequestFailed(f"{self.base_url}{path} answered HTTP {status}: {detail}",
                                        status=status, detail=detail)
                raise _Transient(f"HTTP {status}: {detail[:200]}", retry_after_seconds(headers.get("Retry-After")))
            except _Transient as error:
                wait = error.retry_after if error.retry_after is not None else \
                    backoff_delay(retries, s.retry_backoff_s, s.retry_backoff_max_s, self._rng)
                if retries >= s.request_retries:
                    raise RequestFailed(f"{self.base_url}{path}: {error} (gave up after {retries + 1} "
                                        f"attempts; --request-retries {s.request_retries})") from None
                if time.monotonic() + wait > give_up_at:
                    raise RequestFailed(f"{self.base_url}{path}: {error} (gave up: the next attempt would start "
                                        f"past --retry-time-s {s.retry_time_s:g})") from None
                log.debug("retrying %s in %.2f s: %s", path, wait, error)
                retries += 1
                self._count(request_retries=1)
                self._local.retried = True
                time.sleep(wait)

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        _, payload = self.request("POST", path, body)
        try:
            answer = json.loads(payload) if payload.strip() else {}
        except json.JSONDecodeError as error:
            raise RequestFailed(f"{self.base_url}{path} answered with something that is not JSON: "
                                f"{payload[:200]!r}") from error
        if not isinstance(answer, dict):
            raise RequestFailed(f"{self.base_url}{path} answered {type(answer).__name__}, expected a JSON object")
        usage = answer.get("usage")
        if isinstance(usage, dict):
            self.count_usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        return answer

    def count_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Add tokens to the step's usage (the server's `usage`; a caller that knows them, when it gave none)."""
        self._count(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def post_admin(self, path: str, body: dict[str, Any]) -> str:
        """An admin call whose answer may be plain text (`vllm serve`: "Success: LoRA adapter ... added")."""
        _, payload = self.request("POST", path, body)
        return payload.decode(errors="replace").strip()

    # -- what the request may ask for --------------------------------------------------------------
    def probe(self, deadline_s: float = 30.0) -> None:
        """Ask `/models` once, before anything else: a server that refuses the connection stops the
        run at once with a clear line (retrying would only delay that); the context each model is
        served with is kept (vLLM's `max_model_len`; `context_length` elsewhere)."""
        try:
            status, _, payload = self._exchange("GET", "/models", None, min(deadline_s, self.settings.request_timeout_s))
        except _Transient as error:
            if isinstance(error.__cause__, ConnectionRefusedError):
                raise ServerError(f"cannot reach {self.base_url}: the connection was refused; is the server "
                                  f"running (e.g. `vllm serve MODEL --enable-lora`)?") from None
            log.warning("%s/models did not answer (%s); going on without the served context length",
                        self.base_url, error)
            return
        if status != 200:
            log.debug("%s/models answered HTTP %d: no context length", self.base_url, status)
            return
        try:
            entries = json.loads(payload).get("data", [])
            for entry in entries:
                length = entry.get("max_model_len") or entry.get("context_length")
                if isinstance(length, int) and length > 0:
                    self._contexts[str(entry.get("id"))] = length
        except (ValueError, AttributeError, TypeError) as error:
            log.debug("unreadable %s/models answer: %s", self.base_url, error)

    def clamp(self, max_tokens: int, prompt_tokens: int, context: int) -> int:
        """The completion budget that fits `context` after `prompt_tokens` (warns the first time)."""
        fitted = min(max_tokens, context - prompt_tokens)
        if fitted < max_tokens:
            with self._lock:
                first, self._warned_clamp = not self._warned_clamp, True
            if first:
                log.warning("the server serves a context of %d tokens: completions are cut to fit after the prompt "
                            "(first: %d prompt tokens, max_new_tokens %d -> %d); not logged again", context,
                            prompt_tokens, max_tokens, fitted)
        return fitted

    def complete(self, path: str, body: dict[str, Any], max_tokens: int, parse: Callable[[dict[str, Any]], T], *,
                 prompt_tokens: int | None = None, base_model: str | None = None) -> T:
        """One sample's request: its token budget in the field the model accepts, clamped to the
        served context; sent again once with the other field, or with the budget a context error
        states, when the server's 400 says so. Counted in the stats (sent, retried, failed).
        `parse` reads the answer (an answer it cannot read fails the request too); `base_model`:
        whose context applies (a LoRA adapter's is its base model's)."""
        self._local.retried = False
        try:
            answer = self._complete(path, body, max_tokens, prompt_tokens, base_model or str(body.get("model")))
            try:
                return parse(answer)
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise RequestFailed(f"{self.base_url}{path} answered without a usable choice "
                                    f"({type(error).__name__}: {error}): {json.dumps(answer)[:200]}") from None
        except RequestFailed:
            self._count(requests_failed=1)
            raise
        finally:
            self._count(requests=1, requests_retried=int(self._local.retried))

    def _complete(self, path: str, body: dict[str, Any], max_tokens: int, prompt_tokens: int | None,
                  base_model: str) -> dict[str, Any]:
        context = self._contexts.get(base_model)
        if context is not None:
            max_tokens = self.clamp(max_tokens, prompt_tokens if prompt_tokens is not None else 1, context)
            if max_tokens < 1:
                raise RequestFailed(f"the prompt ({prompt_tokens} tokens) leaves no room for a completion in the "
                                    f"served context of {context} tokens")
        fixed: set[str] = set()
        while True:
            field = self.token_field
            try:
                return self.post_json(path, {**body, field: max_tokens})
            except RequestFailed as error:
                if error.status != 400:
                    raise
                other = TOKEN_FIELDS[1 - TOKEN_FIELDS.index(field)]
                if "field" not in fixed and self.settings.max_tokens_field == "auto" \
                        and names_unsupported(error.detail, field):
                    fixed.add("field")
                    with self._lock:
                        if self.token_field == field:
                            log.warning("%s does not accept %s: sending %s from now on", self.base_url, field, other)
                            self.token_field = other
                    self._local.retried = True
                    continue
                stated = context_from_error(error.detail)
                if "context" not in fixed and stated is not None and stated[0] - stated[1] < max_tokens:
                    fixed.add("context")
                    max_tokens = self.clamp(max_tokens, stated[1], stated[0])
                    self._local.retried = True
                    if max_tokens >= 1:
                        continue
                raise


def fan_out(calls: Sequence[Callable[[], T]], concurrency: int,
            on_done: Callable[[int, T | RequestFailed], None]) -> None:
    """Run `calls` `concurrency` at a time and report each result, or the RequestFailed that
    ended it, the moment it returns. A failed request costs its own sample, not the others; a
    call whose requests all failed raises ServerError (the server is down, or refuses them all)."""
    failures: list[RequestFailed] = []
    with cf.ThreadPoolExecutor(concurrency, thread_name_prefix="ttd-openai") as pool:
        futures = {pool.submit(call): k for k, call in enumerate(calls)}
        for future in cf.as_completed(futures):
            try:
                result: T | RequestFailed = future.result()
            except RequestFailed as error:
                failures.append(error)
                result = error
            on_done(futures[future], result)
    if calls and len(failures) == len(calls):
        raise ServerError(f"every one of the {len(calls)} requests of this step failed; the first: {failures[0]}")
    if failures:
        log.warning("%d of %d requests failed for good and count as failed samples; the first: %s",
                    len(failures), len(calls), failures[0])
