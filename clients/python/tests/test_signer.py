"""Signing inputs: method, target, body, timestamp and nonce, and the dual-sign header."""

from __future__ import annotations

import json
import time

import pytest

from harness import independent_signature
from sig_gate_client import GateSigner, SigningInputError, new_nonce, protocol, sign_gate_request

SECRET = "current-secret-0123456789abcdefghijkl"
PREV = "previous-secret-0123456789abcdefghijk"
NONCE = "signer-test-nonce-000001"


@pytest.fixture
def signer() -> GateSigner:
    return GateSigner.from_env(secret=SECRET)


def test_default_nonce_is_22_urlsafe_chars_and_fresh(signer: GateSigner) -> None:
    nonces = {signer.sign("GET", "/")["X-Gate-Nonce"] for _ in range(200)}
    assert len(nonces) == 200
    for nonce in nonces:
        assert len(nonce) == 22 and protocol.is_nonce(nonce)
    assert protocol.is_nonce(new_nonce())


def test_default_timestamp_is_now(signer: GateSigner) -> None:
    before = int(time.time())
    stamp = int(signer.sign("GET", "/")["X-Gate-Timestamp"])
    assert before <= stamp <= int(time.time())


def test_int_and_str_timestamps_sign_the_same(signer: GateSigner) -> None:
    assert signer.sign("GET", "/", timestamp=1764000000, nonce=NONCE) == signer.sign(
        "GET", "/", timestamp="1764000000", nonce=NONCE
    )


@pytest.mark.parametrize("bad", [-1, "-1", "12a", "1234567890123", "", " 1", "1.5"])
def test_malformed_timestamp_is_refused(signer: GateSigner, bad: object) -> None:
    with pytest.raises(SigningInputError) as caught:
        signer.sign("GET", "/", timestamp=bad, nonce=NONCE)  # type: ignore[arg-type]
    assert caught.value.field == "timestamp"


@pytest.mark.parametrize("bad", [True, 1.5, b"1764000000"])
def test_timestamp_of_wrong_type_is_a_type_error(signer: GateSigner, bad: object) -> None:
    with pytest.raises(TypeError):
        signer.sign("GET", "/", timestamp=bad, nonce=NONCE)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a" * 15, "a" * 129, "has space in it!!", "dots.are.not.allowed", "é" * 16, ""])
def test_malformed_nonce_is_refused(signer: GateSigner, bad: str) -> None:
    with pytest.raises(SigningInputError) as caught:
        signer.sign("GET", "/", nonce=bad)
    assert caught.value.field == "nonce"


@pytest.mark.parametrize("good", ["a" * 16, "Z" * 128, "_-_-_-_-_-_-_-_-"])
def test_nonce_bounds_are_inclusive(signer: GateSigner, good: str) -> None:
    assert signer.sign("GET", "/", nonce=good)["X-Gate-Nonce"] == good


@pytest.mark.parametrize("bad", ["", "GET POST", "G\nET", "GÉT", "(GET)"])
def test_malformed_method_is_refused(signer: GateSigner, bad: str) -> None:
    with pytest.raises(SigningInputError) as caught:
        signer.sign(bad, "/")
    assert caught.value.field == "method"


@pytest.mark.parametrize("bad", ["", "tools/run", "http://gate/tools/run", "/a b", "/café", "/a\nb", "*"])
def test_malformed_target_is_refused(signer: GateSigner, bad: str) -> None:
    with pytest.raises(SigningInputError) as caught:
        signer.sign("GET", bad)
    assert caught.value.field == "target"


def test_method_is_signed_as_given_not_normalised(signer: GateSigner) -> None:
    """HTTP methods are case-sensitive: 'patch' is a different method from 'PATCH'."""
    lower = signer.sign("patch", "/x", nonce=NONCE, timestamp=1)
    upper = signer.sign("PATCH", "/x", nonce=NONCE, timestamp=1)
    assert lower["X-Gate-Signature"] != upper["X-Gate-Signature"]
    assert lower["X-Gate-Signature"] == independent_signature(SECRET, "current", lower, "patch", "/x", b"")


def test_str_body_is_signed_as_utf8(signer: GateSigner) -> None:
    text = '{"q":"東京 café"}'
    as_text = signer.sign("POST", "/t", text, nonce=NONCE, timestamp=1)
    assert as_text == signer.sign("POST", "/t", text.encode("utf-8"), nonce=NONCE, timestamp=1)
    assert as_text != signer.sign("POST", "/t", text.encode("utf-16"), nonce=NONCE, timestamp=1)


@pytest.mark.parametrize("body", [bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_like_bodies(signer: GateSigner, body: object) -> None:
    assert signer.sign("POST", "/t", body, nonce=NONCE, timestamp=1) == signer.sign(  # type: ignore[arg-type]
        "POST", "/t", b"abc", nonce=NONCE, timestamp=1
    )


def test_none_body_is_the_empty_body(signer: GateSigner) -> None:
    assert signer.sign("GET", "/t", None, nonce=NONCE, timestamp=1) == signer.sign("GET", "/t", nonce=NONCE, timestamp=1)


@pytest.mark.parametrize("body", [{"q": 1}, ["a"], 42, iter([b"a"])])
def test_non_bytes_body_is_a_type_error(body: object) -> None:
    with pytest.raises(TypeError, match="body must be bytes or str"):
        sign_gate_request("POST", "/t", body, secret=SECRET)  # type: ignore[arg-type]


def test_headers_are_the_four_in_contract_order(signer: GateSigner) -> None:
    headers = signer.sign("GET", "/x?y=1", nonce=NONCE, timestamp=7)
    assert list(headers) == ["X-Gate-Key-Id", "X-Gate-Timestamp", "X-Gate-Nonce", "X-Gate-Signature"]
    assert headers["X-Gate-Signature"] == independent_signature(SECRET, "current", headers, "GET", "/x?y=1", b"")


def test_dual_sign_header_is_canonical_and_each_entry_uses_its_own_key_id() -> None:
    signer = GateSigner.from_env(secret=SECRET, key_id="k2", prev_secret=PREV, prev_key_id="k1", dual_sign=True)
    assert signer.dual_sign
    body = '{"x":"ü"}'.encode()
    headers = signer.sign("POST", "/t?a=1&a=2", body, nonce=NONCE, timestamp=1764000000)
    assert list(headers)[-1] == "X-Gate-Signatures"
    raw = headers["X-Gate-Signatures"]
    assert " " not in raw
    entries = json.loads(raw)
    assert [list(e) for e in entries] == [["key_id", "signature"], ["key_id", "signature"]]
    assert entries[0] == {"key_id": "k2", "signature": headers["X-Gate-Signature"]}
    assert entries[0]["signature"] == independent_signature(SECRET, "k2", headers, "POST", "/t?a=1&a=2", body)
    assert entries[1]["key_id"] == "k1"
    assert entries[1]["signature"] == independent_signature(PREV, "k1", headers, "POST", "/t?a=1&a=2", body)


def test_signer_without_dual_sign_ignores_a_configured_previous_secret() -> None:
    signer = GateSigner.from_env(secret=SECRET, prev_secret=PREV)
    assert not signer.dual_sign
    assert "X-Gate-Signatures" not in signer.sign("GET", "/")
