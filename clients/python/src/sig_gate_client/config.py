"""Reading the signer's settings from the environment, exactly as the gate reads them.

A calling service and ``sig-gate`` are configured from the same variables (the gate's README,
"Configuration"), often from the same Kubernetes secret, so this module follows the gate's rules to the
letter: an empty value counts as unset, ``<VAR>_FILE`` may replace a secret (one trailing
``\\n`` or ``\\r\\n`` stripped), giving both is an error, booleans accept
``true/false/1/0/yes/no`` in any case, and secrets shorter than 32 bytes are refused unless
``GATE_ALLOW_WEAK_SECRET=true``. A configuration the gate would refuse is refused here too,
at start-up, rather than producing signatures that fail at run time.

Every error is a :class:`GateConfigError` naming the variable (or argument) at fault; no
message ever contains a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

SECRET = "INTERSERVICE_HMAC_SECRET"
SECRET_FILE = "INTERSERVICE_HMAC_SECRET_FILE"
SECRET_PREV = "INTERSERVICE_HMAC_SECRET_PREV"
SECRET_PREV_FILE = "INTERSERVICE_HMAC_SECRET_PREV_FILE"
KEY_ID = "INTERSERVICE_HMAC_KEY_ID"
KEY_ID_PREV = "INTERSERVICE_HMAC_KEY_ID_PREV"
DUAL_SIGN = "TOOL_GATE_DUAL_SIGN"
ALLOW_WEAK_SECRET = "GATE_ALLOW_WEAK_SECRET"

# Signature version 2 (docs/protocol.md, "Version 2"): a key of the caller's own.
SIGNING_KEY_ID = "GATE_SIGNING_KEY_ID"
SIGNING_KEY_FILE = "GATE_SIGNING_KEY_FILE"
SIGNING_ALG = "GATE_SIGNING_ALG"
AUDIENCE = "GATE_AUDIENCE"
OBSERVE_KEY_ID = "GATE_OBSERVE_KEY_ID"
OBSERVE_KEY_FILE = "GATE_OBSERVE_KEY_FILE"

VERSION_2_SETTINGS = (SIGNING_KEY_ID, SIGNING_KEY_FILE, SIGNING_ALG, OBSERVE_KEY_ID, OBSERVE_KEY_FILE)
"""Any of these set asks for version 2. ``GATE_AUDIENCE`` alone does not: a service may hold
it for other reasons (it is also the gate's own variable), and it says nothing about keys."""
VERSION_2_REQUIRED = (SIGNING_KEY_ID, SIGNING_KEY_FILE, AUDIENCE)
"""The variables version 2 cannot do without."""

DEFAULT_KEY_ID = "current"
DEFAULT_KEY_ID_PREV = "previous"
MIN_SECRET_BYTES = 32

SecretInput = Union[str, bytes]
"""A secret as a caller may pass it: text (used as UTF-8) or raw bytes."""

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class GateConfigError(ValueError):
    """The signer's configuration was refused.

    ``variable`` is the environment variable (or the argument, for values passed in code)
    at fault, so callers and log pipelines can point at it without parsing the message.
    """

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def parse_bool(value: str) -> Optional[bool]:
    """The gate's boolean spellings (any case), or ``None`` for anything else."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def env_text(environ: Mapping[str, str], name: str) -> Optional[str]:
    """The value of ``name``, with empty treated as unset (how manifests "unset" a variable)."""
    value = environ.get(name)
    return value if value else None


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable; an unknown spelling is an error naming the variable."""
    value = env_text(environ, name)
    if value is None:
        return default
    parsed = parse_bool(value)
    if parsed is None:
        raise GateConfigError(name, f"{value!r} is not a boolean (true/false/1/0/yes/no)")
    return parsed


def read_key_file(variable: str, path: str) -> bytes:
    """The raw bytes of a key file, or an error naming the variable and the path."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise GateConfigError(variable, f"cannot read {path}: {err.strerror or err}") from None


def read_secret_file(variable: str, path: str) -> bytes:
    """Read a secret file, stripping one trailing ``\\n`` or ``\\r\\n`` (editors and
    ``echo`` add one; Kubernetes secret volumes usually do not)."""
    data = read_key_file(variable, path)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise GateConfigError(variable, f"{path} is not UTF-8 text") from None
    return data


def secret_from_env(environ: Mapping[str, str], variable: str, file_variable: str) -> Optional[bytes]:
    """A secret given directly or through ``<VAR>_FILE`` (never both), or ``None`` if unset."""
    direct = env_text(environ, variable)
    path = env_text(environ, file_variable)
    if direct is not None and path is not None:
        raise GateConfigError(variable, f"given both directly and as {file_variable}: keep one")
    if direct is not None:
        return direct.encode("utf-8")
    if path is not None:
        return read_secret_file(file_variable, path)
    return None


def secret_from_argument(argument: str, value: SecretInput) -> bytes:
    """A secret passed in code, as bytes. Only the type is reported on error, never the value."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"{argument} must be str or bytes, not {type(value).__name__}")


def check_secret_strength(variable: str, secret: bytes, allow_weak: bool) -> None:
    """Refuse empty secrets, and short ones unless weak secrets are explicitly allowed.

    Mirrors the gate: a gate refuses to start with a short secret, so a signer holding one is
    a misconfiguration worth reporting before the first request.
    """
    if not secret:
        raise GateConfigError(variable, "is empty")
    if len(secret) < MIN_SECRET_BYTES and not allow_weak:
        raise GateConfigError(
            variable,
            f"is {len(secret)} bytes, shorter than {MIN_SECRET_BYTES} (generate one with "
            f"`sig-gate keygen`, or set {ALLOW_WEAK_SECRET}=true to accept it)",
        )
