"""Real processes and sockets for the interop tests: a recording upstream and the gate.

Nothing here is mocked: the upstream is an ``http.server`` on 127.0.0.1 port 0 that records
every request exactly as it arrived, and the gate is the real ``sig-gate serve`` binary,
started with its own environment and found through its ``"listening"`` log event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS_FILE = REPO_ROOT / "tests" / "vectors" / "hmac-v1.json"
VECTORS_V2_FILES = (REPO_ROOT / "tests" / "vectors" / "hmac-v2.json", REPO_ROOT / "tests" / "vectors" / "ed25519-v2.json")
MALFORMED_FILE = REPO_ROOT / "tests" / "vectors" / "malformed-headers.json"
LISTENING_TIMEOUT_SECS = 20.0


def gate_binary() -> Path:
    """``SIG_GATE_BIN`` when set, else the debug build in this checkout."""
    override = os.environ.get("SIG_GATE_BIN")
    if override:
        return Path(override)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    return target_dir / "debug" / "sig-gate"


def independent_signature(secret: str, key_id: str, headers: Mapping[str, str], method: str, target: str, body: bytes) -> str:
    """Recompute a signature from docs/protocol.md without the client package.

    The offline adapter tests check the client against this, so a shared bug in the
    package's own signed-string code could not make them pass.
    """
    path, _, query = target.partition("?")
    message = "\n".join(
        [
            "GATE-HMAC-SHA256",
            key_id,
            headers["X-Gate-Timestamp"],
            headers["X-Gate-Nonce"],
            method,
            path,
            query,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def independent_message_v2(alg: str, key_id: str, audience: str, headers: Mapping[str, str], method: str, target: str, body: bytes) -> bytes:
    """The version 2 signed string, rebuilt from docs/protocol.md without the client package."""
    path, _, query = target.partition("?")
    lines = [
        "GATE-SIG-V2",
        alg,
        key_id,
        audience,
        headers["X-Gate-Timestamp"],
        headers["X-Gate-Nonce"],
        method,
        path,
        query,
        hashlib.sha256(body).hexdigest(),
    ]
    return "\n".join(lines).encode("utf-8")


def independent_hmac_v2(secret: str, key_id: str, audience: str, headers: Mapping[str, str], method: str, target: str, body: bytes) -> str:
    """A version 2 HMAC-SHA256 signature computed without the client package."""
    message = independent_message_v2("hmac-sha256", key_id, audience, headers, method, target, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def ed25519_verifies(public_key: bytes, signature_hex: str, message: bytes) -> bool:
    """Whether ``signature_hex`` is a valid Ed25519 signature of ``message`` (as the gate checks it)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(bytes.fromhex(signature_hex), message)
    except InvalidSignature:
        return False
    return True


def signer_env_for_case(case: Mapping[str, Any], keys: Mapping[str, Mapping[str, Any]], directory: Path) -> dict[str, str]:
    """The GATE_SIGNING_* / GATE_AUDIENCE / GATE_OBSERVE_* variables a v2 vector's ``signer``
    describes, with the key files written into ``directory`` (HMAC secrets with a trailing
    newline, as `echo` writes them; PEM keys as openssl writes them)."""
    signer = case["signer"]
    key = keys[signer["key_id"]]
    signing_file = directory / f"signing-{key['id']}"
    signing_file.write_text(key["secret"] + "\n" if key["alg"] == "hmac-sha256" else key["private_key_pem"], encoding="utf-8")
    env = {
        "GATE_SIGNING_KEY_ID": key["id"],
        "GATE_SIGNING_KEY_FILE": str(signing_file),
        "GATE_SIGNING_ALG": key["alg"],
        "GATE_AUDIENCE": signer["audience"],
    }
    if signer["observe_key_id"] is not None:
        observe = keys[signer["observe_key_id"]]
        observe_file = directory / f"observe-{observe['id']}"
        observe_file.write_text(observe["private_key_pem"], encoding="utf-8")
        env.update({"GATE_OBSERVE_KEY_ID": observe["id"], "GATE_OBSERVE_KEY_FILE": str(observe_file)})
    return env


