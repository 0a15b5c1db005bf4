"""The signer: the headers a calling service sends to sig-gate (docs/protocol.md).

:class:`GateSigner` holds the resolved keys and is what the httpx and requests adapters keep
for the life of a client; :func:`sign_gate_request` is the one-call form for existing call
sites, reading the environment on every call.

Two versions, chosen by the environment: version 1 signs with the shared secret
(``INTERSERVICE_HMAC_SECRET`` and friends); version 2 signs with the caller's own key
(``GATE_SIGNING_KEY_ID``, ``GATE_SIGNING_KEY_FILE``, ``GATE_SIGNING_ALG``) for one gate's
audience (``GATE_AUDIENCE``), optionally adding an observed Ed25519 signature
(``GATE_OBSERVE_KEY_ID``, ``GATE_OBSERVE_KEY_FILE``).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Mapping, Optional, Union

from . import config, protocol
from .config import GateConfigError, SecretInput
from .ed25519 import Ed25519SigningKey, load_private_key, require_cryptography

Timestamp = Union[int, str]
"""Unix seconds, as an ``int`` or as the exact decimal text to send."""


class SigningInputError(ValueError):
    """A value to sign (method, target, timestamp or nonce) is malformed.

    ``field`` names it, so the CLI can point at the matching flag.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SigningKey:
    """One HMAC-SHA256 secret and the key id it signs under (version 1 or 2).

    The secret is kept as bytes and never shown: ``repr`` prints the key id and the secret's
    fingerprint (the same one the gate exports), which is enough to tell keys apart.
    """

    __slots__ = ("_key_id", "_secret")

    alg = protocol.ALG_HMAC_SHA256

    def __init__(self, key_id: str, secret: bytes) -> None:
        if not protocol.is_key_id(key_id):
            raise ValueError(f"key id {key_id!r} is not valid (1-64 chars of A-Z a-z 0-9 . _ : -)")
        self._key_id = key_id
        self._secret = bytes(secret)

    @property
    def key_id(self) -> str:
        """The label sent in ``X-Gate-Key-Id`` and signed on line 2."""
        return self._key_id

    @property
    def fingerprint(self) -> str:
        """First 8 hex chars of HMAC(secret, "sig-gate fingerprint"): safe to log."""
        return protocol.fingerprint(self._secret)

    def sign(self, timestamp: str, nonce: str, method: str, target: str, body_digest: str) -> str:
        """Lowercase hex version 1 signature over the signed string carrying this key's own key id."""
        message = protocol.signed_string(self._key_id, timestamp, nonce, method, target, body_digest)
        return protocol.compute_signature(self._secret, message)

    def sign_v2(self, audience: str, timestamp: str, nonce: str, method: str, target: str, body_digest: str) -> str:
        """Lowercase hex (64 chars) HMAC-SHA256 over the version 2 signed string."""
        message = protocol.signed_string_v2(self.alg, self._key_id, audience, timestamp, nonce, method, target, body_digest)
        return protocol.compute_signature(self._secret, message)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self._key_id!r}, fingerprint={self.fingerprint!r})"


VersionTwoKey = Union[SigningKey, Ed25519SigningKey]
"""A key that signs version 2: an HMAC secret or an Ed25519 private key."""


