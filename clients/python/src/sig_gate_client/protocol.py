"""The wire format of sig-gate's request signatures, versions 1 and 2 (docs/protocol.md).

Pure functions and constants, no configuration and no I/O, so that the signed strings can be
checked line by line against ``tests/vectors/hmac-v1.json``, ``hmac-v2.json`` and
``ed25519-v2.json``, and so that the signer and any debugging tool share one definition of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Union

ALGORITHM = "GATE-HMAC-SHA256"
"""First line of every version 1 signed string: names the algorithm and the version."""

V2_PREFIX = "GATE-SIG-V2"
"""First line of every version 2 signed string; the key's algorithm follows on line 2."""

ALG_HMAC_SHA256 = "hmac-sha256"
ALG_ED25519 = "ed25519"
ALGORITHMS = (ALG_HMAC_SHA256, ALG_ED25519)
"""The key algorithms of version 2, as written on line 2 and in ``GATE_SIGNING_ALG``."""

VERSION_2 = "2"
"""The value of ``X-Gate-Version`` for version 2; version 1 sends no such header."""

HEADER_VERSION = "X-Gate-Version"
HEADER_KEY_ID = "X-Gate-Key-Id"
HEADER_TIMESTAMP = "X-Gate-Timestamp"
HEADER_NONCE = "X-Gate-Nonce"
HEADER_SIGNATURE = "X-Gate-Signature"
HEADER_SIGNATURES = "X-Gate-Signatures"

SIGNATURE_HEADERS = (HEADER_VERSION, HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE, HEADER_SIGNATURES)
"""Every header a signer may send, in the order it sends them (version 1 omits the first)."""

Body = Union[bytes, bytearray, memoryview, str, None]
"""What a caller may pass as a body: bytes as sent, or text sent as UTF-8; ``None`` is no body."""

_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# RFC 9110 section 5.6.2 token characters: anything else cannot be a method on the wire.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# An origin-form request target: starts with '/', visible ASCII only (the library has
# already percent-encoded everything else by the time the bytes leave).
_TARGET = re.compile(r"/[\x21-\x7e]*")


def is_key_id(value: str) -> bool:
    """True when ``value`` is 1-64 chars of ``A-Z a-z 0-9 . _ : -``."""
    return _KEY_ID.fullmatch(value) is not None


def is_nonce(value: str) -> bool:
    """True when ``value`` is 16-128 chars of ``A-Z a-z 0-9 _ -``."""
    return _NONCE.fullmatch(value) is not None


def is_timestamp(value: str) -> bool:
    """True when ``value`` is 1-12 decimal digits and nothing else (no sign, no spaces)."""
    return _TIMESTAMP.fullmatch(value) is not None


def is_method(value: str) -> bool:
    """True when ``value`` is an HTTP token, i.e. something that can be sent as a method."""
    return _METHOD.fullmatch(value) is not None


def is_request_target(value: str) -> bool:
    """True when ``value`` looks like a request target as sent: ``/path[?query]``, ASCII."""
    return _TARGET.fullmatch(value) is not None


def body_bytes(body: Body) -> bytes:
    """The exact bytes of ``body``: bytes-like as is, ``str`` as UTF-8, ``None`` as empty.

    Anything else (a dict, a file, a generator) raises ``TypeError``: the signature covers the
    bytes on the wire, so the caller must serialise first and send what was signed.
    """
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(
        f"body must be bytes or str (UTF-8), not {type(body).__name__}: serialise it first "
        "and send exactly the bytes you signed"
    )


def body_sha256(body: bytes) -> str:
    """Lowercase hex SHA-256 of the body bytes: the last line of the signed string."""
    return hashlib.sha256(body).hexdigest()


def split_target(target: str) -> tuple[str, str]:
    """Split a request target at the first ``?`` into (raw path, raw query without ``?``).

    Neither part is decoded or reordered: ``/a%2Fb?q=a+b`` gives ``("/a%2Fb", "q=a+b")``.
    """
    path, _, query = target.partition("?")
    return path, query


def signed_string(key_id: str, timestamp: str, nonce: str, method: str, target: str, body_digest: str) -> str:
    """The eight lines of docs/protocol.md section 3 joined by ``\\n``, without a trailing newline.

    ``key_id`` is the key id of *this* signature (``""`` when the request carries none);
    ``body_digest`` is :func:`body_sha256` of the body bytes.
    """
    path, query = split_target(target)
    return "\n".join((ALGORITHM, key_id, timestamp, nonce, method, path, query, body_digest))


def signed_string_v2(
    alg: str, key_id: str, audience: str, timestamp: str, nonce: str, method: str, target: str, body_digest: str
) -> str:
    """The ten lines of version 2 joined by ``\\n``, without a trailing newline.

    ``alg`` is the signing key's algorithm (``hmac-sha256`` or ``ed25519``), ``audience`` the
    ``GATE_AUDIENCE`` of the gate the request is for; the other lines are version 1's.
    """
    path, query = split_target(target)
    return "\n".join((V2_PREFIX, alg, key_id, audience, timestamp, nonce, method, path, query, body_digest))


def compute_signature(secret: bytes, message: str) -> str:
    """Lowercase hex HMAC-SHA256 of the signed string, keyed with the secret's bytes."""
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def fingerprint(secret: bytes) -> str:
    """First 8 hex chars of HMAC-SHA256(secret, "sig-gate fingerprint"), as the gate shows it.

    Lets an operator match a client's secret with the gate's ``sig_gate_config_info`` metric
    without either side printing the secret.
    """
    return hmac.new(secret, b"sig-gate fingerprint", hashlib.sha256).hexdigest()[:8]


def public_key_fingerprint(public_key: bytes) -> str:
    """First 8 hex chars of SHA-256 of an Ed25519 public key (32 bytes), as the gate's
    ``sig_gate_key_info`` metric shows it."""
    return hashlib.sha256(public_key).hexdigest()[:8]
