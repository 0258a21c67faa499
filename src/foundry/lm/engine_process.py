"""The continuous-batching engine in a process of its own (`serve.lm.engine: process`).

    engine = EngineProcess(ref, home, settings, name="gpt", threads=1)
    engine.start()                                  # spawns, loads, waits until ready
    handle = engine.submit(ids, params, emit)       # emit(Delta) per token, then emit(None)
    handle.cancel()                                 # leaves the batch at the next step
    engine.close()

Why a process. In one process the engine thread and the server's event loop share one
GIL: a decode step of a small model is a few hundred PyTorch calls, each of which
releases the GIL and takes it back, and every streamed chunk, request and response on
the event loop waits for it in between. On 2 cores a step of 16 rows then took longer
the more the event loop had to do, and the server's tokens/s stopped growing with the
number of streams long before the engine's own did (docs/BENCHMARKS.md). vLLM's V1
engine is split the same way: an API server process that tokenizes and streams, and an
engine-core process that only runs steps.

The API process tokenizes the prompt (it has the tokenizer anyway, to count tokens and
render chats), checks it against the context, and sends the token ids; the engine
process runs `foundry.lm.continuous.ContinuousBatcher` unchanged and, after each step,
sends every row's delta of that step in one message. Messages are length-prefixed JSON
over a socket pair: no pickle crosses the boundary, and a message per step (not per
token) keeps the API process's side to one read and one wake-up of the event loop per
step. The engine process ends when its socket closes: when the server closes the model
or dies, even by SIGKILL.

The API process keeps the package's tokenizer; its copy of the weights is dropped once
the engine process has loaded its own (`release_weights`), so a model's weights sit in
memory once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foundry.config.schema import GenerationConfig, LMServeConfig
from foundry.lm.api import Completion, Delta

__all__ = ["EngineGone", "EngineProcess", "RemoteHandle", "release_weights"]

log = logging.getLogger(__name__)

Emit = Callable[[Delta | BaseException | None], None]

_HEADER = struct.Struct("!I")
_ERRORS: dict[str, type[Exception]] = {}
"""Exception types the engine may report by name (filled lazily: `_error_types`)."""


class EngineGone(RuntimeError):
    """The engine process exited: requests in flight failed, new ones cannot run."""


# ---------------------------------------------------------------------- framing


def _send(sock: socket.socket, lock: threading.Lock, *messages: Any) -> None:
    """Each message as one frame (length, JSON), all in one write."""
    frames = []
    for message in messages:
        data = json.dumps(message, separators=(",", ":")).encode()
        frames += [_HEADER.pack(len(data)), data]
    with lock:
        sock.sendall(b"".join(frames))


def _recv(sock: socket.socket) -> Any:
    """The next message, or None when the other side has closed the socket."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(sock, _HEADER.unpack(header)[0])
    if body is None:
        return None
    return json.loads(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _error_types() -> dict[str, type[Exception]]:
    if not _ERRORS:
        from foundry.errors import ConfigError, DataError, FoundryError, ModelError
        from foundry.lm.continuous import QueueFull

        for cls in (ConfigError, DataError, FoundryError, ModelError, QueueFull, ValueError):
            _ERRORS[cls.__name__] = cls
    return _ERRORS


def _rebuild_error(kind: str, message: str) -> Exception:
    return _error_types().get(kind, RuntimeError)(message)


# ---------------------------------------------------------------------- API side


class RemoteHandle:
    """The API process's side of one submitted row."""

    def __init__(self, engine: EngineProcess, rid: int, prompt_tokens: int, emit: Emit) -> None:
        self._engine = engine
        self._id = rid
        self._emit = emit
        self._prompt_tokens = prompt_tokens
        self._texts: list[str] = []
        self._last: Delta | None = None

    def cancel(self) -> None:
        """Leave the batch at the next step (the tokens computed until then stand)."""
        self._engine._cancel(self._id)

    def completion(self) -> Completion:
        """The whole completion, once the row has finished (its deltas joined)."""
        last = self._last
        assert last is not None and last.finish_reason is not None
        return Completion(
            text="".join(self._texts),
            prompt_tokens=self._prompt_tokens,
            completion_tokens=last.completion_tokens,
            finish_reason=last.finish_reason,
        )

    def _delta(self, delta: Delta) -> None:
        self._texts.append(delta.text)
        self._last = delta
        self._emit(delta)


class EngineProcess:
    """A `ContinuousBatcher` running in a child process; the same surface to
    `foundry.serve.lm_serving` (submit, full, running, queued, close)."""

    def __init__(
        self,
        model: Any,
        ref: str,
        home: str | None,
        settings: LMServeConfig,
        *,
        name: str,
        threads: int,
        on_step: Callable[[int, int], None] | None = None,
        on_admit: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = model.engine
        """The API process's GenerationEngine: its tokenizer and context checks only."""
        self.ref, self.home, self.settings = ref, home, settings
        self.name, self.threads = name, threads
        self.on_step, self.on_admit = on_step, on_admit
        self.running = 0
        self.queued = 0
        self._rows: dict[int, RemoteHandle] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop that reads the engine's messages (`_attach`)."""
        self._buffer = bytearray()
        self._outgoing: list[dict[str, Any]] = []
        """Messages of this turn of the event loop (`_post`)."""
        self._gone: str | None = None
        self._ended = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Spawn the engine process and wait until it has loaded the model; its load
        errors are raised here, as the in-process engine's would be."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # the child imports the very foundry this process runs, however it was found
        source = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "foundry.lm.engine_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._sock = ours
        _send(
            ours,
            self._send_lock,
            {
                "ref": self.ref,
                "home": self.home,
                "name": self.name,
                "threads": self.threads,
                "settings": self.settings.model_dump(mode="json"),
            },
        )
        first = _recv(ours)
        if first is None or "failed" in first:
            self._stop_process()
            if first is None:
                raise EngineGone(
                    f"the engine process of model '{self.name}' exited while loading "
                    f"{self.ref} (exit code {self._process.returncode}): see the server log"
                )
            raise _rebuild_error(*first["failed"])

    def close(self) -> None:
        """Stop the engine (rows still running fail with "shutting down") and wait for
        its process to exit. Called off the event loop, which meanwhile reads the
        engine's last messages; with no loop attached, read here."""
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            _send(self._sock, self._send_lock, {"op": "close"})
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            self._detach()
            while (message := _recv(self._sock)) is not None:
                self._dispatch(message)
            self._end()
        self._ended.wait(timeout=30)
        self._stop_process()

    def _stop_process(self) -> None:
        assert self._process is not None and self._sock is not None
        self._sock.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    @property
    def gone(self) -> str | None:
        """Why the engine process is gone; None while it runs."""
        return self._gone

    # ------------------------------------------------------------------ requests

    def full(self) -> bool:
        """Every slot taken and `max_queue` requests waiting: the engine's own bound,
        counted here from the requests in flight."""
        with self._lock:
            return self._is_full()

    def _is_full(self) -> bool:
        """(the lock is held) Rows in flight at the bound."""
        return len(self._rows) >= self.settings.max_concurrent + self.settings.max_queue

    def submit(self, prompt: str | list[int], params: GenerationConfig, emit: Emit) -> RemoteHandle:
        """Queue one completion, on the event loop; `emit` gets its deltas there.
        Raises QueueFull, ModelError (the prompt leaves no room to generate) and
        EngineGone here, before anything is sent; an engine that dies later fails the
        row through `emit`."""
        from foundry.lm.continuous import QueueFull

        self._attach()
        text = isinstance(prompt, str)
        ids = self.engine.encode_prompt(prompt) if text else list(prompt)
        self.engine.new_rows([ids], params, text=False)  # its checks, here
        with self._lock:
            if self._gone is not None:
                raise EngineGone(self._gone)
            if self._is_full():
                raise QueueFull(f"model '{self.name}' is full")
            rid = next(self._ids)
            handle = RemoteHandle(self, rid, len(ids), emit)
            self._rows[rid] = handle
        message = {
            "op": "submit",
            "id": rid,
            "ids": ids,
            "text": text,
            "params": params.model_dump(mode="json"),
        }
        self._post(message)
        return handle

    def _cancel(self, rid: int) -> None:
        self._post({"op": "cancel", "id": rid})

    def _post(self, message: dict[str, Any]) -> None:
        """Send `message` at the end of this turn of the event loop, with the others of
        the turn: a burst of 16 requests is one write to the socket, not 16 (each write
        lets the GIL go, and taking it back may wait for another thread)."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            self._write([message])
            return
        self._outgoing.append(message)
        if len(self._outgoing) == 1:
            self._loop.call_soon(self._flush_outgoing)

    def _flush_outgoing(self) -> None:
        messages, self._outgoing = self._outgoing, []
        self._write(messages)

    def _write(self, messages: list[dict[str, Any]]) -> None:
        assert self._sock is not None
        # OSError: the engine is gone; its socket's end fails the rows (`_end`)
        with contextlib.suppress(OSError):
            _send(self._sock, self._send_lock, *messages)

    def _attach(self) -> None:
        """Read the engine's messages on the running event loop (`loop.add_reader`): a
        step's message wakes the loop directly, with no thread between the socket and
        the streams (a reader thread would wait for the event loop's GIL on every step,
        up to Python's switch interval)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._detach()
        assert self._sock is not None
        loop.add_reader(self._sock.fileno(), self._readable)
        self._loop = loop

    def _detach(self) -> None:
        old, self._loop = self._loop, None
        if old is not None and not old.is_closed() and self._sock is not None:
            with contextlib.suppress(Exception):  # a loop that is gone reads nothing
                old.remove_reader(self._sock.fileno())

    def _readable(self) -> None:
        """On the event loop: what the socket holds, each whole message dispatched."""
        assert self._sock is not None
        try:  # the socket blocks for _send; this read must not stall the loop
            data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._detach()
            self._end()
            return
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if len(buffer) - start - _HEADER.size < size:
                break
            body = bytes(buffer[start + _HEADER.size : start + _HEADER.size + size])
            start += _HEADER.size + size
            self._dispatch(json.loads(body))
        del buffer[:start]

    def _end(self) -> None:
        """The engine's socket closed: the rows still in flight fail."""
        code = self._process.poll() if self._process is not None else None
        reason = (
            f"the engine process of model '{self.name}' exited"
            + (f" (exit code {code})" if code is not None else "")
            + ": see the server log"
        )
        with self._lock:
            self._gone = reason
            rows, self._rows = list(self._rows.values()), {}
        for handle in rows:
            handle._emit(EngineGone(reason))
            handle._emit(None)
        self.running = self.queued = 0
        self._ended.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        for event in message.get("ev", ()):
            kind, rid = event[0], event[1]
            handle = self._rows.get(rid)
            if handle is None:
                continue
            if kind == "d":
                handle._delta(Delta(event[2], event[3], event[4]))
            elif kind == "e":
                handle._emit(_rebuild_error(event[2], event[3]))
            else:  # "x": the row has left the batch
                with self._lock:
                    self._rows.pop(rid, None)
                handle._emit(None)
        for decoding, sampled in message.get("steps", ()):
            if self.on_step is not None:
                self.on_step(decoding, sampled)
        for waited in message.get("admits", ()):
            if self.on_admit is not None:
                self.on_admit(waited)
        if "running" in message:
            self.running, self.queued = message["running"], message["queued"]


def release_weights(model: Any) -> None:
    """Drop the API process's copy of a language model's weights (moved to PyTorch's
    `meta` device: shapes without storage); the tokenizer and settings stay."""
    module = getattr(model, "model", None)
    if module is None:
        return
    try:
        module.to("meta")
    except Exception:  # a module that cannot move keeps its weights: only memory is lost
        log.warning("model %s keeps its weights in the API process too", model.ref)


# ---------------------------------------------------------------------- engine side


class _Outbox:
    """The engine process's events of one step, sent together after it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.events: list[list[Any]] = []
        self.steps: list[tuple[int, int]] = []
        self.admits: list[float] = []
        self.ended: list[int] = []
        self.batcher: Any = None

    def take_ended(self) -> list[int]:
        with self.lock:
            ended, self.ended = self.ended, []
        return ended

    def emitter(self, rid: int) -> Emit:
        def emit(item: Delta | BaseException | None) -> None:
            if isinstance(item, Delta):
                event = ["d", rid, item.text, item.completion_tokens, item.finish_reason]
            elif isinstance(item, BaseException):
                event = ["e", rid, type(item).__name__, str(item)]
            else:
                event = ["x", rid]
            with self.lock:
                self.events.append(event)
                if event[0] == "x":
                    self.ended.append(rid)

        return emit

    def step(self, decoding: int, sampled: int) -> None:
        with self.lock:
            self.steps.append((decoding, sampled))

    def admit(self, waited: float) -> None:
        with self.lock:
            self.admits.append(waited)

    def flush(self) -> None:
        with self.lock:
            if not self.events and not self.steps and not self.admits:
                return
            message: dict[str, Any] = {"ev": self.events, "steps": self.steps}
            if self.admits:
                message["admits"] = self.admits
            self.events, self.steps, self.admits = [], [], []
        if self.batcher is not None:
            message["running"], message["queued"] = self.batcher.running, self.batcher.queued
        # OSError: the API process is gone; the main loop sees the socket close
        with contextlib.suppress(OSError):
            _send(self.sock, self.send_lock, message)


def _serve(sock: socket.socket) -> None:
    """The engine process: load the model, then run its batcher until the socket closes."""
    config = _recv(sock)
    if config is None:
        return
    outbox = _Outbox(sock)
    try:
        import torch

        from foundry.lm.continuous import ENGINE_SWITCH_INTERVAL_S
        from foundry.lm.load import load, place
        from foundry.registry import Registry

        torch.set_num_threads(config["threads"])
        # this thread reads requests while the engine thread steps: not 5 ms late
        sys.setswitchinterval(ENGINE_SWITCH_INTERVAL_S)
        settings = LMServeConfig(**config["settings"])
        home = config["home"]
        model = load(config["ref"], registry=Registry(home) if home else Registry())
        place(model, settings.device, settings.dtype)
        batcher = model.continuous_batcher(
            max_concurrent=settings.max_concurrent,
            max_queue=settings.max_queue,
            max_batch_tokens=settings.max_batch_tokens,
            prefill_chunk=settings.prefill_chunk,
            name=config["name"],
            on_step=outbox.step,
            on_admit=outbox.admit,
            flush=outbox.flush,
        )
    except Exception as exc:
        _send(sock, outbox.send_lock, {"failed": [type(exc).__name__, str(exc)]})
        return
    outbox.batcher = batcher
    batcher.start()
    _send(sock, outbox.send_lock, {"ready": True})
    handles: dict[int, Any] = {}
    while (message := _recv(sock)) is not None and message.get("op") != "close":
        rid = message["id"]
        if message["op"] == "cancel":
            handle = handles.pop(rid, None)
            if handle is not None:
                handle.cancel()
            continue
        emit = outbox.emitter(rid)
        try:
            params = GenerationConfig(**message["params"])
            handles[rid] = batcher.submit(message["ids"], params, emit, text=message["text"])
        except Exception as exc:  # the API process checked these; a race or a bug
            emit(exc)
            emit(None)
            outbox.flush()
        # forget rows that have left (a row leaves only after its submit returned, and
        # so after it was put in `handles` above)
        for ended in outbox.take_ended():
            handles.pop(ended, None)
    batcher.close()  # rows still running fail with "shutting down", flushed


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C reaches the whole process group: the server shuts down and closes this
    # engine through its socket, the one way it ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sock = socket.socket(fileno=int(args[0]))
    try:
        _serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
