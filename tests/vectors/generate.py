#!/usr/bin/env python3
"""Generate the cross-language test vectors of sig-gate's request signatures.

* ``hmac-v1.json``: version 1 (GATE-HMAC-SHA256), built in this file;
* ``hmac-v2.json`` and ``ed25519-v2.json``: version 2, built in ``version2.py``.

The vectors are computed with nothing but the Python standard library (``hmac``, ``hashlib``)
and, for Ed25519, ``rfc8032.py`` (written from RFC 8032 and checked against its test vectors
before anything is written), straight from the specification in docs/protocol.md, and
deliberately *not* with the Rust crate or the Python client: a fixture produced by the code
under test would only prove that the code agrees with itself. Every input is fixed (Ed25519
signatures are deterministic), so running this script twice gives byte-identical output and
``git diff`` shows any change to the protocol.

Usage (from anywhere, plain python3 3.9+, no packages)::

    python3 tests/vectors/generate.py           # rewrite the three files next to this script
    python3 tests/vectors/generate.py --check   # exit 1 if a file on disk is out of date
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import rfc8032
import version2

ALGORITHM = "GATE-HMAC-SHA256"
OUTPUT = Path(__file__).with_name("hmac-v1.json")

# Fixed inputs shared by most vectors; individual cases override what they exercise.
SECRET = "sig-gate-test-secret-0123456789abcdef-v1"
PREV_SECRET = "sig-gate-previous-secret-fedcba9876543210"
TIMESTAMP = "1764000000"

LONG_PATH = "/tools/archive/" + "/".join(f"segment-{i:03d}" for i in range(60)) + "/leaf.json"


def body_digest(body: bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes (line 8 of the signed string)."""
    return hashlib.sha256(body).hexdigest()


def split_target(target: str) -> tuple[str, str]:
    """Split a request target at the first '?' into (raw path, raw query without '?')."""
    path, _, query = target.partition("?")
    return path, query


def signed_string(key_id: str, timestamp: str, nonce: str, method: str, target: str, body: bytes) -> str:
    """The eight lines of docs/protocol.md section 3, joined by '\\n' with no trailing newline."""
    path, query = split_target(target)
    return "\n".join([ALGORITHM, key_id, timestamp, nonce, method, path, query, body_digest(body)])


def signature(secret: str, message: str) -> str:
    """Lowercase hex HMAC-SHA256 keyed with the secret's UTF-8 bytes."""
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def vector(
    name: str,
    *,
    nonce: str,
    method: str,
    target: str,
    body: bytes = b"",
    secret: str = SECRET,
    key_id: str = "current",
    timestamp: str = TIMESTAMP,
) -> dict[str, Any]:
    """One single-signature vector with every intermediate value a porter needs to debug."""
    assert len(secret.encode("utf-8")) >= 32, f"{name}: secrets must be at least 32 bytes"
    message = signed_string(key_id, timestamp, nonce, method, target, body)
    return {
        "name": name,
        "secret": secret,
        "key_id": key_id,
        "timestamp": timestamp,
        "nonce": nonce,
        "method": method,
        "target": target,
        "body_base64": base64.b64encode(body).decode("ascii"),
        "body_sha256": body_digest(body),
        "signed_string": message,
        "signature": signature(secret, message),
    }


def dual_sign_vector(
    name: str,
    *,
    nonce: str,
    method: str,
    target: str,
    body: bytes = b"",
    secret: str = SECRET,
    key_id: str = "current",
    prev_secret: str = PREV_SECRET,
    prev_key_id: str = "previous",
    timestamp: str = TIMESTAMP,
) -> dict[str, Any]:
    """One dual-sign vector: the exact, ordered header list a signer prints.

    Each signature in ``X-Gate-Signatures`` is computed over a signed string carrying its
    own key id, and the JSON is compact with the current entry first, so that two correct
    signers produce byte-identical headers.
    """
    current = signature(secret, signed_string(key_id, timestamp, nonce, method, target, body))
    previous = signature(prev_secret, signed_string(prev_key_id, timestamp, nonce, method, target, body))
    entries = [
        {"key_id": key_id, "signature": current},
        {"key_id": prev_key_id, "signature": previous},
    ]
    return {
        "name": name,
        "secret": secret,
        "key_id": key_id,
        "prev_secret": prev_secret,
        "prev_key_id": prev_key_id,
        "timestamp": timestamp,
        "nonce": nonce,
        "method": method,
        "target": target,
        "body_base64": base64.b64encode(body).decode("ascii"),
        "headers": [
            ["X-Gate-Key-Id", key_id],
            ["X-Gate-Timestamp", timestamp],
            ["X-Gate-Nonce", nonce],
            ["X-Gate-Signature", current],
            ["X-Gate-Signatures", json.dumps(entries, separators=(",", ":"))],
        ],
    }


