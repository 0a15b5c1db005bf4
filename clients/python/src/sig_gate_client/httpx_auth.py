"""Sign httpx requests for sig-gate: ``httpx.Client(auth=GateAuth())``.

The signature must cover what goes on the wire, not what the caller passed: httpx
percent-encodes the path and query, serialises ``json=``/``data=``/``files=`` and uppercases
the method. So the signature is computed from the built :class:`httpx.Request`: its method,
``request.url.raw_path`` (path plus query, exactly as sent) and its body bytes.

This module imports httpx; ``import sig_gate_client`` alone never does.
"""

from __future__ import annotations

from typing import Generator, Optional

import httpx

from . import protocol
from .config import SecretInput
from .signer import GateSigner


class GateAuth(httpx.Auth):
    """httpx authentication that adds the sig-gate signature headers to every request.

    Works with ``httpx.Client`` and ``httpx.AsyncClient``. Streaming bodies (generators,
    files) are read into memory first (``requires_request_body``), because the body digest
    is part of the signed string; the gate buffers them anyway, up to
    ``GATE_MAX_BODY_BYTES``.

    httpx follows redirects inside a single auth flow, so a redirected request keeps the
    first request's signature and the gate rejects it: calls through the gate should not
    depend on redirects (the gate itself never sends one).
    """

    requires_request_body = True

    def __init__(
        self,
        signer: Optional[GateSigner] = None,
        *,
        secret: Optional[SecretInput] = None,
        key_id: Optional[str] = None,
        prev_secret: Optional[SecretInput] = None,
        prev_key_id: Optional[str] = None,
        dual_sign: Optional[bool] = None,
    ) -> None:
        """Use ``signer``, or build one now from the arguments and the environment.

        Building at construction time means a missing or invalid secret fails when the
        client is created, not on the first tool call.
        """
        if signer is not None and any(v is not None for v in (secret, key_id, prev_secret, prev_key_id, dual_sign)):
            raise TypeError("pass either a GateSigner or signer settings, not both")
        if signer is None:
            signer = GateSigner.from_env(
                secret=secret, key_id=key_id, prev_secret=prev_secret, prev_key_id=prev_key_id, dual_sign=dual_sign
            )
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign the request as built and send it once."""
        sign_httpx_request(self.signer, request)
        yield request

    def __repr__(self) -> str:
        return f"GateAuth({self.signer!r})"


def sign_httpx_request(signer: GateSigner, request: httpx.Request) -> None:
    """Set the signature headers on ``request`` in place, replacing any earlier ones.

    The body must already be read (``request.read()``/``aread()``); httpx does that before
    calling an auth flow whose ``requires_request_body`` is true.
    """
    target = request.url.raw_path.decode("ascii")
    headers = signer.sign(request.method, target, request.content)
    # A request built from an earlier one (a retry, or a caller copying headers) may carry
    # old signature headers: drop them all, so a stale X-Gate-Signatures never travels with
    # a fresh X-Gate-Signature.
    for name in protocol.SIGNATURE_HEADERS:
        request.headers.pop(name, None)
    request.headers.update(headers)