class GateSigner:
    """Signs requests, in version 1 or version 2.

    * Version 1, ``GateSigner(current, dual_with=None)``: the shared secret's
      :class:`SigningKey`, and when dual-signing the previous one too.
    * Version 2, ``GateSigner(key, audience=..., observe=None)``: the caller's own key (a
      :class:`SigningKey` or an :class:`Ed25519SigningKey`), the audience of the gate the
      requests are for, and optionally an Ed25519 key whose signature is sent beside the
      first for the gate to observe.

    Build it once (usually with :meth:`from_env`) and reuse it: configuration errors surface
    at start-up instead of on the first request, and signing does no environment look-ups.
    """

    __slots__ = ("_current", "_dual_with", "_audience", "_observe")

    def __init__(
        self,
        current: Union[SigningKey, Ed25519SigningKey],
        dual_with: Optional[SigningKey] = None,
        *,
        audience: Optional[str] = None,
        observe: Optional[Ed25519SigningKey] = None,
    ) -> None:
        if audience is None:
            if observe is not None:
                raise TypeError("observe needs version 2: pass audience too")
            if not isinstance(current, SigningKey):
                raise TypeError("version 1 signs with a SigningKey (HMAC); an Ed25519 key needs audience (version 2)")
            if dual_with is not None and dual_with.key_id == current.key_id:
                raise GateConfigError(
                    config.KEY_ID_PREV, f"equals {config.KEY_ID} ({current.key_id!r}): each secret needs its own key id"
                )
        else:
            if dual_with is not None:
                raise TypeError("dual_with is version 1's previous secret; version 2 adds a second key with observe")
            if not isinstance(audience, str) or not protocol.is_key_id(audience):
                raise GateConfigError("audience", f"{audience!r} is not an audience (1-64 chars of A-Z a-z 0-9 . _ : -)")
            if not isinstance(current, (SigningKey, Ed25519SigningKey)):
                raise TypeError(f"key must be a SigningKey or an Ed25519SigningKey, not {type(current).__name__}")
            if observe is not None:
                if not isinstance(observe, Ed25519SigningKey):
                    raise TypeError(f"observe must be an Ed25519SigningKey, not {type(observe).__name__}")
                if observe.key_id == current.key_id:
                    raise GateConfigError(
                        config.OBSERVE_KEY_ID,
                        f"equals {config.SIGNING_KEY_ID} ({current.key_id!r}): the observed key needs its own key id",
                    )
        self._current = current
        self._dual_with = dual_with
        self._audience = audience
        self._observe = observe

    @classmethod
    def from_env(
        cls,
        *,
        secret: Optional[SecretInput] = None,
        key_id: Optional[str] = None,
        prev_secret: Optional[SecretInput] = None,
        prev_key_id: Optional[str] = None,
        dual_sign: Optional[bool] = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> GateSigner:
        """Resolve every setting from its argument, else from the variable the gate reads.

        Version 2 when any of ``GATE_SIGNING_KEY_ID``, ``GATE_SIGNING_KEY_FILE``,
        ``GATE_SIGNING_ALG``, ``GATE_OBSERVE_KEY_ID`` or ``GATE_OBSERVE_KEY_FILE`` is set (then
        the first two and ``GATE_AUDIENCE`` are required, and the version 1 variables are not
        read); version 1 otherwise. The arguments are version 1's: passing one while the
        environment asks for version 2 is an error, since one of the two is not what the
        operator meant.

        ``environ`` defaults to ``os.environ``; tests pass a plain dict. The checks are the
        gate's own (see :mod:`sig_gate_client.config`), and each error names the variable or
        argument at fault.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        allow_weak = config.env_bool(env, config.ALLOW_WEAK_SECRET, False)

        version_2 = [name for name in config.VERSION_2_SETTINGS if config.env_text(env, name) is not None]
        if version_2:
            arguments = {"secret": secret, "key_id": key_id, "prev_secret": prev_secret, "prev_key_id": prev_key_id}
            passed = [name for name, value in {**arguments, "dual_sign": dual_sign}.items() if value is not None]
            if passed:
                raise GateConfigError(
                    version_2[0],
                    f"is set, which selects signature version 2, but version 1 settings were passed in code "
                    f"({', '.join(passed)}): configure one version",
                )
            return cls._version_2_from_env(env, allow_weak)

        if secret is not None:
            current_secret, current_source = config.secret_from_argument("secret", secret), "secret"
        else:
            loaded = config.secret_from_env(env, config.SECRET, config.SECRET_FILE)
            if loaded is None:
                raise GateConfigError(
                    config.SECRET,
                    f"required (set it, or {config.SECRET_FILE} to a file holding it; or, for signature "
                    f"version 2, {config.SIGNING_KEY_ID}, {config.SIGNING_KEY_FILE} and {config.AUDIENCE})",
                )
            current_secret, current_source = loaded, config.SECRET
        config.check_secret_strength(current_source, current_secret, allow_weak)

        previous_secret: Optional[bytes]
        if prev_secret is not None:
            previous_secret, previous_source = config.secret_from_argument("prev_secret", prev_secret), "prev_secret"
        else:
            previous_secret = config.secret_from_env(env, config.SECRET_PREV, config.SECRET_PREV_FILE)
            previous_source = config.SECRET_PREV
        if previous_secret is not None:
            config.check_secret_strength(previous_source, previous_secret, allow_weak)

        current_id = _key_id(key_id, "key_id", env, config.KEY_ID, config.DEFAULT_KEY_ID)
        previous_id = _key_id(prev_key_id, "prev_key_id", env, config.KEY_ID_PREV, config.DEFAULT_KEY_ID_PREV)

        if previous_secret is not None:
            # The gate refuses both of these at start-up; a signer that accepted them would
            # send signatures that cannot tell the two secrets apart.
            if previous_secret == current_secret:
                raise GateConfigError(previous_source, f"equals {current_source}: a rotation needs a new secret")
            if previous_id == current_id:
                raise GateConfigError(
                    config.KEY_ID_PREV, f"equals {config.KEY_ID} ({current_id!r}): each secret needs its own key id"
                )

        if dual_sign is None:
            dual_sign = config.env_bool(env, config.DUAL_SIGN, False)
        elif not isinstance(dual_sign, bool):
            raise TypeError(f"dual_sign must be a bool or None, not {type(dual_sign).__name__}")
        if dual_sign and previous_secret is None:
            raise GateConfigError(
                config.DUAL_SIGN,
                f"{config.DUAL_SIGN}=true needs {config.SECRET_PREV} (or {config.SECRET_PREV_FILE}): "
                "there is no previous secret to sign with",
            )

        current = SigningKey(current_id, current_secret)
        dual_with = SigningKey(previous_id, previous_secret) if dual_sign and previous_secret is not None else None
        return cls(current, dual_with)

    @classmethod
    def _version_2_from_env(cls, env: Mapping[str, str], allow_weak: bool) -> GateSigner:
        """Version 2 from ``GATE_SIGNING_*``, ``GATE_AUDIENCE`` and ``GATE_OBSERVE_*``."""
        missing = [name for name in config.VERSION_2_REQUIRED if config.env_text(env, name) is None]
        if missing:
            raise GateConfigError(
                missing[0],
                f"required for signature version 2 ({', '.join(config.VERSION_2_REQUIRED)} go together; "
                f"missing: {', '.join(missing)})",
            )
        signing_id = _key_id(None, config.SIGNING_KEY_ID, env, config.SIGNING_KEY_ID, "")
        audience = _key_id(None, config.AUDIENCE, env, config.AUDIENCE, "")
        alg = config.env_text(env, config.SIGNING_ALG) or protocol.ALG_HMAC_SHA256
        if alg not in protocol.ALGORITHMS:
            raise GateConfigError(config.SIGNING_ALG, f"{alg!r} is not {' or '.join(protocol.ALGORITHMS)}")
        path = config.env_text(env, config.SIGNING_KEY_FILE)
        assert path is not None  # checked with the other required variables above

        key: VersionTwoKey
        if alg == protocol.ALG_HMAC_SHA256:
            secret = config.read_secret_file(config.SIGNING_KEY_FILE, path)
            if secret.lstrip().startswith(b"-----BEGIN"):
                raise GateConfigError(
                    config.SIGNING_KEY_FILE,
                    f"{path} holds a PEM key, not an HMAC secret: for an Ed25519 key set "
                    f"{config.SIGNING_ALG}={protocol.ALG_ED25519}",
                )
            config.check_secret_strength(config.SIGNING_KEY_FILE, secret, allow_weak)
            key = SigningKey(signing_id, secret)
        else:
            pem = config.read_key_file(config.SIGNING_KEY_FILE, path)
            key = _ed25519_key(signing_id, config.SIGNING_ALG, config.SIGNING_KEY_FILE, pem, path)

        observe_id = config.env_text(env, config.OBSERVE_KEY_ID)
        observe_path = config.env_text(env, config.OBSERVE_KEY_FILE)
        observe: Optional[Ed25519SigningKey] = None
        if observe_id is None and observe_path is not None:
            raise GateConfigError(config.OBSERVE_KEY_ID, f"required with {config.OBSERVE_KEY_FILE}")
        if observe_id is not None and observe_path is None:
            raise GateConfigError(config.OBSERVE_KEY_FILE, f"required with {config.OBSERVE_KEY_ID}")
        if observe_id is not None and observe_path is not None:
            observe_id = _key_id(None, config.OBSERVE_KEY_ID, env, config.OBSERVE_KEY_ID, "")
            if observe_id == signing_id:
                raise GateConfigError(
                    config.OBSERVE_KEY_ID,
                    f"equals {config.SIGNING_KEY_ID} ({signing_id!r}): the observed key needs its own key id",
                )
            pem = config.read_key_file(config.OBSERVE_KEY_FILE, observe_path)
            observe = _ed25519_key(observe_id, config.OBSERVE_KEY_FILE, config.OBSERVE_KEY_FILE, pem, observe_path)
        return cls(key, audience=audience, observe=observe)

    @property
    def version(self) -> int:
        """The signature version sent: 1 (shared secret) or 2 (``X-Gate-Version: 2``)."""
        return 1 if self._audience is None else 2

    @property
    def key_id(self) -> str:
        """Key id of the signing key (sent in ``X-Gate-Key-Id``)."""
        return self._current.key_id

    @property
    def audience(self) -> Optional[str]:
        """The gate audience version 2 signs for; ``None`` in version 1."""
        return self._audience

    @property
    def observe_key_id(self) -> Optional[str]:
        """Key id of the observed Ed25519 key (version 2), or ``None``."""
        return self._observe.key_id if self._observe is not None else None

    @property
    def dual_sign(self) -> bool:
        """Version 1: whether ``X-Gate-Signatures`` is sent with the current and the previous signature."""
        return self._dual_with is not None

    def sign(
        self,
        method: str,
        target: str,
        body: protocol.Body = b"",
        *,
        timestamp: Optional[Timestamp] = None,
        nonce: Optional[str] = None,
    ) -> dict[str, str]:
        """The signature headers for one request, in the order a signer prints them.

        ``method`` and ``target`` (raw path plus optional ``?query``) must be exactly what is
        sent on the wire, and ``body`` exactly the bytes sent: the gate signs what it
        receives, not what the caller meant.
        """
        if not isinstance(method, str) or not protocol.is_method(method):
            raise SigningInputError("method", f"{method!r} is not an HTTP method token")
        if not isinstance(target, str) or not protocol.is_request_target(target):
            raise SigningInputError(
                "target",
                f"{target!r} is not a request target as sent: it must start with '/', "
                "hold only printable ASCII (percent-encode the rest) and carry no scheme or host"
            )
        digest = protocol.body_sha256(protocol.body_bytes(body))
        timestamp_text = _timestamp_text(timestamp)
        nonce_text = _nonce_text(nonce)
        if self._audience is not None:
            return self._sign_v2(self._audience, timestamp_text, nonce_text, method, target, digest)

        assert isinstance(self._current, SigningKey)  # checked by __init__ for version 1
        current_signature = self._current.sign(timestamp_text, nonce_text, method, target, digest)
        headers = {
            protocol.HEADER_KEY_ID: self._current.key_id,
            protocol.HEADER_TIMESTAMP: timestamp_text,
            protocol.HEADER_NONCE: nonce_text,
            protocol.HEADER_SIGNATURE: current_signature,
        }
        if self._dual_with is not None:
            entries = [
                {"key_id": self._current.key_id, "signature": current_signature},
                {
                    "key_id": self._dual_with.key_id,
                    "signature": self._dual_with.sign(timestamp_text, nonce_text, method, target, digest),
                },
            ]
            # Canonical form: compact, current first, fields in this order. The gate accepts
            # any valid JSON, but identical bytes from every signer make diffs and logs easy.
            headers[protocol.HEADER_SIGNATURES] = json.dumps(entries, separators=(",", ":"))
        return headers

    def _sign_v2(self, audience: str, timestamp: str, nonce: str, method: str, target: str, digest: str) -> dict[str, str]:
        """Version 2: ``X-Gate-Version: 2``, then version 1's headers, each signature over the
        ten-line string with its own key's algorithm and id."""
        signature = self._current.sign_v2(audience, timestamp, nonce, method, target, digest)
        headers = {
            protocol.HEADER_VERSION: protocol.VERSION_2,
            protocol.HEADER_KEY_ID: self._current.key_id,
            protocol.HEADER_TIMESTAMP: timestamp,
            protocol.HEADER_NONCE: nonce,
            protocol.HEADER_SIGNATURE: signature,
        }
        if self._observe is not None:
            # As dual-signing in version 1: the list repeats the header pair first, then adds
            # the observed key's entry; compact JSON, fields in this order.
            entries = [
                {"key_id": self._current.key_id, "signature": signature},
                {
                    "key_id": self._observe.key_id,
                    "signature": self._observe.sign_v2(audience, timestamp, nonce, method, target, digest),
                },
            ]
            headers[protocol.HEADER_SIGNATURES] = json.dumps(entries, separators=(",", ":"))
        return headers

    def __repr__(self) -> str:
        if self._audience is not None:
            observe = f", observe={self._observe!r}" if self._observe is not None else ""
            return f"GateSigner(version=2, audience={self._audience!r}, key={self._current!r}{observe})"
        previous = f", dual_sign_with={self._dual_with!r}" if self._dual_with is not None else ""
        return f"GateSigner(current={self._current!r}{previous})"


def sign_gate_request(
    method: str,
    target: str,
    body: protocol.Body = b"",
    *,
    secret: Optional[SecretInput] = None,
    key_id: Optional[str] = None,
    prev_secret: Optional[SecretInput] = None,
    prev_key_id: Optional[str] = None,
    dual_sign: Optional[bool] = None,
    timestamp: Optional[Timestamp] = None,
    nonce: Optional[str] = None,
) -> dict[str, str]:
    """Return the ``X-Gate-*`` headers for one request (docs/protocol.md), in order.

    Arguments left as ``None`` come from the variables the gate reads
    (``INTERSERVICE_HMAC_SECRET``, ``..._PREV``, ``..._KEY_ID``, ``..._KEY_ID_PREV``,
    ``TOOL_GATE_DUAL_SIGN`` and the ``_FILE`` variants); with ``GATE_SIGNING_KEY_ID``,
    ``GATE_SIGNING_KEY_FILE`` and ``GATE_AUDIENCE`` set, version 2 instead (see
    :meth:`GateSigner.from_env`). ``target`` is the path plus optional
    query exactly as sent; ``body`` is bytes, or ``str`` sent as UTF-8. The timestamp defaults
    to now and the nonce to 16 random bytes (22 URL-safe chars).

    Raises :class:`GateConfigError` (a ``ValueError``) naming the variable for configuration
    problems, :class:`SigningInputError` (a ``ValueError``) for a malformed method, target, timestamp or nonce, and
    ``TypeError`` for a body that is not bytes or str.
    """
    signer = GateSigner.from_env(
        secret=secret, key_id=key_id, prev_secret=prev_secret, prev_key_id=prev_key_id, dual_sign=dual_sign
    )
    return signer.sign(method, target, body, timestamp=timestamp, nonce=nonce)


def new_nonce() -> str:
    """16 bytes from the OS CSPRNG as URL-safe base64 without padding (22 chars)."""
    return secrets.token_urlsafe(16)


def _ed25519_key(key_id: str, dependency_variable: str, variable: str, pem: bytes, path: str) -> Ed25519SigningKey:
    """An Ed25519 key read from ``path``. A missing ``cryptography`` is reported against
    ``dependency_variable`` (the setting that asked for Ed25519), a bad file against ``variable``."""
    require_cryptography(dependency_variable)
    return Ed25519SigningKey(key_id, load_private_key(variable, pem, source=path))


def _key_id(argument: Optional[str], argument_name: str, env: Mapping[str, str], variable: str, default: str) -> str:
    """A key id from its argument, else its variable, else the default; checked for syntax."""
    if argument is not None:
        value, source = argument, argument_name
    else:
        value, source = config.env_text(env, variable) or default, variable
    if not isinstance(value, str) or not protocol.is_key_id(value):
        raise GateConfigError(source, f"{value!r} is not a key id (1-64 chars of A-Z a-z 0-9 . _ : -)")
    return value


def _timestamp_text(timestamp: Optional[Timestamp]) -> str:
    """The ``X-Gate-Timestamp`` value: now, or the given Unix seconds as 1-12 digits."""
    if timestamp is None:
        return str(int(time.time()))
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, str)):
        raise TypeError(f"timestamp must be int or str, not {type(timestamp).__name__}")
    text = str(timestamp)
    if not protocol.is_timestamp(text):
        raise SigningInputError("timestamp", f"{text!r} is not Unix seconds as 1-12 decimal digits")
    return text


def _nonce_text(nonce: Optional[str]) -> str:
    """The ``X-Gate-Nonce`` value: a fresh one, or the given one if well-formed."""
    if nonce is None:
        return new_nonce()
    if not isinstance(nonce, str) or not protocol.is_nonce(nonce):
        raise SigningInputError("nonce", f"{nonce!r} is not valid (16-128 chars of A-Z a-z 0-9 _ -)")
    return nonce
