"""Sign requests for sig-gate, the HMAC-verifying proxy in front of tool-gate.

One-line adoption::

    from sig_gate_client import sign_gate_request          # headers for any HTTP library
    httpx.Client(auth=sig_gate_client.GateAuth())          # httpx (sync or async)
    session.auth = sig_gate_client.GateRequestsAuth()      # requests

Settings come from the same environment variables the gate reads
(``INTERSERVICE_HMAC_SECRET`` and friends for version 1; ``GATE_SIGNING_KEY_ID``,
``GATE_SIGNING_KEY_FILE``, ``GATE_AUDIENCE`` and friends for version 2; see the README). The
package needs only the standard library: ``GateAuth`` and ``GateRequestsAuth`` import httpx
or requests on first use, so users of one library never need the other, and Ed25519 keys
load the optional ``cryptography`` package (``sig-gate-client[ed25519]``) only when used.

Layout:

* :mod:`.protocol`  the signed strings, header names and value syntax (pure functions)
* :mod:`.config`    environment variables, ``_FILE`` secrets, booleans, errors
* :mod:`.signer`    :class:`GateSigner`, :class:`SigningKey` (HMAC) and :func:`sign_gate_request`
* :mod:`.ed25519`   :class:`Ed25519SigningKey`: PKCS#8 PEM keys through ``cryptography``
* :mod:`.httpx_auth`, :mod:`.requests_auth`  the adapters
* :mod:`.cli`       ``python -m sig_gate_client sign ...``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import GateConfigError
from .ed25519 import Ed25519SigningKey
from .signer import GateSigner, SigningInputError, SigningKey, new_nonce, sign_gate_request

if TYPE_CHECKING:  # pragma: no cover - for type checkers only; imported lazily at run time
    from .httpx_auth import GateAuth
    from .requests_auth import GateRequestsAuth

__all__ = [
    "Ed25519SigningKey",
    "GateAuth",
    "GateConfigError",
    "GateRequestsAuth",
    "GateSigner",
    "SigningInputError",
    "SigningKey",
    "new_nonce",
    "sign_gate_request",
]

__version__ = "0.1.0"

# Attribute -> (module, the distribution that module needs).
_LAZY = {
    "GateAuth": (".httpx_auth", "httpx"),
    "GateRequestsAuth": (".requests_auth", "requests"),
}


def __getattr__(name: str) -> Any:
    """Import an adapter on first access, with a clear message when its library is absent."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, dependency = _LAZY[name]
    try:
        from importlib import import_module

        module = import_module(module_name, __name__)
    except ModuleNotFoundError as err:
        if err.name != dependency:
            raise
        raise ImportError(
            f"sig_gate_client.{name} needs the {dependency!r} package: pip install {dependency} "
            f"(or sig-gate-client[{dependency}])"
        ) from err
    value = getattr(module, name)
    globals()[name] = value
    return value
