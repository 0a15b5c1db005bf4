"""Sign requests-library calls for sig-gate: ``session.auth = GateRequestsAuth()``.

The signature is computed from the :class:`requests.PreparedRequest`, i.e. after requests has
percent-encoded ``params=``, serialised ``json=``/``data=``/``files=`` and uppercased the
method: ``PreparedRequest.path_url`` is exactly the request target urllib3 sends.

Limits, both because requests offers no later hook to sign from:

* Streaming bodies (generators, iterators, file objects) cannot be signed and raise
  :class:`UnsignableBodyError`; read them into ``bytes`` first, or use the httpx adapter,
  which reads streams itself.
* requests does not run custom auth again when it follows a redirect, so a redirected
  request keeps the first request's signature and the gate rejects it. Calls through the
  gate should not depend on redirects (the gate itself never sends one).

This module imports requests; ``import sig_gate_client`` alone never does.
"""

from __future__ import annotations

from typing import Optional

from requests import PreparedRequest
from requests.auth import AuthBase

from . import protocol
from .config import SecretInput
from .signer import GateSigner


class UnsignableBodyError(TypeError):
    """The prepared body is a stream whose bytes are not known before sending."""


class GateRequestsAuth(AuthBase):
    """requests authentication that adds the sig-gate signature headers to every request."""

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
        """Use ``signer``, or build one now from the arguments and the environment, so that a
        missing or invalid secret fails when the session is set up, not on the first call."""
        if signer is not None and any(v is not None for v in (secret, key_id, prev_secret, prev_key_id, dual_sign)):
            raise TypeError("pass either a GateSigner or signer settings, not both")
        if signer is None:
            signer = GateSigner.from_env(
                secret=secret, key_id=key_id, prev_secret=prev_secret, prev_key_id=prev_key_id, dual_sign=dual_sign
            )
        self.signer = signer

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        sign_prepared_request(self.signer, request)
        return request

    def __repr__(self) -> str:
        return f"GateRequestsAuth({self.signer!r})"


def sign_prepared_request(signer: GateSigner, request: PreparedRequest) -> None:
    """Set the signature headers on ``request`` in place, replacing any earlier ones."""
    body = request.body
    if isinstance(body, str):
        # Pin the encoding: signing UTF-8 while the transport picked another would make a
        # valid-looking request that fails verification. Send exactly the signed bytes.
        body = body.encode("utf-8")
        request.body = body
        request.headers["Content-Length"] = str(len(body))
    elif body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
        raise UnsignableBodyError(
            f"cannot sign a streaming request body ({type(body).__name__}): the signature "
            "covers the body's SHA-256, which is unknown until the stream is read. Pass the "
            "body as bytes (e.g. data=b''.join(chunks) or data=f.read()), or use "
            "sig_gate_client.httpx_auth.GateAuth, which reads streams before signing."
        )
    if request.method is None or request.url is None:
        raise ValueError("the request is not prepared: it has no method or URL yet")
    headers = signer.sign(request.method, request.path_url, body)
    for name in protocol.SIGNATURE_HEADERS:
        request.headers.pop(name, None)
    request.headers.update(headers)
