"""Live interop: the Python adapters against the real ``sig-gate serve`` binary on loopback.

Every test starts its own gate (``start_gate``) in front of a recording upstream and sends real
HTTP requests through httpx (sync and async) and requests. Accepted requests must arrive at
the upstream byte for byte; rejected ones must get the contract's 401 and never reach it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import httpx
import pytest
import requests

from conftest import StartGate
from harness import MALFORMED_FILE, GateProcess, RecordingUpstream
from sig_gate_client import GateAuth, GateRequestsAuth, GateSigner, sign_gate_request

NEW = "interop-new-secret-0123456789abcdefghijkl"
OLD = "interop-old-secret-0123456789abcdefghijkl"
KINDS = ["httpx", "httpx-async", "requests"]
REJECTION_HEADERS = {"www-authenticate": 'GateHMAC realm="sig-gate"', "content-type": "application/json"}

UNICODE_JSON = json.dumps({"query": "café ☕ 東京", "tags": ["naïve", "résumé"]}, ensure_ascii=False).encode()

# (method, target exactly as sent, body): the shapes the vectors cover, now over real sockets.
REQUESTS = [
    ("POST", "/tools/search?q=a+b&r=c%20d&tag=x&tag=y&tag=x", UNICODE_JSON),
    ("GET", "/files/a%2Fb%20c", b""),
    ("GET", "/items?tag=b&tag=a&tag=b", b""),
    ("PATCH", "/tools/42", b'{"enabled":false}'),
    ("PURGE", "/cache/tools", b""),
    ("PUT", "/blobs/upload", bytes(range(256))),
    ("GET", "/", b""),
]


@dataclass
class Reply:
    """What the client got back, whichever library sent the request."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def send(
    kind: str,
    gate: GateProcess,
    signer: Optional[GateSigner],
    method: str,
    target: str,
    body: bytes = b"",
    headers: Optional[dict[str, str]] = None,
) -> Reply:
    """Send one request through the gate with the named library and adapter.

    ``signer=None`` sends the request unsigned (for tests that set the headers by hand).
    ``trust_env`` is off so a developer's HTTP_PROXY cannot reroute loopback traffic.
    """
    url = gate.proxy_url + target
    if kind == "httpx":
        with httpx.Client(auth=GateAuth(signer) if signer else None, trust_env=False, timeout=10) as client:
            r = client.request(method, url, content=body, headers=headers)
        return Reply(r.status_code, r.headers, r.content)
    if kind == "httpx-async":

        async def run() -> httpx.Response:
            auth = GateAuth(signer) if signer else None
            async with httpx.AsyncClient(auth=auth, trust_env=False, timeout=10) as client:
                return await client.request(method, url, content=body, headers=headers)

        r = asyncio.run(run())
        return Reply(r.status_code, r.headers, r.content)
    if kind == "requests":
        with requests.Session() as session:
            session.trust_env = False
            auth = GateRequestsAuth(signer) if signer else None
            rr = session.request(method, url, data=body, headers=headers, auth=auth, timeout=10)
        return Reply(rr.status_code, rr.headers, rr.content)
    raise AssertionError(kind)


def assert_forwarded(reply: Reply, upstream: RecordingUpstream, method: str, target: str, body: bytes, key_id: str) -> None:
    """Accepted, and the upstream got exactly what was signed, plus the verified key id."""
    assert reply.status == 200, reply.body
    received = upstream.next_request()
    assert (received.method, received.target, received.body) == (method, target, body)
    assert received.header("X-Gate-Verified-Key-Id") == key_id
    assert received.header("X-Gate-Signature") is not None, "signature headers are forwarded"


def assert_rejected(reply: Reply, upstream: RecordingUpstream, reason: str) -> None:
    """The contract's 401, byte for byte, and nothing reached the upstream."""
    assert reply.status == 401, (reply.status, reply.body)
    assert reply.body == b'{"error":"invalid request signature","reason":"%s"}' % reason.encode()
    for name, value in REJECTION_HEADERS.items():
        assert reply.headers[name] == value
    upstream.assert_nothing_received()


def gate_env(**env: str) -> dict[str, str]:
    """Gate settings by their contract names, dropping the ones given as empty."""
    return {k: v for k, v in env.items() if v}


