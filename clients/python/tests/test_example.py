"""examples/langgraph_tool_client.py works against the real gate, both ways it shows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import ModuleType

import pytest

from conftest import StartGate
from harness import REPO_ROOT, RecordingUpstream

EXAMPLE = REPO_ROOT / "examples" / "langgraph_tool_client.py"
SECRET = "example-secret-0123456789abcdefghijklmn"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_tool_client", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_client_and_legacy_call_site_are_accepted(
    example: ModuleType, start_gate: StartGate, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    gate = start_gate(INTERSERVICE_HMAC_SECRET=SECRET)
    arguments = {"q": "café 東京", "limit": 3}

    with example.ToolGateClient(gate.proxy_url) as client:
        assert client.call_tool("web search", arguments)["ok"] is True
        tool = example.as_langchain_tool(client, "search", "Search the web")
        # A StructuredTool when langchain_core is installed, else a plain function.
        result = tool.invoke({"q": "x"}) if hasattr(tool, "invoke") else tool(q="x")
        assert result["target"] == "/tools/search"
    received = upstream.next_request()
    assert received.target == "/tools/web%20search"
    assert json.loads(received.body) == arguments
    assert received.header("X-Gate-Verified-Key-Id") == "current"
    upstream.next_request()

    assert example.legacy_call_tool(gate.proxy_url, "search", arguments)["ok"] is True
    assert json.loads(upstream.next_request().body) == arguments


def test_example_command_line(start_gate: StartGate, upstream: RecordingUpstream) -> None:
    gate = start_gate(INTERSERVICE_HMAC_SECRET=SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_"))}
    command = [sys.executable, str(EXAMPLE), "--gate", gate.proxy_url, "search", '{"q": "ü"}']

    ok = subprocess.run(command, env={**env, "INTERSERVICE_HMAC_SECRET": SECRET}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["target"] == "/tools/search"
    assert json.loads(upstream.next_request().body) == {"q": "ü"}

    wrong = subprocess.run(
        command + ["--legacy"], env={**env, "INTERSERVICE_HMAC_SECRET": SECRET[::-1]}, capture_output=True, text=True
    )
    assert wrong.returncode == 1
    assert "bad_signature" in wrong.stderr
    upstream.assert_nothing_received()

    unconfigured = subprocess.run(command, env=env, capture_output=True, text=True)
    assert unconfigured.returncode == 2
    assert "INTERSERVICE_HMAC_SECRET" in unconfigured.stderr