def build() -> dict[str, Any]:
    """All vectors, in a fixed order."""
    json_body = json.dumps(
        {"tool": "search", "query": "café – naïve résumé", "city": "東京", "emoji": "☕🚀"},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    binary_body = bytes(range(256)) + b"\x00\xff\r\n"

    vectors = [
        vector("empty body GET", nonce="nonce-0000000000000001", method="GET", target="/tools/list"),
        vector(
            "non-ASCII UTF-8 JSON body",
            nonce="nonce-0000000000000002",
            method="POST",
            target="/tools/search",
            body=json_body,
        ),
        vector(
            "binary body with NUL, 0xff and CRLF",
            nonce="nonce-0000000000000003",
            method="PUT",
            target="/blobs/upload",
            body=binary_body,
        ),
        vector(
            "percent-encoded path kept raw",
            nonce="nonce-0000000000000004",
            method="GET",
            target="/files/a%2Fb%20c",
        ),
        vector(
            "query with + and %20 kept raw",
            nonce="nonce-0000000000000005",
            method="POST",
            target="/tools/search?q=a+b&r=c%20d",
            body=b'{"limit":10}',
        ),
        vector(
            "repeated query keys keep their order",
            nonce="nonce-0000000000000006",
            method="GET",
            target="/items?tag=b&tag=a&tag=b&z=1&a=2",
        ),
        vector(
            "question mark with empty query",
            nonce="nonce-0000000000000007",
            method="GET",
            target="/p?",
        ),
        vector(
            "no key id (line 2 empty)",
            nonce="nonce-0000000000000008",
            method="POST",
            target="/tools/run",
            body=b'{"ok":true}',
            key_id="",
        ),
        vector(
            "PATCH method",
            nonce="nonce-0000000000000009",
            method="PATCH",
            target="/tools/42",
            body=b'{"enabled":false}',
        ),
        vector(
            "extension method PURGE",
            nonce="nonce-000000000000000a",
            method="PURGE",
            target="/cache/tools",
        ),
        vector(
            "long path",
            nonce="nonce-000000000000000b",
            method="GET",
            target=LONG_PATH + "?page=2",
        ),
        vector(
            "secret with non-ASCII UTF-8 characters",
            nonce="nonce-000000000000000c",
            method="POST",
            target="/tools/echo",
            body=b"hello",
            secret="geheimer-Schlüssel-für-sig-gate-ключ-秘密-✓",
        ),
        vector("root path", nonce="nonce-000000000000000d", method="GET", target="/"),
        vector(
            "custom key id with every allowed punctuation",
            nonce="Nonce_With-Mixed_Case-0123456789",
            method="DELETE",
            target="/sessions/abc?force=1",
            key_id="k2025-11.prod_eu:a-1",
        ),
        vector(
            "query containing a second question mark and an encoded one",
            nonce="nonce-000000000000000e",
            method="GET",
            target="/redirect?next=/a?b=1&x=%3F",
        ),
        vector(
            "body of only a newline is not the empty body",
            nonce="nonce-000000000000000f",
            method="POST",
            target="/tools/run",
            body=b"\n",
        ),
        vector(
            "small timestamp and 128-char nonce",
            nonce="N" * 64 + "n" * 64,
            method="GET",
            target="/healthz-like",
            timestamp="1",
        ),
    ]

    dual_sign = [
        dual_sign_vector(
            "dual sign with default key ids",
            nonce="dual-nonce-00000000000001",
            method="POST",
            target="/tools/search?q=a+b",
            body=json_body,
        ),
        dual_sign_vector(
            "dual sign with custom key ids and empty body",
            nonce="dual-nonce-00000000000002",
            method="GET",
            target="/files/a%2Fb%20c?x=1&x=2",
            key_id="k-2025-11",
            prev_key_id="k-2025-08",
            secret="rotated-in-secret-2025-11-aaaaaaaaaaaaaaaa",
            prev_secret="rotated-out-secret-2025-08-bbbbbbbbbbbbbbb",
        ),
        dual_sign_vector(
            "dual sign with non-ASCII secrets and binary body",
            nonce="dual-nonce-00000000000003",
            method="PUT",
            target="/blobs/upload",
            body=binary_body,
            secret="neues-Geheimnis-für-die-Überlappung-ü",
            prev_secret="altes-Geheimnis-für-die-Überlappung-ö",
        ),
    ]

    return {
        "version": 1,
        "algorithm": ALGORITHM,
        "description": (
            "Test vectors for sig-gate request signatures, version 1 (HMAC-SHA256). "
            "Generated by tests/vectors/generate.py with Python's hmac/hashlib from the "
            "specification in docs/protocol.md. signed_string is the eight lines joined by \\n: "
            "algorithm, key id (empty when key_id is \"\", i.e. no X-Gate-Key-Id header), "
            "timestamp, nonce, method, raw path (target up to the first '?'), raw query "
            "(everything after the first '?', empty if none), lowercase hex SHA-256 of the "
            "body. Secrets are used as their UTF-8 bytes. body_base64 is standard base64 of "
            "the exact body bytes. dual_sign entries list the exact, ordered headers a "
            "signer prints with TOOL_GATE_DUAL_SIGN=true."
        ),
        "vectors": vectors,
        "dual_sign": dual_sign,
    }


def render(document: dict[str, Any]) -> str:
    """A file's content: indent=2, UTF-8 characters unescaped, trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def files() -> dict[str, str]:
    """File name -> content, for every vectors file this script owns."""
    rfc8032.self_test()
    return {
        OUTPUT.name: render(build()),
        "hmac-v2.json": render(version2.build_hmac()),
        "ed25519-v2.json": render(version2.build_ed25519()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file on disk differs")
    parser.add_argument(
        "--dir", type=Path, default=OUTPUT.parent, help="directory of the files (default: this script's)"
    )
    args = parser.parse_args()

    stale = []
    for name, content in files().items():
        path = args.dir / name
        if args.check:
            on_disk = path.read_text(encoding="utf-8") if path.exists() else ""
            if on_disk != content:
                stale.append(path)
        else:
            path.write_text(content, encoding="utf-8")
    for path in stale:
        print(f"{path} is out of date; run {Path(__file__).name}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
