"""Ed25519 signing keys for signature version 2, through the optional ``cryptography`` package.

HMAC-only users never import it: this module loads ``cryptography`` only when an Ed25519 key
is read, and says how to install it (``pip install 'sig-gate-client[ed25519]'``) when it is
missing. Keys come as unencrypted PKCS#8 PEM, the format ``openssl genpkey -algorithm
ed25519`` and ``sig-gate keygen --ed25519`` write.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Union

from . import protocol
from .config import GateConfigError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

INSTALL_HINT = "pip install 'sig-gate-client[ed25519]' (or pip install cryptography)"
_PEM_LABEL = b"-----BEGIN PRIVATE KEY-----"
_ENCRYPTED_PEM_LABEL = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def require_cryptography(variable: str) -> Any:
    """The ``cryptography`` modules this file needs, or an error naming ``variable``."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise GateConfigError(
            variable, f"Ed25519 keys need the 'cryptography' package, which is not installed: {INSTALL_HINT}"
        ) from None
    return serialization, ed25519


def load_private_key(variable: str, pem: bytes, *, source: str = "the key") -> Ed25519PrivateKey:
    """Parse an unencrypted PKCS#8 PEM Ed25519 private key; errors name ``variable``, never
    show the key. ``source`` (a path) makes the message point at the file."""
    serialization, ed25519 = require_cryptography(variable)
    if _ENCRYPTED_PEM_LABEL in pem:
        raise GateConfigError(variable, f"{source} is encrypted; the signer needs an unencrypted key")
    if _PEM_LABEL not in pem:
        raise GateConfigError(
            variable,
            f"{source} is not an Ed25519 private key in PKCS#8 PEM ('{_PEM_LABEL.decode()}', as "
            "`openssl genpkey -algorithm ed25519` or `sig-gate keygen --ed25519` write it)",
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise GateConfigError(variable, f"{source} is encrypted; the signer needs an unencrypted key") from None
    except ValueError:
        raise GateConfigError(variable, f"{source} holds a PEM block that is not a valid private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise GateConfigError(variable, f"{source} holds another kind of key ({type(key).__name__}), not an Ed25519 private key")
    return key


class Ed25519SigningKey:
    """An Ed25519 private key and the key id it signs under (version 2 only).

    ``repr`` shows the key id, the public key in the registry's form and its fingerprint,
    never the private key.
    """

    __slots__ = ("_key_id", "_private_key", "_public_key")

    alg = protocol.ALG_ED25519

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        if not protocol.is_key_id(key_id):
            raise ValueError(f"key id {key_id!r} is not valid (1-64 chars of A-Z a-z 0-9 . _ : -)")
        serialization, ed25519 = require_cryptography("private_key")
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise TypeError(f"private_key must be an Ed25519PrivateKey, not {type(private_key).__name__}")
        self._key_id = key_id
        self._private_key = private_key
        self._public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_pem(cls, key_id: str, pem: Union[bytes, str]) -> Ed25519SigningKey:
        """A key from PKCS#8 PEM text (the content of a file ``openssl genpkey`` wrote)."""
        data = pem.encode("ascii") if isinstance(pem, str) else bytes(pem)
        return cls(key_id, load_private_key("pem", data))

    @property
    def key_id(self) -> str:
        """The label sent in ``X-Gate-Key-Id`` (or a ``X-Gate-Signatures`` entry) and signed on line 3."""
        return self._key_id

    @property
    def public_key(self) -> str:
        """The public key as the gate's registry takes it: base64url of 32 bytes, no padding."""
        return base64.urlsafe_b64encode(self._public_key).rstrip(b"=").decode("ascii")

    @property
    def fingerprint(self) -> str:
        """First 8 hex chars of SHA-256 of the public key, as the gate's ``sig_gate_key_info`` shows."""
        return protocol.public_key_fingerprint(self._public_key)

    def sign_v2(self, audience: str, timestamp: str, nonce: str, method: str, target: str, body_digest: str) -> str:
        """Lowercase hex (128 chars) of the Ed25519 signature over the version 2 signed string."""
        message = protocol.signed_string_v2(self.alg, self._key_id, audience, timestamp, nonce, method, target, body_digest)
        signature: bytes = self._private_key.sign(message.encode("utf-8"))
        return signature.hex()

    def __repr__(self) -> str:
        return f"Ed25519SigningKey(key_id={self._key_id!r}, public_key={self.public_key!r}, fingerprint={self.fingerprint!r})"