@dataclass(frozen=True)
class Received:
    """One request as the upstream saw it on the wire."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The single value of ``name`` (case-insensitive), or None; fails on duplicates."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} received {len(values)} times: {values}"
        return values[0] if values else None


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every method with 200 and a small JSON body, recording what arrived."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the gate's pooled client expects
    server: "RecordingUpstream._Server"

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; accept any method, PURGE included.
        if name.startswith("do_"):
            return self._record
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self) -> None:
        body = self._read_body()
        received = Received(self.command, self.path, list(self.headers.items()), body)
        self.server.received.put(received)
        payload = json.dumps({"ok": True, "method": self.command, "target": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        """Silence the per-request access log; pytest shows failures, not traffic."""


class RecordingUpstream:
    """A threaded HTTP/1.1 server on 127.0.0.1:0 standing in for tool-gate."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        received: "queue.Queue[Received]"

    def __init__(self) -> None:
        self._server = self._Server(("127.0.0.1", 0), _RecordingHandler)
        self._server.received = queue.Queue()
        # A short poll interval keeps shutdown() (called at every test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="upstream", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def next_request(self, timeout: float = 5.0) -> Received:
        """The next request that reached the upstream; fails if none arrives in time."""
        try:
            return self._server.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no request reached the upstream") from None

    def assert_nothing_received(self) -> None:
        """A rejected request must never reach the upstream, not even its headers."""
        assert self._server.received.empty(), f"upstream received {self._server.received.get_nowait()}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class GateProcess:
    """A running ``sig-gate serve``, with its JSON log lines collected from stderr."""

    process: subprocess.Popen[bytes]
    proxy_url: str = ""
    admin_url: str = ""
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw_stderr: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, binary: Path, env: Mapping[str, str], cwd: Path) -> "GateProcess":
        """Start the gate on loopback port 0 and wait for its ``listening`` event.

        The environment is built from scratch (only ``PATH`` is inherited) so that no
        ``INTERSERVICE_*`` value of the developer's shell can leak into a test, and the
        working directory is empty so that no ``config/sig-gate.toml`` is picked up.
        """
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATE_LISTEN": "127.0.0.1:0",
            "GATE_ADMIN_LISTEN": "127.0.0.1:0",
            "GATE_LOG_FORMAT": "json",
            "RUST_BACKTRACE": "1",
            **env,
        }
        process = subprocess.Popen(
            [str(binary), "serve"],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        gate = cls(process)
        listening: "queue.Queue[dict[str, Any]]" = queue.Queue()
        reader = threading.Thread(target=gate._read_stderr, args=(listening,), name="gate-stderr", daemon=True)
        reader.start()
        deadline = time.monotonic() + LISTENING_TIMEOUT_SECS
        while True:
            try:
                event = listening.get(timeout=0.1)
                break
            except queue.Empty:
                if process.poll() is not None:
                    reader.join(timeout=2)
                    raise RuntimeError(
                        f"sig-gate exited with {process.returncode} before listening:\n" + "".join(gate.raw_stderr)
                    )
                if time.monotonic() > deadline:
                    gate.stop()
                    raise RuntimeError(
                        f"sig-gate did not log 'listening' within {LISTENING_TIMEOUT_SECS:.0f} s:\n"
                        + "".join(gate.raw_stderr)
                    )
        gate.proxy_url = f"http://{event['proxy_addr']}"
        gate.admin_url = f"http://{event['admin_addr']}"
        return gate

    def _read_stderr(self, listening: "queue.Queue[dict[str, Any]]") -> None:
        """Drain stderr for the life of the process so the pipe can never fill and block it."""
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace")
            self.raw_stderr.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            self.logs.append(event)
            if event.get("message") == "listening" and "proxy_addr" in event:
                listening.put(event)

    def events(self, message: str) -> list[dict[str, Any]]:
        """Log events whose message is exactly ``message``."""
        return [e for e in self.logs if e.get("message") == message]

    def stop(self) -> Optional[int]:
        """SIGTERM, then wait for the drain; SIGKILL only if the gate hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
