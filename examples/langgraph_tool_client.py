#!/usr/bin/env python3
"""A LangGraph-style tool client that calls tool-gate through sig-gate, signed with httpx.

Adopting signatures in an agent takes one line: give the httpx client ``auth=GateAuth()``.
The adapter reads ``INTERSERVICE_HMAC_SECRET`` (and the other variables the gate reads) once,
when the client is created, and signs every request from the bytes httpx actually sends, so
``json=``, ``params=`` and percent-encoding can never make the signature disagree with the
request.

Existing code that builds headers itself keeps working through a shim module. In a service
whose call sites say ``from common.auth import sign_gate_request``, make ``common/auth.py``::

    \"\"\"Request signing for calls to tool-gate; the implementation lives in sig_gate_client.\"\"\"
    from sig_gate_client import GateAuth, GateSigner, sign_gate_request

    __all__ = ["GateAuth", "GateSigner", "sign_gate_request"]

``sign_gate_request(method, target, body)`` returns the ``X-Gate-*`` headers as a dict;
``target`` is the path plus query exactly as sent and ``body`` the exact bytes (see
:func:`legacy_call_tool`). New code should prefer the adapter, which cannot get those wrong.

Run against a gate (for example ``sig-gate demo``, or ``sig-gate serve`` in front of
tool-gate)::

    export INTERSERVICE_HMAC_SECRET=...        # the same secret the gate has
    python examples/langgraph_tool_client.py --gate http://127.0.0.1:8080 search '{"q": "café"}'

With LangGraph installed, :func:`as_langchain_tool` turns a tool-gate tool into a LangChain
tool for ``langgraph.prebuilt.create_react_agent(model, tools=[...])``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional
from urllib.parse import quote

import httpx

from sig_gate_client import GateAuth, GateConfigError, GateSigner

try:  # The shim described above, where the service has one.
    from common.auth import sign_gate_request  # type: ignore[import-not-found]
except ImportError:  # This example also runs on its own.
    from sig_gate_client import sign_gate_request


class ToolGateClient:
    """Calls ``POST /tools/<name>`` on tool-gate, through sig-gate, with signed requests."""

    def __init__(self, gate_url: str, *, signer: Optional[GateSigner] = None, timeout: float = 30.0) -> None:
        """Create the HTTP client; fails now, naming the variable, if no secret is configured."""
        self._http = httpx.Client(base_url=gate_url, auth=GateAuth(signer), timeout=timeout)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Invoke one tool and return its decoded JSON result.

        A 401 means the gate rejected the signature; its JSON body names the reason
        (``bad_signature``, ``stale_timestamp``, ...), which ``raise_for_status`` keeps in
        the exception's response for the caller's logs.
        """
        response = self._http.post(f"/tools/{quote(name, safe='')}", json=arguments)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ToolGateClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def legacy_call_tool(gate_url: str, name: str, arguments: dict[str, Any]) -> Any:
    """An existing call site that signs by hand with ``sign_gate_request``.

    The body is serialised once and those exact bytes are both signed and sent; the target
    is written already percent-encoded, as it will appear on the wire.
    """
    target = f"/tools/{quote(name, safe='')}"
    body = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", **sign_gate_request("POST", target, body)}
    response = httpx.post(gate_url + target, content=body, headers=headers, timeout=30.0)
    response.raise_for_status()
    return response.json()


def as_langchain_tool(client: ToolGateClient, name: str, description: str) -> Callable[..., Any]:
    """Wrap one tool-gate tool for a LangGraph agent.

    Returns a LangChain ``StructuredTool`` when ``langchain_core`` is installed, otherwise a
    plain function with the same behaviour, so this example has no hard dependency on it.
    """

    def call(**arguments: Any) -> Any:
        return client.call_tool(name, arguments)

    call.__name__ = name
    call.__doc__ = description
    try:
        from langchain_core.tools import StructuredTool  # type: ignore[import-not-found]
    except ImportError:
        return call
    tool: Callable[..., Any] = StructuredTool.from_function(func=call, name=name, description=description)
    return tool


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Call one tool-gate tool through sig-gate.")
    parser.add_argument("--gate", default="http://127.0.0.1:8080", help="sig-gate's proxy URL")
    parser.add_argument("--legacy", action="store_true", help="sign by hand with sign_gate_request")
    parser.add_argument("tool", help="tool name, e.g. search")
    parser.add_argument("arguments", nargs="?", default="{}", help="JSON object of tool arguments")
    args = parser.parse_args(argv)

    arguments = json.loads(args.arguments)
    try:
        if args.legacy:
            result = legacy_call_tool(args.gate, args.tool, arguments)
        else:
            with ToolGateClient(args.gate) as client:
                result = client.call_tool(args.tool, arguments)
    except GateConfigError as err:  # the message names the variable
        print(f"error: {err}", file=sys.stderr)
        return 2
    except httpx.HTTPStatusError as err:
        print(f"error: {err.response.status_code} {err.response.text}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
