"""Ed25519 written out from RFC 8032 (section 5.1 and the reference code of section 6).

Used only by the vector generator, so that the Ed25519 vectors come from an implementation
that shares no code with either signer under test (the Rust gate uses ring, the Python client
uses the ``cryptography`` package). It is slow and not constant-time, which is fine for fixed
test keys and useless for anything else: never sign real data with it.

:func:`self_test` checks it against the RFC's own test vectors before any vector is written.
"""

from __future__ import annotations

import hashlib
from typing import Optional

Point = tuple[int, int, int, int]
"""A point in extended homogeneous coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z."""

P = 2**255 - 19
"""The field prime."""
L = 2**252 + 27742317777372353535851937790883648493
"""The order of the base point (called q in the RFC's code)."""


def _inverse(x: int) -> int:
    return pow(x, P - 2, P)


D = -121665 * _inverse(121666) % P
"""The curve constant d of edwards25519."""
_SQRT_M1 = pow(2, (P - 1) // 4, P)


def _sha512_int(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little")


def _add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(scalar: int, point: Point) -> Point:
    result: Point = (0, 1, 1, 0)  # the neutral element
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _equal(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def _recover_x(y: int, sign: int) -> Optional[int]:
    if y >= P:
        return None
    x2 = (y * y - 1) * _inverse(D * y * y + 1) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_GY = 4 * _inverse(5) % P
_GX = _recover_x(_GY, 0)
assert _GX is not None
BASE: Point = (_GX, _GY, 1, _GX * _GY % P)


def _compress(point: Point) -> bytes:
    z_inverse = _inverse(point[2])
    x = point[0] * z_inverse % P
    y = point[1] * z_inverse % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decompress(data: bytes) -> Optional[Point]:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _expand(private_key: bytes) -> tuple[int, bytes]:
    """The secret scalar (clamped) and the prefix, from the 32-byte private key (the seed)."""
    if len(private_key) != 32:
        raise ValueError("an Ed25519 private key is 32 bytes")
    digest = hashlib.sha512(private_key).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    return scalar, digest[32:]


def public_key(private_key: bytes) -> bytes:
    """The 32-byte public key of a 32-byte private key."""
    scalar, _ = _expand(private_key)
    return _compress(_multiply(scalar, BASE))


def sign(private_key: bytes, message: bytes) -> bytes:
    """The 64-byte signature R || S of ``message`` (pure Ed25519, no context, no prehash)."""
    scalar, prefix = _expand(private_key)
    encoded_public = _compress(_multiply(scalar, BASE))
    r = _sha512_int(prefix + message) % L
    encoded_r = _compress(_multiply(r, BASE))
    h = _sha512_int(encoded_r + encoded_public + message) % L
    s = (r + h * scalar) % L
    return encoded_r + s.to_bytes(32, "little")


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid signature of ``message`` under ``public``."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    h = _sha512_int(signature[:32] + public + message) % L
    return _equal(_multiply(s, BASE), _add(r, _multiply(h, a)))


# RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte).
RFC8032_TESTS = (
    {
        "name": "RFC 8032 section 7.1 TEST 1",
        "private_key": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "message": "",
        "signature": "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    },
    {
        "name": "RFC 8032 section 7.1 TEST 2",
        "private_key": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "public_key": "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "message": "72",
        "signature": "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    },
)


def self_test() -> None:
    """Raise ``AssertionError`` unless this implementation reproduces the RFC's test vectors
    and rejects a signature with one bit flipped."""
    for case in RFC8032_TESTS:
        private = bytes.fromhex(case["private_key"])
        message = bytes.fromhex(case["message"])
        expected = bytes.fromhex(case["signature"])
        assert public_key(private).hex() == case["public_key"], f"{case['name']}: public key"
        assert sign(private, message) == expected, f"{case['name']}: signature"
        assert verify(bytes.fromhex(case["public_key"]), message, expected), f"{case['name']}: verify"
        flipped = bytes([expected[0] ^ 1]) + expected[1:]
        assert not verify(bytes.fromhex(case["public_key"]), message, flipped), f"{case['name']}: forgery accepted"
