"""The client against the shared vectors in tests/vectors/hmac-v1.json.

The vectors are generated from the contract with bare hmac/hashlib (tests/vectors/generate.py)
and read by the Rust tests too, so passing here means both languages sign identically.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest

from harness import VECTORS_FILE
from sig_gate_client import GateConfigError, protocol, sign_gate_request


def _load() -> dict[str, Any]:
    with VECTORS_FILE.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


_DATA = _load()


def _body(entry: dict[str, Any]) -> bytes:
    return base64.b64decode(entry["body_base64"], validate=True)


def test_vectors_file_is_what_the_generator_writes() -> None:
    """A hand-edited or stale vectors file would make every language agree on a wrong value."""
    generator = VECTORS_FILE.with_name("generate.py")
    result = subprocess.run([sys.executable, str(generator), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_vectors_file_shape() -> None:
    assert _DATA["version"] == 1
    assert _DATA["algorithm"] == protocol.ALGORITHM
    assert len(_DATA["vectors"]) >= 12
    assert len(_DATA["dual_sign"]) >= 2
    assert any(v["key_id"] == "" for v in _DATA["vectors"]), "a vector without key id"
    assert any(v["target"].endswith("?") for v in _DATA["vectors"]), "a vector with '?' and empty query"


@pytest.mark.parametrize("entry", _DATA["vectors"], ids=[v["name"] for v in _DATA["vectors"]])
def test_signed_string_and_signature(entry: dict[str, Any]) -> None:
    body = _body(entry)
    assert protocol.body_sha256(body) == entry["body_sha256"]
    message = protocol.signed_string(
        entry["key_id"], entry["timestamp"], entry["nonce"], entry["method"], entry["target"], entry["body_sha256"]
    )
    assert message == entry["signed_string"]
    assert message.count("\n") == 7 and not message.endswith("\n")
    assert protocol.compute_signature(entry["secret"].encode("utf-8"), message) == entry["signature"]


@pytest.mark.parametrize(
    "entry",
    [v for v in _DATA["vectors"] if v["key_id"]],
    ids=[v["name"] for v in _DATA["vectors"] if v["key_id"]],
)
def test_sign_gate_request_reproduces_vector_headers(entry: dict[str, Any]) -> None:
    headers = sign_gate_request(
        entry["method"],
        entry["target"],
        _body(entry),
        secret=entry["secret"],
        key_id=entry["key_id"],
        timestamp=entry["timestamp"],
        nonce=entry["nonce"],
    )
    assert list(headers.items()) == [
        ("X-Gate-Key-Id", entry["key_id"]),
        ("X-Gate-Timestamp", entry["timestamp"]),
        ("X-Gate-Nonce", entry["nonce"]),
        ("X-Gate-Signature", entry["signature"]),
    ]


def test_signer_always_sends_a_key_id() -> None:
    """The 'no key id' vectors describe what the gate accepts from other signers; this
    signer always labels its signature, and refuses an empty label rather than send one."""
    entry = next(v for v in _DATA["vectors"] if v["key_id"] == "")
    with pytest.raises(GateConfigError, match="key_id"):
        sign_gate_request(entry["method"], entry["target"], _body(entry), secret=entry["secret"], key_id="")


@pytest.mark.parametrize("entry", _DATA["dual_sign"], ids=[v["name"] for v in _DATA["dual_sign"]])
def test_dual_sign_headers_exactly(entry: dict[str, Any]) -> None:
    headers = sign_gate_request(
        entry["method"],
        entry["target"],
        _body(entry),
        secret=entry["secret"],
        key_id=entry["key_id"],
        prev_secret=entry["prev_secret"],
        prev_key_id=entry["prev_key_id"],
        dual_sign=True,
        timestamp=entry["timestamp"],
        nonce=entry["nonce"],
    )
    assert [list(item) for item in headers.items()] == entry["headers"]


@pytest.mark.parametrize("entry", _DATA["dual_sign"], ids=[v["name"] for v in _DATA["dual_sign"]])
def test_dual_sign_without_flag_sends_only_the_first_four(entry: dict[str, Any]) -> None:
    headers = sign_gate_request(
        entry["method"],
        entry["target"],
        _body(entry),
        secret=entry["secret"],
        key_id=entry["key_id"],
        prev_secret=entry["prev_secret"],
        prev_key_id=entry["prev_key_id"],
        dual_sign=False,
        timestamp=entry["timestamp"],
        nonce=entry["nonce"],
    )
    assert [list(item) for item in headers.items()] == entry["headers"][:4]


def test_protocol_doc_quotes_the_vectors_file() -> None:
    """docs/protocol.md copies its worked examples from the vectors; regenerate one, fix the other."""
    import re

    from harness import VECTORS_V2_FILES

    doc = (VECTORS_FILE.parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    hex_value = r"(?<![0-9a-f])(?:[0-9a-f]{128}|[0-9a-f]{64})(?![0-9a-f])"
    known = set()
    for entry in _DATA["vectors"]:
        known.update({entry["signature"], entry["body_sha256"]})
    for entry in _DATA["dual_sign"]:
        known.update(re.findall(r"[0-9a-f]{64}", json.dumps(entry["headers"])))
    v2 = [json.loads(path.read_text(encoding="utf-8")) for path in VECTORS_V2_FILES]
    for data in v2:
        for case in data["cases"]:
            known.update(re.findall(hex_value, json.dumps([case["headers"], case["body_sha256"]])))
    quoted = set(re.findall(hex_value, doc))
    assert len(quoted) >= 6
    assert quoted <= known, f"hex values in docs/protocol.md not in the vectors: {sorted(quoted - known)}"

    for data in v2:
        example = next(c for c in data["cases"] if c["name"].startswith("worked example"))
        for name, value in example["headers"]:
            assert f"{name}: {value}" in doc, (data["algorithm"], name)
        signer = next(k for k in data["keys"] if k["id"] == example["signer"]["key_id"])
        if signer["alg"] == "hmac-sha256":
            assert example["signatures"][0]["signed_string"] in doc
            assert signer["secret"] in doc
        else:
            assert signer["private_key_pem"].strip() in doc and signer["public_key"] in doc

    worked = next(v for v in _DATA["vectors"] if v["name"] == "query with + and %20 kept raw")
    assert worked["signed_string"] in doc
    dual = next(v for v in _DATA["dual_sign"] if v["name"] == "dual sign with custom key ids and empty body")
    for name, value in dual["headers"]:
        assert f"{name}: {value}" in doc