# --- accepted in single, dual and strict modes ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_single_mode_accepts_every_request_shape(kind: str, start_gate: StartGate, upstream: RecordingUpstream) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    signer = GateSigner.from_env(secret=NEW)
    for method, target, body in REQUESTS:
        reply = send(kind, gate, signer, method, target, body)
        assert_forwarded(reply, upstream, method, target, body, key_id="current")
        assert json.loads(reply.body)["target"] == target


@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_library_encoded_params_are_signed_as_sent(kind: str, start_gate: StartGate, upstream: RecordingUpstream) -> None:
    """Let the library build the query from params=; the gate must accept what it built."""
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    signer = GateSigner.from_env(secret=NEW)
    params: list[tuple[str, str | int | float | bool | None]] = [("q", "a b"), ("q", "ü+x"), ("empty", "")]
    if kind == "httpx":
        with httpx.Client(auth=GateAuth(signer), trust_env=False, timeout=10) as client:
            status = client.get(gate.proxy_url + "/search", params=params).status_code
    else:
        with requests.Session() as session:
            session.trust_env = False
            status = session.get(gate.proxy_url + "/search", params=params, auth=GateRequestsAuth(signer), timeout=10).status_code
    assert status == 200
    assert upstream.next_request().target == "/search?q=a+b&q=%C3%BC%2Bx&empty="


def test_httpx_streaming_body_through_the_gate(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)

    def chunks() -> Iterator[bytes]:
        for i in range(50):
            yield f"chunk-{i:02d}-ü;".encode()

    with httpx.Client(auth=GateAuth(secret=NEW), trust_env=False, timeout=10) as client:
        reply = client.post(gate.proxy_url + "/stream?x=1", content=chunks())
    assert reply.status_code == 200
    received = upstream.next_request()
    assert received.body == b"".join(chunks())


@pytest.mark.parametrize("strict", ["false", "true"])
@pytest.mark.parametrize("kind", KINDS)
def test_dual_secret_gate_accepts_old_new_and_dual_signing_clients(
    kind: str, strict: str, start_gate: StartGate, upstream: RecordingUpstream
) -> None:
    """The overlap window: the gate holds both secrets; clients may be on either, or dual-sign."""
    gate = start_gate(
        INTERSERVICE_HMAC_SECRET=NEW,
        INTERSERVICE_HMAC_KEY_ID="k2",
        INTERSERVICE_HMAC_SECRET_PREV=OLD,
        INTERSERVICE_HMAC_KEY_ID_PREV="k1",
        INTERSERVICE_HMAC_STRICT_KEY_ID=strict,
    )
    clients = [
        ("not yet rotated", GateSigner.from_env(secret=OLD, key_id="k1"), "k1"),
        ("rotated", GateSigner.from_env(secret=NEW, key_id="k2"), "k2"),
        (
            "dual-signing",
            GateSigner.from_env(secret=NEW, key_id="k2", prev_secret=OLD, prev_key_id="k1", dual_sign=True),
            "k2",
        ),
    ]
    method, target, body = REQUESTS[0]
    for _label, signer, verified in clients:
        reply = send(kind, gate, signer, method, target, body)
        assert_forwarded(reply, upstream, method, target, body, key_id=verified)


