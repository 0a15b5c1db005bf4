"""``python -m sig_gate_client sign``: output format, exit codes, and agreement with the vectors."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sig_gate_client import sign_gate_request

SECRET = "cli-test-secret-0123456789abcdefghijklm"
PREV = "cli-test-previous-0123456789abcdefghijk"
WEAK = "tiny-weak-secret"


def run_cli(args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run the CLI in a fresh interpreter with exactly ``env`` for the signer variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_", "GATE_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sig_gate_client", *args], env=full_env, input=stdin, capture_output=True
    )


def header_lines(headers: dict[str, str]) -> bytes:
    return "".join(f"{name}: {value}\n" for name, value in headers.items()).encode()


def test_prints_one_line_per_header_matching_the_library(tmp_path: Path) -> None:
    body = '{"q":"東京"}'.encode()
    (tmp_path / "body").write_bytes(body)
    args = ["sign", "--method", "POST", "--path", "/tools/search?q=a+b", "--body-file", str(tmp_path / "body")]
    args += ["--timestamp", "1764000000", "--nonce", "cli-nonce-000000000001"]
    result = run_cli(args, {"INTERSERVICE_HMAC_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    expected = sign_gate_request(
        "POST", "/tools/search?q=a+b", body, secret=SECRET, timestamp=1764000000, nonce="cli-nonce-000000000001"
    )
    assert result.stdout == header_lines(expected)
    assert result.stderr == b""


def test_body_from_stdin(tmp_path: Path) -> None:
    args = ["sign", "--method", "PUT", "--path", "/b", "--body-file", "-", "--timestamp", "5", "--nonce", "n" * 16]
    result = run_cli(args, {"INTERSERVICE_HMAC_SECRET": SECRET}, stdin=b"\x00\xffdata")
    assert result.returncode == 0, result.stderr
    assert result.stdout == header_lines(sign_gate_request("PUT", "/b", b"\x00\xffdata", secret=SECRET, timestamp=5, nonce="n" * 16))


def test_default_timestamp_and_nonce_are_fresh() -> None:
    env = {"INTERSERVICE_HMAC_SECRET": SECRET}
    first = run_cli(["sign", "--method", "GET", "--path", "/"], env)
    second = run_cli(["sign", "--method", "GET", "--path", "/"], env)
    assert first.returncode == second.returncode == 0
    nonce = [line for line in first.stdout.decode().splitlines() if line.startswith("X-Gate-Nonce: ")]
    assert len(nonce) == 1 and len(nonce[0]) == len("X-Gate-Nonce: ") + 22
    assert first.stdout != second.stdout


@pytest.fixture(scope="module")
def dual_vectors() -> list[dict[str, Any]]:
    import json

    from harness import VECTORS_FILE

    entries: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))["dual_sign"]
    return entries


def test_dual_sign_vectors_through_the_cli(tmp_path: Path, dual_vectors: list[dict[str, Any]]) -> None:
    for entry in dual_vectors:
        body_file = tmp_path / "body"
        body_file.write_bytes(base64.b64decode(entry["body_base64"]))
        env = {
            "INTERSERVICE_HMAC_SECRET": entry["secret"],
            "INTERSERVICE_HMAC_KEY_ID": entry["key_id"],
            "INTERSERVICE_HMAC_SECRET_PREV": entry["prev_secret"],
            "INTERSERVICE_HMAC_KEY_ID_PREV": entry["prev_key_id"],
            "TOOL_GATE_DUAL_SIGN": "true",
        }
        args = ["sign", "--method", entry["method"], "--path", entry["target"], "--body-file", str(body_file)]
        args += ["--timestamp", entry["timestamp"], "--nonce", entry["nonce"]]
        result = run_cli(args, env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == "".join(f"{name}: {value}\n" for name, value in entry["headers"]), entry["name"]


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["sign", "--method", "GET", "--path", "/"], {}, "INTERSERVICE_HMAC_SECRET"),
        (["sign", "--method", "GET", "--path", "/"], {"INTERSERVICE_HMAC_SECRET": WEAK}, "INTERSERVICE_HMAC_SECRET"),
        (
            ["sign", "--method", "GET", "--path", "/"],
            {"INTERSERVICE_HMAC_SECRET": SECRET, "TOOL_GATE_DUAL_SIGN": "maybe"},
            "TOOL_GATE_DUAL_SIGN",
        ),
        (
            ["sign", "--method", "GET", "--path", "/"],
            {"INTERSERVICE_HMAC_SECRET": SECRET, "TOOL_GATE_DUAL_SIGN": "true"},
            "INTERSERVICE_HMAC_SECRET_PREV",
        ),
        (["sign", "--method", "GET", "--path", "/", "--nonce", "short"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--nonce"),
        (["sign", "--method", "GET", "--path", "/", "--timestamp", "-5"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--timestamp"),
        (["sign", "--method", "GET", "--path", "http://h/x"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--path"),
        (["sign", "--method", "G T", "--path", "/"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--method"),
        (["sign", "--method", "GET", "--path", "/", "--body-file", "/no/such/file"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--body-file"),
        (["sign", "--path", "/"], {"INTERSERVICE_HMAC_SECRET": SECRET}, "--method"),
        ([], {}, "COMMAND"),
    ],
    ids=[
        "no-secret",
        "weak-secret",
        "bad-boolean",
        "dual-without-prev",
        "bad-nonce",
        "bad-timestamp",
        "absolute-url",
        "bad-method",
        "missing-body-file",
        "missing-flag",
        "no-command",
    ],
)
def test_usage_and_configuration_errors_exit_2_naming_the_culprit(
    args: list[str], env: dict[str, str], names: str
) -> None:
    result = run_cli(args, env)
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert names in stderr
    assert SECRET not in stderr and WEAK not in stderr


def test_help_exits_0() -> None:
    result = run_cli(["sign", "--help"], {})
    assert result.returncode == 0
    assert b"--body-file" in result.stdout

