"""Shared fixtures: the vectors file, a clean environment, and the live gate and upstream."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import VECTORS_FILE, GateProcess, RecordingUpstream, gate_binary

# Every variable the signer reads; tests start from none of them set.
SIGNER_VARIABLES = (
    "INTERSERVICE_HMAC_SECRET",
    "INTERSERVICE_HMAC_SECRET_FILE",
    "INTERSERVICE_HMAC_SECRET_PREV",
    "INTERSERVICE_HMAC_SECRET_PREV_FILE",
    "INTERSERVICE_HMAC_KEY_ID",
    "INTERSERVICE_HMAC_KEY_ID_PREV",
    "TOOL_GATE_DUAL_SIGN",
    "GATE_ALLOW_WEAK_SECRET",
    "GATE_SIGNING_KEY_ID",
    "GATE_SIGNING_KEY_FILE",
    "GATE_SIGNING_ALG",
    "GATE_AUDIENCE",
    "GATE_OBSERVE_KEY_ID",
    "GATE_OBSERVE_KEY_FILE",
)


@pytest.fixture(autouse=True)
def clean_signer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the developer's own signer settings (INTERSERVICE_*, GATE_SIGNING_*, ...) from every test."""
    for name in SIGNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    """The shared test vectors every language's tests read."""
    with VECTORS_FILE.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


@pytest.fixture(scope="session")
def sig_gate_bin() -> Path:
    """The gate binary. Missing binary fails the live tests loudly.

    Set ``SIG_GATE_SKIP_LIVE=1`` to skip them instead (reported as skipped with this reason
    in pytest's summary), e.g. on a machine without a Rust toolchain.
    """
    binary = gate_binary()
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    message = (
        f"sig-gate binary not found at {binary}: run scripts/test-python.sh (it builds it), "
        "or `cargo build --bin sig-gate`, or point SIG_GATE_BIN at a build"
    )
    if os.environ.get("SIG_GATE_SKIP_LIVE") == "1":
        pytest.skip(f"LIVE INTEROP NOT RUN (SIG_GATE_SKIP_LIVE=1): {message}")
    pytest.fail(message, pytrace=False)


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    """A fresh recording upstream per test."""
    server = RecordingUpstream()
    yield server
    server.close()


StartGate = Callable[..., GateProcess]


@pytest.fixture
def start_gate(sig_gate_bin: Path, upstream: RecordingUpstream, tmp_path: Path) -> Iterator[StartGate]:
    """Start ``sig-gate serve`` in front of ``upstream`` with the given env; stopped at teardown.

    Call as ``start_gate(INTERSERVICE_HMAC_SECRET=..., ...)``; each call starts another gate
    (e.g. an old and a new one side by side).
    """
    gates: list[GateProcess] = []

    def start(**env: str) -> GateProcess:
        gate = GateProcess.start(sig_gate_bin, {"GATE_UPSTREAM": upstream.url, **env}, cwd=tmp_path)
        gates.append(gate)
        return gate

    yield start
    for gate in gates:
        gate.stop()
