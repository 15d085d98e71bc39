"""The offline DashScope emulator: both Qwen-OCR endpoints on loopback, backed by a real OCR engine.

    with EmulatorServer() as server:
        httpx.post(server.native_base + "/services/aigc/multimodal-generation/generation", ...)

Besides the vendor's endpoints it serves a small control API for tests and the local stack:

    GET    /_emulator/health      {"status": "ok"}
    GET    /_emulator/stats       requests by endpoint, faults by kind, successes, errors, statuses,
                                  requests shed or abandoned before the OCR engine
    GET    /_emulator/requests    the last request bodies, images replaced by length and sha256
    DELETE /_emulator/requests    forget them
    GET    /_emulator/faults      the fault settings
    POST   /_emulator/faults      change them: {"script": [...], "fault_rate": .., "kinds": [...],
                                  "seed": .., "latency_ms": .., "retry_after_seconds": .., "hang_seconds": ..}
    GET    /_emulator/batch-faults  the Batch API's knobs (`batch_faults`)
    POST   /_emulator/batch-faults  change them: {"completion_delay_s": .., "outcomes": [...], "error_lines": [...]}
    POST   /_emulator/reset       clear faults, stats and the request log, batch faults, files and batches

The vendor's Batch File API (files and batches under the compatible base) is served as `batch_api`
describes; chat faults never apply to it, batch faults do (`batch_faults`).

Faults apply to the vendor endpoints only, as soon as a request's body has been read (before
authentication), so a scripted fault always hits the next request whatever it contains.

The OCR engine reads one image at a time. A request waits for its turn at most `max_queue_wait_s`
(or less, when the pages ahead of it would take longer): past that it is answered 429
Throttling.RateQuota with a Retry-After, as the vendor throttles, and its client backs off. A request
whose client has closed the connection never reaches the engine (see `admission`).

Once `stop()` returns, no thread of the emulator is left inside the OCR engine, and none will enter
it: onnxruntime and OpenCV release the GIL while they compute, and a thread that takes it back after
the interpreter has begun to finalize is ended by pthread_exit, whose unwinding through their C++
frames calls std::terminate and aborts the whole process (SIGABRT, 134 in a shell). A request that
would reach the engine after `stop()` has begun gets no reply: its connection is cut, as every open
one is.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from PIL import Image

from .admission import DEFAULT_MAX_WAIT_S, EngineAdmission, Refused, Verdict, peer_closed
from .batch_api import BatchApi, Reply, is_batch_path, is_upload
from .batch_faults import DEFAULT_COMPLETION_DELAY_S, BatchFaults
from .batch_files import DEFAULT_MAX_TOTAL_BYTES, MAX_UPLOAD_BODY_BYTES, BatchApiError, FileStore
from .batches import BatchService
from .engine import Line, shared_engine
from .faults import FaultInjector, FaultKind, Recorder
from .protocol import (
    INTERNAL_ERROR,
    THROTTLED,
    ApiError,
    Mode,
    OcrRequest,
    answer,
    compatible_body,
    compatible_error_body,
    native_body,
    native_error_body,
    new_completion_id,
    new_request_id,
    parse_compatible,
    parse_native,
)
from .vendor import COMPATIBLE_PATH, NATIVE_PATH

logger = logging.getLogger(__name__)

NATIVE_ROUTE = "/api/v1" + NATIVE_PATH
COMPATIBLE_ROUTE = "/compatible-mode/v1" + COMPATIBLE_PATH
_ROUTES: dict[str, Mode] = {NATIVE_ROUTE: "native", COMPATIBLE_ROUTE: "compatible"}
# 10 MB of base64 plus the JSON around it; anything bigger is refused before it is read.
MAX_BODY_BYTES = 11 * 1024 * 1024
# Recognizing the same image again gives the same lines; retries and tests resend images a lot.
OCR_CACHE_SIZE = 32


class Recognizer(Protocol):
    """What the server needs from an OCR engine (the real one, or a fake in unit tests)."""

    def recognize(self, image: Image.Image, *, correct_rotation: bool = False) -> list[Line]: ...


class EmulatorServer:
    """Both endpoints of the vendor on one loopback port, with fault injection and a request log."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        engine: Recognizer | None = None,
        script: Iterable[FaultKind | str] = (),
        fault_rate: float = 0.0,
        fault_kinds: Iterable[FaultKind | str] = tuple(FaultKind),
        seed: int | None = None,
        latency_ms: float = 0.0,
        retry_after_seconds: float = 1.0,
        hang_seconds: float = 30.0,
        max_logged_requests: int = 200,
        max_queue_wait_s: float = DEFAULT_MAX_WAIT_S,
        batch_completion_delay_s: float = DEFAULT_COMPLETION_DELAY_S,
        batch_outcomes: Iterable[Any] = (),
        batch_error_lines: Iterable[dict[str, Any]] = (),
        max_file_storage_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> None:
        self.host = host
        self._requested_port = port
        # None accepts any Bearer key, as a stand-in for "some valid key".
        self.api_key = api_key
        self._engine = engine
        self.faults = FaultInjector(
            script=script,
            fault_rate=fault_rate,
            kinds=fault_kinds,
            seed=seed,
            latency_ms=latency_ms,
            retry_after_seconds=retry_after_seconds,
            hang_seconds=hang_seconds,
        )
        self.recorder = Recorder(max_logged_requests)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._cache: OrderedDict[tuple[str, int, int, bool], list[Line]] = OrderedDict()
        self._cache_lock = threading.Lock()
        # One request at a time gets the engine (which serializes its calls anyway), first come, first
        # served. A request waiting for its turn never starts the engine once stop() has begun, nor once
        # its client has gone, and is answered with a throttling error when it waits too long (see
        # `admission`): stop() waits for at most the one call in progress.
        self.admission = EngineAdmission(max_wait_s=max_queue_wait_s, stopping=self._stopping)
        self.batch_faults = BatchFaults(
            completion_delay_s=batch_completion_delay_s, outcomes=batch_outcomes, error_lines=batch_error_lines
        )
        self.batches = BatchService(
            FileStore(max_file_storage_bytes),
            self.batch_faults,
            functools.partial(self.reply_body, "compatible"),
            self.recorder,
        )
        self.batch_api = BatchApi(self.batches)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HttpServer((self.host, self._requested_port), _Handler)
        httpd.emulator = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="dashscope-emulator", daemon=True
        )
        self._thread.start()
        self.batches.resume()
        # An emulator nobody stopped is stopped before the interpreter finalizes (see the module's docstring).
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop serving; hanging and keep-alive connections are cut rather than waited for.

        Returns once every request thread has ended, which takes at most the OCR call in progress.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        atexit.unregister(self.stop)
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        httpd.join_request_threads()
        self.batches.close()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # --- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def native_base(self) -> str:
        return self.base_url + "/api/v1"

    @property
    def compatible_base(self) -> str:
        return self.base_url + "/compatible-mode/v1"

    # --- observation ----------------------------------------------------------------------

    @property
    def engine(self) -> Recognizer:
        if self._engine is None:
            self._engine = shared_engine()
        return self._engine

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The last requests received, oldest first, images replaced by their length and sha256."""
        return self.recorder.requests()

    @property
    def stats(self) -> dict[str, Any]:
        admission = self.admission.stats
        return {
            **self.recorder.stats(),
            # Requests turned away before the engine: throttled for lack of time, or whose client had gone.
            "shed": admission.shed,
            "abandoned": admission.abandoned,
            "engine_calls": admission.admitted,
            "longest_engine_wait_s": admission.longest_wait_s,
            "batch": self.batches.stats(),
        }

    def reset(self) -> None:
        """No faults, no latency, empty stats and request log; no batch fault, file or batch."""
        self.faults.reset()
        self.batch_faults.reset()
        self.batches.clear()
        self.recorder.reset()
        self.admission.reset_stats()

    # --- the model --------------------------------------------------------------------------

    def reply_body(
        self, mode: Mode, body: Any, request_id: str, client_gone: Callable[[], bool] = lambda: False
    ) -> dict[str, Any]:
        """The success body of a request to either endpoint; raises ApiError or Refused as `recognize` does."""
        request = parse_native(body) if mode == "native" else parse_compatible(body)
        reply = answer(request, self.recognize(request, client_gone))
        if mode == "native":
            return native_body(reply, request_id)
        return compatible_body(reply, request.model, new_completion_id())

    def recognize(self, request: OcrRequest, client_gone: Callable[[], bool] = lambda: False) -> list[Line]:
        """Lines read in the image the model sees: the received image after the vendor's smart_resize.

        Raises `Refused` when the request does not get the engine (`admission`); `client_gone` tells
        whether its caller has stopped waiting for the answer.
        """
        height, width = request.model_view
        key = (request.image.sha256, height, width, request.enable_rotate)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        with self.admission.turn(client_gone):
            # Resized only now: a request waiting for its turn holds no second copy of its page.
            image = request.image.image
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BICUBIC)
            lines = self.engine.recognize(image, correct_rotation=request.enable_rotate)
            del image
        with self._cache_lock:
            self._cache[key] = lines
            while len(self._cache) > OCR_CACHE_SIZE:
                self._cache.popitem(last=False)
        return lines


class _HttpServer(ThreadingHTTPServer):
    # Request threads stay daemons, so that an emulator left running never holds up the interpreter's
    # exit on an idle keep-alive connection; the stdlib joins only non-daemon ones, so they are joined
    # here instead (`join_request_threads`), once their connections are cut.
    daemon_threads = True
    block_on_close = False
    emulator: EmulatorServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_closed = False
        self._request_threads: set[threading.Thread] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="dashscope-emulator-request",
            daemon=True,
        )
        with self._connections_lock:
            # Ended threads are dropped here, not by themselves on their way out: a thread that removed
            # itself would still be alive for a moment after, where join_request_threads could not see it.
            self._request_threads = {alive for alive in self._request_threads if alive.is_alive()}
            self._request_threads.add(thread)
        thread.start()

    def join_request_threads(self) -> None:
        """Wait for every request thread; call after `shutdown()`, so that no new one starts."""
        with self._connections_lock:
            threads = list(self._request_threads)
        for thread in threads:
            thread.join()

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)
            closed = self._connections_closed
        if closed:
            # Accepted just before the server stopped, after close_connections() had run: cut it too, or
            # its thread would wait up to the handler's timeout for a request line that never comes.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            self._connections_closed = True
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, reset) is business as usual for an emulator of a flaky service.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "DashScopeEmulator/0.1"
    # Idle keep-alive connections are closed after this long.
    timeout = 300

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK hold up every reply.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    @property
    def emulator(self) -> EmulatorServer:
        return self.server.emulator

    # --- routing --------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        mode = _ROUTES.get(path)
        if mode is not None:
            self._api(mode, path)
        elif is_batch_path(path):
            self._batch_api(path)
        elif path == "/_emulator/faults":
            self._configure_faults()
        elif path == "/_emulator/batch-faults":
            self._configure_batch_faults()
        elif path == "/_emulator/reset":
            self._read_body()
            self.emulator.reset()
            self._send_json(200, {"status": "reset"})
        else:
            self._not_found(path)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in _ROUTES:
            self._method_not_allowed(_ROUTES[path])
        elif is_batch_path(path):
            self._batch_api(path)
        elif path == "/_emulator/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/_emulator/stats":
            self._send_json(200, self.emulator.stats)
        elif path == "/_emulator/requests":
            self._send_json(200, {"requests": self.emulator.requests})
        elif path == "/_emulator/faults":
            self._send_json(200, self.emulator.faults.snapshot())
        elif path == "/_emulator/batch-faults":
            self._send_json(200, self.emulator.batch_faults.snapshot())
        else:
            self._not_found(path)

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_emulator/requests":
            self.emulator.recorder.clear_requests()
            self._send_json(200, {"requests": []})
        elif is_batch_path(path):
            self._batch_api(path)
        elif path in _ROUTES:
            self._method_not_allowed(_ROUTES[path])
        else:
            self._not_found(path)

    # --- the vendor's endpoints ---------------------------------------------------------------

    def _api(self, mode: Mode, path: str) -> None:
        # Latency is a service time, as a real API's is: it runs from the request's arrival and
        # covers the emulator's own decoding and OCR, which would otherwise be added on top.
        arrived = time.monotonic()
        request_id = new_request_id()
        raw = self._read_body()
        if raw is None:
            error = ApiError(400, "InvalidParameter", f"the request body exceeds {MAX_BODY_BYTES} bytes")
            entry = self.emulator.recorder.received(mode, path, {"unread_body": error.message}, key_suffix=None)
            self.emulator.recorder.answered(entry, status=400, request_id=request_id, error_code=error.code)
            self._send_error(mode, error, request_id)
            return
        try:
            body: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        logged = body if body is not None else {"unparsed_body": raw[:500].decode("utf-8", "replace")}
        entry = self.emulator.recorder.received(mode, path, logged, key_suffix=self._key_suffix())

        fault = self.emulator.faults.next_fault()
        if fault is not None:
            # Counted before it happens, like every outcome: a hang shows in the stats while it holds on.
            status = None if fault is FaultKind.HANG else _FAULT_STATUS[fault]
            self.emulator.recorder.answered(entry, status=status, request_id=request_id, fault=fault)
            self._inject(fault, mode, request_id)
            return

        try:
            self._authenticate(mode)
            if body is None:
                raise ApiError(400, "InvalidParameter", "the request body is not valid JSON")
            payload = self.emulator.reply_body(mode, body, request_id, lambda: peer_closed(self.connection))
        except Refused as refused:
            self._refuse(refused, entry, mode, request_id)
            return
        except ApiError as error:
            self.emulator.recorder.answered(entry, status=error.status, request_id=request_id, error_code=error.code)
            self._send_error(mode, error, request_id)
            return
        except Exception:
            logger.exception("emulator failed on request %s", request_id)
            self.emulator.recorder.answered(entry, status=500, request_id=request_id, error_code=INTERNAL_ERROR.code)
            self._send_error(mode, INTERNAL_ERROR, request_id)
            return

        remaining = self.emulator.faults.latency_ms / 1000 - (time.monotonic() - arrived)
        if remaining > 0:
            self.emulator.stopping.wait(remaining)
        # Recorded before the reply leaves, so a client that reads the log right after its reply sees it complete.
        self.emulator.recorder.answered(entry, status=200, request_id=request_id, usage=payload.get("usage"))
        self._send_json(200, payload)

    def _batch_api(self, path: str) -> None:
        request_id = new_request_id()
        limit = MAX_UPLOAD_BODY_BYTES if is_upload(self.command, path) else MAX_BODY_BYTES
        raw = self._read_body(limit)
        try:
            try:
                self._authenticate("compatible")
            except ApiError as error:
                self._send_json(error.status, compatible_error_body(error, request_id))
                return
            reply = self.emulator.batch_api.handle(
                self.command,
                path,
                query=urlsplit(self.path).query,
                content_type=self.headers.get("Content-Type", ""),
                body=raw,
                key_suffix=self._key_suffix(),
            )
        except BatchApiError as error:
            reply = Reply(error.status, json.dumps(error.body(request_id)).encode("utf-8"))
        self._send_bytes(reply.status, reply.body, content_type=reply.content_type)

    def _refuse(self, refused: Refused, entry: dict[str, Any], mode: Mode, request_id: str) -> None:
        """A request that did not get the engine: throttled when shed, dropped when nobody waits for it."""
        if refused.why is Verdict.SHED:
            self.emulator.recorder.answered(entry, status=429, request_id=request_id, error_code=THROTTLED.code)
            self._send_error(mode, THROTTLED, request_id, headers={"Retry-After": str(refused.retry_after_s)})
            return
        # Its client has gone, or the emulator is stopping: nobody is left to read a reply.
        self.close_connection = True

    def _authenticate(self, mode: Mode) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, key = header.strip().partition(" ")
        expected = self.emulator.api_key
        if mode == "compatible" and expected is None and not key.strip():
            # A self-hosted OpenAI-compatible server usually takes calls without a key; started without
            # --api-key, the emulator stands in for one. DashScope itself always wants one.
            return
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "InvalidApiKey", "No API-key provided.")
        if expected is not None and key.strip() != expected:
            raise ApiError(401, "InvalidApiKey", "Invalid API-key provided.")

    def _key_suffix(self) -> str | None:
        _, _, key = self.headers.get("Authorization", "").strip().partition(" ")
        key = key.strip()
        return key[-4:] if key else None

    def _inject(self, fault: FaultKind, mode: Mode, request_id: str) -> None:
        faults = self.emulator.faults
        if fault is FaultKind.THROTTLE:
            retry_after = f"{faults.retry_after_seconds:g}"
            self._send_error(mode, THROTTLED, request_id, headers={"Retry-After": retry_after})
        elif fault is FaultKind.SERVER_ERROR:
            self._send_error(mode, INTERNAL_ERROR, request_id)
        elif fault is FaultKind.MALFORMED:
            self._send_bytes(200, _truncated_reply(mode, request_id))
        else:
            # Hold the connection without a word, as a stuck upstream does, then drop it.
            self.emulator.stopping.wait(faults.hang_seconds)
            self.close_connection = True

    # --- the control API -------------------------------------------------------------------------

    def _configure_faults(self) -> None:
        raw = self._read_body()
        try:
            settings = json.loads(raw or b"{}")
            if not isinstance(settings, dict):
                raise ValueError("the body must be a JSON object of fault settings")
            snapshot = self.emulator.faults.configure(**settings)
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, snapshot)

    def _configure_batch_faults(self) -> None:
        try:
            settings = json.loads(self._read_body() or b"{}")
            if not isinstance(settings, dict):
                raise ValueError("the body must be a JSON object of batch fault settings")
            snapshot = self.emulator.batch_faults.configure(**settings)
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, snapshot)

    # --- plumbing ------------------------------------------------------------------------------

    def _read_body(self, limit: int = MAX_BODY_BYTES) -> bytes | None:
        """The request body, or None when it is too big to read (the connection is then closed)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > limit:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send_error(self, mode: Mode, error: ApiError, request_id: str, headers: dict[str, str] | None = None) -> None:
        body = native_error_body(error, request_id) if mode == "native" else compatible_error_body(error, request_id)
        self._send_json(error.status, body, headers)

    def _not_found(self, path: str) -> None:
        self._read_body()
        error = ApiError(404, "NotFound", f"no such endpoint: {path}")
        self._send_json(404, native_error_body(error, new_request_id()))

    def _method_not_allowed(self, mode: Mode) -> None:
        self._read_body()
        error = ApiError(405, "MethodNotAllowed", f"{self.command} is not allowed here; use POST")
        self._send_error(mode, error, new_request_id(), headers={"Allow": "POST"})

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers)

    def _send_bytes(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


_FAULT_STATUS = {FaultKind.THROTTLE: 429, FaultKind.SERVER_ERROR: 500, FaultKind.MALFORMED: 200}


def _truncated_reply(mode: Mode, request_id: str) -> bytes:
    """The first half of a plausible success body: valid HTTP, invalid JSON, as a cut-off proxy reply gives."""
    if mode == "native":
        whole: dict[str, Any] = {
            "output": {
                "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": [{"text": ""}]}}]
            },
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            "request_id": request_id,
        }
    else:
        whole = {
            "choices": [{"message": {"content": "", "role": "assistant"}, "finish_reason": "stop", "index": 0}],
            "object": "chat.completion",
            "id": f"chatcmpl-{request_id}",
        }
    encoded = json.dumps(whole).encode("utf-8")
    return encoded[: len(encoded) // 2]
