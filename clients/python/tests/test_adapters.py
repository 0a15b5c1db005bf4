"""The httpx and requests adapters, offline: the signature must match what is actually sent.

Each test captures the request at the transport (after the library has encoded the URL and
serialised the body) and re-verifies the headers with an independent HMAC computation over
exactly those bytes. The live gate repeats this over real sockets in test_interop.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
import requests
from requests.adapters import BaseAdapter

from harness import ed25519_verifies, independent_hmac_v2, independent_message_v2, independent_signature
from sig_gate_client import Ed25519SigningKey, GateAuth, GateRequestsAuth, GateSigner, SigningKey
from sig_gate_client.requests_auth import UnsignableBodyError

SECRET = "adapter-secret-0123456789abcdefghijklm"
PREV = "adapter-previous-0123456789abcdefghijk"
BASE = "http://gate.test"
UNICODE_JSON: dict[str, Any] = {"query": "café ☕ 東京", "n": 1}


def assert_signed(headers: Any, method: str, target: str, body: bytes, *, key_id: str = "current") -> None:
    """The headers carry a valid current signature over exactly (method, target, body)."""
    values = {name: headers[name] for name in ("X-Gate-Timestamp", "X-Gate-Nonce")}
    assert headers["X-Gate-Key-Id"] == key_id
    assert headers["X-Gate-Signature"] == independent_signature(SECRET, key_id, values, method, target, body)


# --- httpx -----------------------------------------------------------------------------------


class HttpxRecorder:
    """A MockTransport that keeps every request it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(200, json={"ok": True})


@pytest.fixture
def httpx_client() -> Iterator[tuple[httpx.Client, HttpxRecorder]]:
    recorder = HttpxRecorder()
    with httpx.Client(base_url=BASE, auth=GateAuth(secret=SECRET), transport=httpx.MockTransport(recorder)) as client:
        yield client, recorder