@pytest.mark.parametrize(
    ("gate_secret", "gate_key_id", "strict", "labels", "verified"),
    [
        (OLD, "k1", "false", ("k2", "k1"), "k1"),
        (OLD, "k1", "true", ("k2", "k1"), "k1"),
        (NEW, "k2", "false", ("k2", "k1"), "k2"),
        (NEW, "k2", "true", ("k2", "k1"), "k2"),
        # Default labels: the old gate calls its only secret "current", the client calls the
        # same secret "previous". Non-strict verification accepts it regardless of the label.
        (OLD, "", "false", ("current", "previous"), "current"),
        (NEW, "", "false", ("current", "previous"), "current"),
    ],
    ids=["old-gate", "old-gate-strict", "new-gate", "new-gate-strict", "old-gate-default-ids", "new-gate-default-ids"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_dual_signing_client_works_with_a_gate_on_either_side_of_the_rotation(
    kind: str,
    gate_secret: str,
    gate_key_id: str,
    strict: str,
    labels: tuple[str, str],
    verified: str,
    start_gate: StartGate,
    upstream: RecordingUpstream,
) -> None:
    """Signer redeployed first (gate knows only OLD) or gate redeployed and cut over (only NEW)."""
    gate = start_gate(
        **gate_env(
            INTERSERVICE_HMAC_SECRET=gate_secret,
            INTERSERVICE_HMAC_KEY_ID=gate_key_id,
            INTERSERVICE_HMAC_STRICT_KEY_ID=strict,
        )
    )
    signer = GateSigner.from_env(secret=NEW, key_id=labels[0], prev_secret=OLD, prev_key_id=labels[1], dual_sign=True)
    for method, target, body in REQUESTS[:3]:
        reply = send(kind, gate, signer, method, target, body)
        assert_forwarded(reply, upstream, method, target, body, key_id=verified)


def test_single_signing_new_client_is_rejected_by_a_gate_that_only_knows_the_old_secret(
    start_gate: StartGate, upstream: RecordingUpstream
) -> None:
    """Why dual-sign exists: without it, redeploying the signer first breaks traffic."""
    gate = start_gate(INTERSERVICE_HMAC_SECRET=OLD)
    reply = send("httpx", gate, GateSigner.from_env(secret=NEW), "GET", "/tools/list")
    assert_rejected(reply, upstream, "bad_signature")


def test_strict_mode_binds_key_ids_to_secrets(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    strict = start_gate(
        INTERSERVICE_HMAC_SECRET=NEW,
        INTERSERVICE_HMAC_KEY_ID="k2",
        INTERSERVICE_HMAC_SECRET_PREV=OLD,
        INTERSERVICE_HMAC_KEY_ID_PREV="k1",
        INTERSERVICE_HMAC_STRICT_KEY_ID="true",
    )
    mislabelled = GateSigner.from_env(secret=OLD, key_id="k2")
    assert_rejected(send("requests", strict, mislabelled, "GET", "/x"), upstream, "bad_signature")
    unknown = GateSigner.from_env(secret=OLD, key_id="k9")
    assert_rejected(send("requests", strict, unknown, "GET", "/x"), upstream, "unknown_key_id")

    lenient = start_gate(
        INTERSERVICE_HMAC_SECRET=NEW,
        INTERSERVICE_HMAC_KEY_ID="k2",
        INTERSERVICE_HMAC_SECRET_PREV=OLD,
        INTERSERVICE_HMAC_KEY_ID_PREV="k1",
    )
    assert_forwarded(send("requests", lenient, unknown, "GET", "/x"), upstream, "GET", "/x", b"", key_id="k1")


# --- rejections -------------------------------------------------------------------------------


SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY = "POST", "/tools/run?b=2&a=1", UNICODE_JSON


def _signed(**overrides: object) -> dict[str, str]:
    return sign_gate_request(SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, secret=NEW, **overrides)  # type: ignore[arg-type]


TAMPERED = [
    # (case, method, target, body, header changes, reason); malformed and missing signature
    # headers are the shared table's (test_shared_malformed_header_case).
    ("body changed", SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY.replace("東京".encode(), "大阪".encode()), {}, "bad_signature"),
    ("body re-serialised", SIGNED_METHOD, SIGNED_TARGET, json.dumps(json.loads(SIGNED_BODY)).encode(), {}, "bad_signature"),
    ("query reordered", SIGNED_METHOD, "/tools/run?a=1&b=2", SIGNED_BODY, {}, "bad_signature"),
    ("path changed", SIGNED_METHOD, "/tools/run2?b=2&a=1", SIGNED_BODY, {}, "bad_signature"),
    ("method changed", "PUT", SIGNED_TARGET, SIGNED_BODY, {}, "bad_signature"),
    ("key id changed", SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, {"X-Gate-Key-Id": "other"}, "bad_signature"),
]


@pytest.mark.parametrize(
    ("method", "target", "body", "changes", "reason"), [case[1:] for case in TAMPERED], ids=[case[0] for case in TAMPERED]
)
def test_tampered_request_is_rejected_with_the_contract_body(
    method: str,
    target: str,
    body: bytes,
    changes: dict[str, object],
    reason: str,
    start_gate: StartGate,
    upstream: RecordingUpstream,
) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    headers = _signed()
    for name, change in changes.items():
        if change is None:
            del headers[name]
        elif callable(change):
            headers[name] = change(headers[name])
        else:
            headers[name] = str(change)
    reply = send("httpx", gate, None, method, target, body, headers=headers)
    assert_rejected(reply, upstream, reason)


MALFORMED_CASES: list[dict[str, Any]] = json.loads(MALFORMED_FILE.read_text(encoding="utf-8"))["cases"]


def apply_malformed_case(case: dict[str, Any], signed: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """The header lines of a signed request after ``case``'s changes, as the file's
    ``description`` defines them: remove, set (and set_base64), uppercase, duplicate, append."""
    set_lines = [(name, value.encode("utf-8")) for name, value in case.get("set", {}).items()]
    set_lines += [(name, base64.b64decode(value, validate=True)) for name, value in case.get("set_base64", {}).items()]
    replaced = {name.lower() for name in case.get("remove", [])} | {name.lower() for name, _ in set_lines}
    lines = [(name, value.encode("utf-8")) for name, value in signed.items() if name.lower() not in replaced]
    lines += set_lines
    upper = {name.lower() for name in case.get("uppercase", [])}
    lines = [(name, value.upper() if name.lower() in upper else value) for name, value in lines]
    for duplicated in case.get("duplicate", []):
        lines += [(name, value) for name, value in lines if name.lower() == duplicated.lower()]
    lines += [(name, value.encode("utf-8")) for name, value in case.get("append", [])]
    return [(name.encode("ascii"), value) for name, value in lines]


@pytest.fixture(scope="module")
def malformed_gate(sig_gate_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GateProcess, RecordingUpstream]]:
    """One gate for every case of the shared table (a gate per case would start 50 processes)."""
    upstream = RecordingUpstream()
    gate = GateProcess.start(
        sig_gate_bin, {"GATE_UPSTREAM": upstream.url, "INTERSERVICE_HMAC_SECRET": NEW}, cwd=tmp_path_factory.mktemp("malformed")
    )
    yield gate, upstream
    gate.stop()
    upstream.close()


def test_shared_malformed_table_is_read() -> None:
    assert len(MALFORMED_CASES) >= 40
    assert len({case["name"] for case in MALFORMED_CASES}) == len(MALFORMED_CASES)


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=[case["name"] for case in MALFORMED_CASES])
def test_shared_malformed_header_case(case: dict[str, Any], malformed_gate: tuple[GateProcess, RecordingUpstream]) -> None:
    """Each case of tests/vectors/malformed-headers.json, sent raw by httpx: the contract's 401."""
    gate, upstream = malformed_gate
    lines = apply_malformed_case(case, _signed())
    with httpx.Client(trust_env=False, timeout=10) as client:
        r = client.request(SIGNED_METHOD, gate.proxy_url + SIGNED_TARGET, content=SIGNED_BODY, headers=lines)
    reply = Reply(r.status_code, r.headers, r.content)
    try:
        # First, so that a request that got through is taken off the shared upstream here
        # and not blamed on the next case.
        upstream.assert_nothing_received()
    except AssertionError as error:
        raise AssertionError(f"{case['name']}: reached the upstream, answered {reply.status}") from error
    expected = b'{"error":"invalid request signature","reason":"%s"}' % case["reason"].encode()
    assert (reply.status, reply.body) == (401, expected), case["name"]
    for name, value in REJECTION_HEADERS.items():
        assert reply.headers[name] == value, case["name"]


def test_stale_timestamp_and_replay_are_rejected(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    stale = _signed(timestamp=int(time.time()) - 3600)
    assert_rejected(send("requests", gate, None, SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, stale), upstream, "stale_timestamp")

    fresh = _signed()
    first = send("requests", gate, None, SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, fresh)
    assert_forwarded(first, upstream, SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, key_id="current")
    replay = send("httpx", gate, None, SIGNED_METHOD, SIGNED_TARGET, SIGNED_BODY, fresh)
    assert_rejected(replay, upstream, "replayed_nonce")


def test_rejections_are_logged_without_secrets_or_signatures(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW, INTERSERVICE_HMAC_SECRET_PREV=OLD)
    headers = _signed()
    send("httpx", gate, None, SIGNED_METHOD, "/tools/run?secret_query=1", SIGNED_BODY, headers=headers)
    deadline = time.monotonic() + 5
    while not gate.events("invalid request signature") and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = gate.events("invalid request signature")
    assert event["reason"] == "bad_signature"
    log_text = "".join(gate.raw_stderr)
    for forbidden in (NEW, OLD, headers["X-Gate-Signature"], "secret_query"):
        assert forbidden not in log_text


# --- `sig-gate sign` and the Python signer agree -----------------------------------------------


CLI_CASES = [
    ({"INTERSERVICE_HMAC_SECRET": NEW}, "GET", "/tools/list", b""),
    ({"INTERSERVICE_HMAC_SECRET": NEW, "INTERSERVICE_HMAC_KEY_ID": "k2"}, "POST", "/tools/search?q=a+b&r=c%20d", UNICODE_JSON),
    ({"INTERSERVICE_HMAC_SECRET": NEW}, "PURGE", "/p?", b"\x00\xff\r\n"),
    (
        {
            "INTERSERVICE_HMAC_SECRET": NEW,
            "INTERSERVICE_HMAC_SECRET_PREV": OLD,
            "INTERSERVICE_HMAC_KEY_ID": "k-2025-11",
            "INTERSERVICE_HMAC_KEY_ID_PREV": "k-2025-08",
            "TOOL_GATE_DUAL_SIGN": "YES",
        },
        "PATCH",
        "/files/a%2Fb%20c?x=1&x=2",
        UNICODE_JSON,
    ),
    (
        {"INTERSERVICE_HMAC_SECRET": NEW, "INTERSERVICE_HMAC_SECRET_PREV": OLD, "TOOL_GATE_DUAL_SIGN": "1"},
        "DELETE",
        "/",
        b"",
    ),
]


def _isolated_env(extra: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_", "GATE_"))}
    return {**base, **extra}


@pytest.mark.parametrize(("env", "method", "target", "body"), CLI_CASES, ids=["plain", "query", "empty-query", "dual", "dual-defaults"])
def test_rust_and_python_sign_commands_print_identical_lines(
    sig_gate_bin: Path, tmp_path: Path, env: dict[str, str], method: str, target: str, body: bytes
) -> None:
    import sys

    body_file = tmp_path / "body"
    body_file.write_bytes(body)
    args = ["sign", "--method", method, "--path", target, "--body-file", str(body_file)]
    args += ["--timestamp", "1764000000", "--nonce", "interop-cli-nonce-0001"]
    rust = subprocess.run([str(sig_gate_bin), *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True)
    python = subprocess.run(
        [sys.executable, "-m", "sig_gate_client", *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True
    )
    assert rust.returncode == 0, rust.stderr
    assert python.returncode == 0, python.stderr
    assert rust.stdout == python.stdout
    assert rust.stdout.decode().count("\n") == (5 if "TOOL_GATE_DUAL_SIGN" in env else 4)


@pytest.mark.parametrize(
    "env",
    [{}, {"INTERSERVICE_HMAC_SECRET": "weak"}, {"INTERSERVICE_HMAC_SECRET": NEW, "TOOL_GATE_DUAL_SIGN": "true"}],
    ids=["no-secret", "weak-secret", "dual-without-prev"],
)
def test_rust_and_python_sign_commands_refuse_the_same_configurations(
    sig_gate_bin: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    import sys

    args = ["sign", "--method", "GET", "--path", "/"]
    rust = subprocess.run([str(sig_gate_bin), *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True)
    python = subprocess.run(
        [sys.executable, "-m", "sig_gate_client", *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True
    )
    assert rust.returncode == python.returncode == 2, (rust.stderr, python.stderr)


def test_headers_printed_by_the_rust_cli_are_accepted_through_the_gate(
    sig_gate_bin: Path, tmp_path: Path, start_gate: StartGate, upstream: RecordingUpstream
) -> None:
    """Closing the loop: Rust signs, Python sends, Rust verifies."""
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    body_file = tmp_path / "body"
    body_file.write_bytes(UNICODE_JSON)
    target = "/tools/search?q=a+b&r=c%20d"
    rust = subprocess.run(
        [str(sig_gate_bin), "sign", "--method", "POST", "--path", target, "--body-file", str(body_file)],
        env=_isolated_env({"INTERSERVICE_HMAC_SECRET": NEW}),
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    headers = dict(line.split(": ", 1) for line in rust.stdout.decode().splitlines())
    reply = send("requests", gate, None, "POST", target, UNICODE_JSON, headers=headers)
    assert_forwarded(reply, upstream, "POST", target, UNICODE_JSON, key_id="current")


def test_gate_exits_0_on_sigterm_after_serving(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    """The harness stops gates with SIGTERM; check that this is the clean shutdown it claims."""
    gate = start_gate(INTERSERVICE_HMAC_SECRET=NEW)
    assert send("httpx", gate, GateSigner.from_env(secret=NEW), "GET", "/x").status == 200
    upstream.next_request()
    assert gate.stop() == 0, "".join(gate.raw_stderr)