def test_httpx_json_body_and_encoded_params(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client
    client.post("/tools/search", params=[("q", "a b"), ("tag", "x"), ("tag", "y")], json=UNICODE_JSON)
    (sent,) = recorder.sent
    assert sent.url.raw_path == b"/tools/search?q=a+b&tag=x&tag=y"
    assert "東京".encode() in sent.content
    assert_signed(sent.headers, "POST", "/tools/search?q=a+b&tag=x&tag=y", sent.content)


def test_httpx_signs_the_percent_encoded_target_not_the_callers_text(
    httpx_client: tuple[httpx.Client, HttpxRecorder],
) -> None:
    client, recorder = httpx_client
    client.get("/files/café dir/a%2Fb?q=ü x&r=c%20d&s=a+b")
    (sent,) = recorder.sent
    target = sent.url.raw_path.decode()
    assert target == "/files/caf%C3%A9%20dir/a%2Fb?q=%C3%BC%20x&r=c%20d&s=a+b"
    assert_signed(sent.headers, "GET", target, b"")


def test_httpx_keeps_a_bare_question_mark(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client
    client.get("/p?")
    assert_signed(recorder.sent[0].headers, "GET", "/p?", b"")


def test_httpx_reads_and_signs_a_streaming_body(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client

    def chunks() -> Iterator[bytes]:
        yield b"first,"
        yield "zweiter-ü,".encode()
        yield b"\x00\xff"

    client.put("/blobs/upload", content=chunks())
    (sent,) = recorder.sent
    assert sent.content == "first,zweiter-ü,".encode() + b"\x00\xff"
    assert_signed(sent.headers, "PUT", "/blobs/upload", sent.content)


def test_httpx_multipart_is_signed_as_encoded(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client
    client.post("/upload", files={"file": ("a.txt", b"hello", "text/plain")}, data={"k": "v"})
    (sent,) = recorder.sent
    assert b"hello" in sent.content and b"boundary" not in sent.content[:2]
    assert_signed(sent.headers, "POST", "/upload", sent.content)


def test_httpx_extension_method(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client
    client.request("PURGE", "/cache/tools")
    assert_signed(recorder.sent[0].headers, "PURGE", "/cache/tools", b"")


def test_httpx_async_client_with_async_stream() -> None:
    recorder = HttpxRecorder()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b'"\xc3\xbc"}'

    async def run() -> None:
        transport = httpx.MockTransport(recorder)
        async with httpx.AsyncClient(base_url=BASE, auth=GateAuth(secret=SECRET), transport=transport) as client:
            await client.post("/tools/run?x=1", content=chunks())

    asyncio.run(run())
    (sent,) = recorder.sent
    assert sent.content == '{"a":"ü"}'.encode()
    assert_signed(sent.headers, "POST", "/tools/run?x=1", sent.content)


def test_httpx_replaces_stale_signature_headers(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    client, recorder = httpx_client
    client.get("/x", headers={"X-Gate-Signatures": "[]", "X-Gate-Signature": "0" * 64})
    (sent,) = recorder.sent
    assert "X-Gate-Signatures" not in sent.headers
    assert sent.headers.get_list("X-Gate-Signature") == [sent.headers["X-Gate-Signature"]]
    assert_signed(sent.headers, "GET", "/x", b"")


def test_httpx_dual_sign_adds_both_signatures() -> None:
    recorder = HttpxRecorder()
    auth = GateAuth(secret=SECRET, prev_secret=PREV, dual_sign=True)
    with httpx.Client(base_url=BASE, auth=auth, transport=httpx.MockTransport(recorder)) as client:
        client.post("/t", json=UNICODE_JSON)
    (sent,) = recorder.sent
    entries = json.loads(sent.headers["X-Gate-Signatures"])
    values = {n: sent.headers[n] for n in ("X-Gate-Timestamp", "X-Gate-Nonce")}
    assert entries == [
        {"key_id": "current", "signature": independent_signature(SECRET, "current", values, "POST", "/t", sent.content)},
        {"key_id": "previous", "signature": independent_signature(PREV, "previous", values, "POST", "/t", sent.content)},
    ]


def test_adapter_fails_at_construction_without_a_secret() -> None:
    with pytest.raises(ValueError, match="INTERSERVICE_HMAC_SECRET"):
        GateAuth()
    with pytest.raises(ValueError, match="INTERSERVICE_HMAC_SECRET"):
        GateRequestsAuth()


def test_adapter_takes_a_prebuilt_signer_but_not_both() -> None:
    signer = GateSigner.from_env(secret=SECRET)
    assert GateAuth(signer).signer is signer
    with pytest.raises(TypeError):
        GateAuth(signer, secret=SECRET)
    assert SECRET not in repr(GateAuth(signer)) and SECRET not in repr(GateRequestsAuth(signer))


# --- requests --------------------------------------------------------------------------------


class RequestsRecorder(BaseAdapter):
    """A transport adapter that keeps every PreparedRequest instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def requests_session() -> Iterator[tuple[requests.Session, RequestsRecorder]]:
    recorder = RequestsRecorder()
    with requests.Session() as session:
        session.mount("http://", recorder)
        session.auth = GateRequestsAuth(secret=SECRET)
        yield session, recorder


def _body(request: requests.PreparedRequest) -> bytes:
    assert isinstance(request.body, (bytes, type(None))), type(request.body)
    return request.body or b""


def test_requests_json_body_and_params(requests_session: tuple[requests.Session, RequestsRecorder]) -> None:
    session, recorder = requests_session
    session.post(BASE + "/tools/search", params=[("q", "a b"), ("tag", "x"), ("tag", "y")], json=UNICODE_JSON)
    (sent,) = recorder.sent
    assert sent.path_url == "/tools/search?q=a+b&tag=x&tag=y"
    assert_signed(sent.headers, "POST", sent.path_url, _body(sent))


def test_requests_raw_query_and_encoded_path(requests_session: tuple[requests.Session, RequestsRecorder]) -> None:
    session, recorder = requests_session
    session.get(BASE + "/files/a%2Fb%20c?q=a+b&r=c%20d&t=1&t=2")
    (sent,) = recorder.sent
    assert sent.path_url == "/files/a%2Fb%20c?q=a+b&r=c%20d&t=1&t=2"
    assert_signed(sent.headers, "GET", sent.path_url, b"")


def test_requests_str_body_is_sent_as_the_signed_utf8_bytes(
    requests_session: tuple[requests.Session, RequestsRecorder],
) -> None:
    session, recorder = requests_session
    text = '{"city":"東京","drink":"café"}'
    session.post(BASE + "/t", data=text, headers={"Content-Type": "application/json"})
    (sent,) = recorder.sent
    assert sent.body == text.encode("utf-8")
    assert sent.headers["Content-Length"] == str(len(text.encode("utf-8")))
    assert_signed(sent.headers, "POST", "/t", text.encode("utf-8"))


def test_requests_form_and_multipart(requests_session: tuple[requests.Session, RequestsRecorder]) -> None:
    session, recorder = requests_session
    session.post(BASE + "/form", data={"a": "ü b"})
    session.post(BASE + "/upload", files={"file": ("a.bin", b"\x00\x01", "application/octet-stream")})
    form, multipart = recorder.sent
    assert form.body == b"a=%C3%BC+b"
    assert_signed(form.headers, "POST", "/form", b"a=%C3%BC+b")
    assert_signed(multipart.headers, "POST", "/upload", _body(multipart))


@pytest.mark.parametrize(
    "make_body",
    [lambda: (chunk for chunk in [b"a", b"b"]), lambda: io.BytesIO(b"file body"), lambda: iter([b"x"])],
    ids=["generator", "file", "iterator"],
)
def test_requests_streaming_body_is_refused_clearly(
    requests_session: tuple[requests.Session, RequestsRecorder], make_body: Any
) -> None:
    session, recorder = requests_session
    with pytest.raises(UnsignableBodyError, match="cannot sign a streaming request body"):
        session.post(BASE + "/t", data=make_body())
    assert recorder.sent == [], "an unsigned request must not be sent"


def test_requests_dual_sign() -> None:
    recorder = RequestsRecorder()
    with requests.Session() as session:
        session.mount("http://", recorder)
        response = session.patch(
            BASE + "/tools/1?x=1",
            json={"enabled": False},
            auth=GateRequestsAuth(secret=SECRET, key_id="k2", prev_secret=PREV, prev_key_id="k1", dual_sign=True),
        )
    assert response.status_code == 200
    (sent,) = recorder.sent
    assert_signed(sent.headers, "PATCH", "/tools/1?x=1", _body(sent), key_id="k2")
    entries = json.loads(sent.headers["X-Gate-Signatures"])
    values = {n: str(sent.headers[n]) for n in ("X-Gate-Timestamp", "X-Gate-Nonce")}
    assert entries[1] == {
        "key_id": "k1",
        "signature": independent_signature(PREV, "k1", values, "PATCH", "/tools/1?x=1", _body(sent)),
    }


# --- version 2 through both adapters ----------------------------------------------------------


@pytest.fixture(scope="module")
def v2_signer() -> tuple[GateSigner, bytes]:
    """Version 2: an HMAC signing key and an observed Ed25519 key; also the Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signer = GateSigner(SigningKey("svc-2026-12", SECRET.encode()), audience="tool-gate", observe=Ed25519SigningKey("svc-ed", private))
    return signer, public


def assert_signed_v2(headers: Any, method: str, target: str, body: bytes, public: bytes) -> None:
    """Version 2 headers: the HMAC pair and the observed Ed25519 entry, over exactly these bytes."""
    values = {name: str(headers[name]) for name in ("X-Gate-Timestamp", "X-Gate-Nonce")}
    assert headers["X-Gate-Version"] == "2" and headers["X-Gate-Key-Id"] == "svc-2026-12"
    assert headers["X-Gate-Signature"] == independent_hmac_v2(SECRET, "svc-2026-12", "tool-gate", values, method, target, body)
    first, observed = json.loads(headers["X-Gate-Signatures"])
    assert first == {"key_id": "svc-2026-12", "signature": headers["X-Gate-Signature"]}
    message = independent_message_v2("ed25519", "svc-ed", "tool-gate", values, method, target, body)
    assert observed["key_id"] == "svc-ed" and ed25519_verifies(public, observed["signature"], message)


def test_httpx_signs_version_2(v2_signer: tuple[GateSigner, bytes]) -> None:
    signer, public = v2_signer
    recorder = HttpxRecorder()
    with httpx.Client(base_url=BASE, auth=GateAuth(signer), transport=httpx.MockTransport(recorder)) as client:
        client.post("/tools/café", params={"q": "a b"}, json=UNICODE_JSON)
    (sent,) = recorder.sent
    assert sent.url.raw_path == b"/tools/caf%C3%A9?q=a+b"
    assert_signed_v2(sent.headers, "POST", "/tools/caf%C3%A9?q=a+b", sent.content, public)


def test_requests_signs_version_2(v2_signer: tuple[GateSigner, bytes]) -> None:
    signer, public = v2_signer
    recorder = RequestsRecorder()
    with requests.Session() as session:
        session.mount("http://", recorder)
        session.put(BASE + "/blobs/1?x=%3F", data=bytes(range(256)), auth=GateRequestsAuth(signer))
    (sent,) = recorder.sent
    assert_signed_v2(sent.headers, "PUT", "/blobs/1?x=%3F", _body(sent), public)


def test_version_1_signer_drops_a_stale_version_header(httpx_client: tuple[httpx.Client, HttpxRecorder]) -> None:
    """A request copied from a version 2 one must not keep X-Gate-Version beside a v1 signature."""
    client, recorder = httpx_client
    client.get("/x", headers={"X-Gate-Version": "2", "X-Gate-Signatures": "[]"})
    (sent,) = recorder.sent
    assert "X-Gate-Version" not in sent.headers and "X-Gate-Signatures" not in sent.headers
    assert_signed(sent.headers, "GET", "/x", b"")


# --- optional dependencies -------------------------------------------------------------------


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing ``blocked`` modules fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True)


def test_package_imports_neither_http_library() -> None:
    result = _run_without(
        [],
        "import sys, sig_gate_client\n"
        "assert 'httpx' not in sys.modules and 'requests' not in sys.modules, sorted(sys.modules)\n",
    )
    assert result.returncode == 0, result.stderr


def test_signing_works_without_httpx_or_requests_installed() -> None:
    result = _run_without(
        ["httpx", "requests"],
        "from sig_gate_client import sign_gate_request\n"
        f"print(sign_gate_request('GET', '/', secret={SECRET!r})['X-Gate-Key-Id'])\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "current"


@pytest.mark.parametrize(("attribute", "library"), [("GateAuth", "httpx"), ("GateRequestsAuth", "requests")])
def test_missing_http_library_gives_an_install_hint(attribute: str, library: str) -> None:
    result = _run_without(
        [library],
        "import sig_gate_client\n"
        "try:\n"
        f"    sig_gate_client.{attribute}\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n",
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install {library}" in result.stdout
