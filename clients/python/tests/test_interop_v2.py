"""Live interop for signature version 2: the Python signer, the shared vectors and ``sig-gate sign``
against the real gate binary, on loopback.

The gate side of version 2 (key registry, ``GATE_AUDIENCE``, Ed25519, ``sig-gate sign`` and
``keygen --ed25519``) may be missing from the binary under test. Each group of tests first asks
the binary (``check-config`` with a registry and no shared secret; ``sign`` with version 2
variables only): a binary that answers as one from before version 2 did (it still demands
``INTERSERVICE_HMAC_SECRET``) makes the group SKIP, with the binary's answer in the reason;
any other failure of the probe FAILS, so a broken version 2 gate is never mistaken for an old
one. pytest's summary (``-ra``) lists every skip with its reason.

The vector replay also runs for version 1 (hmac-v1.json), which proves the replay itself works
with the gate of today: the vectors' fixed timestamps are made acceptable with a clock skew
window wider than their age.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import httpx
import pytest
import requests

from conftest import StartGate
from harness import VECTORS_FILE, VECTORS_V2_FILES, GateProcess, RecordingUpstream, signer_env_for_case
from sig_gate_client import Ed25519SigningKey, GateAuth, GateRequestsAuth, GateSigner, SigningKey

# Wider than the age of the vectors' timestamps (1764000000, and "1" in one version 1 vector).
REPLAY_SKEW_SECS = "10000000000"
SHARED = "interop-shared-secret-0123456789abcdefghij"
LANGGRAPH = "interop-langgraph-secret-0123456789abcdefgh"
UNICODE_JSON = json.dumps({"query": "café ☕ 東京"}, ensure_ascii=False).encode()


def _isolated_env(extra: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_", "GATE_"))}
    return {**base, **extra}


def _predates_version_2(result: subprocess.CompletedProcess[str]) -> bool:
    """How a binary without version 2 answers a configuration without the shared secret."""
    return result.returncode == 2 and "INTERSERVICE_HMAC_SECRET" in result.stderr and "required" in result.stderr


def _probe_failure(what: str, binary: Path, result: subprocess.CompletedProcess[str]) -> None:
    answer = (result.stderr.strip() or result.stdout.strip()).splitlines()[:3]
    if _predates_version_2(result):
        pytest.skip(
            f"VERSION 2 {what} NOT RUN: {binary} predates signature version 2 "
            f"(exit {result.returncode}: {' / '.join(answer)}); these tests run once the gate side lands"
        )
    pytest.fail(f"{binary}: {what} probe failed with exit {result.returncode}: {' / '.join(answer)}", pytrace=False)


@pytest.fixture(scope="module")
def v2_gate(sig_gate_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gate binary, if it verifies version 2: ``check-config`` accepts a registry alone."""
    directory = tmp_path_factory.mktemp("probe-gate")
    (directory / "langgraph").write_text(LANGGRAPH + "\n")
    (directory / "keys.toml").write_text(
        '[[key]]\nid = "langgraph-2026-12"\ncaller = "langgraph"\nalg = "hmac-sha256"\nsecret_file = "langgraph"\n'
    )
    env = {"GATE_KEYS_FILE": str(directory / "keys.toml"), "GATE_AUDIENCE": "tool-gate"}
    result = subprocess.run(
        [str(sig_gate_bin), "check-config"], env=_isolated_env(env), cwd=directory, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        _probe_failure("GATE SIDE", sig_gate_bin, result)
    return sig_gate_bin


@pytest.fixture(scope="module")
def v2_sign_command(sig_gate_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gate binary, if its ``sign`` signs version 2 from ``GATE_SIGNING_*`` alone."""
    directory = tmp_path_factory.mktemp("probe-sign")
    (directory / "key").write_text(LANGGRAPH + "\n")
    env = {"GATE_SIGNING_KEY_ID": "langgraph-2026-12", "GATE_SIGNING_KEY_FILE": str(directory / "key"), "GATE_AUDIENCE": "tool-gate"}
    result = subprocess.run(
        [str(sig_gate_bin), "sign", "--method", "GET", "--path", "/"],
        env=_isolated_env(env),
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        _probe_failure("SIGN COMMAND", sig_gate_bin, result)
    if "X-Gate-Version: 2\n" not in result.stdout:
        pytest.fail(f"{sig_gate_bin} sign with GATE_SIGNING_* printed no X-Gate-Version: 2:\n{result.stdout}", pytrace=False)
    return sig_gate_bin


# --- the gate's configuration for a set of keys -----------------------------------------------


def gate_env_for(
    keys: list[Mapping[str, Any]], directory: Path, *, audience: Optional[str], observe: tuple[str, ...] = ()
) -> dict[str, str]:
    """Gate variables holding ``keys`` as a vectors file describes them: ``source: env`` as
    INTERSERVICE_HMAC_SECRET (one at most), the others in a registry file with their secret
    files, plus GATE_AUDIENCE when not None."""
    env: dict[str, str] = {}
    entries = []
    for key in keys:
        if key["source"] == "env":
            assert "INTERSERVICE_HMAC_SECRET" not in env, "one env key per gate"
            env.update({"INTERSERVICE_HMAC_SECRET": key["secret"], "INTERSERVICE_HMAC_KEY_ID": key["id"]})
            continue
        lines = [
            "[[key]]",
            f"id = {json.dumps(key['id'])}",
            f"caller = {json.dumps(key['caller'])}",
            f"alg = {json.dumps(key['alg'])}",
        ]
        if key["alg"] == "hmac-sha256":
            secret_file = directory / f"secret-{len(entries)}"
            secret_file.write_text(key["secret"] + "\n", encoding="utf-8")
            lines.append(f"secret_file = {json.dumps(secret_file.name)}")
        else:
            lines.append(f"public_key = {json.dumps(key['public_key'])}")
        lines.append(f"observe = {'true' if key['id'] in observe else 'false'}")
        entries.append("\n".join(lines) + "\n")
    if entries:
        registry = directory / "keys.toml"
        registry.write_text("\n".join(entries), encoding="utf-8")
        env["GATE_KEYS_FILE"] = str(registry)
    if audience is not None:
        env["GATE_AUDIENCE"] = audience
    return env


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def observed_counts(gate: GateProcess) -> dict[tuple[str, str, str], float]:
    """``sig_gate_identity_observed_total`` by (caller, key_id, result), from /metrics."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        text = client.get(gate.admin_url + "/metrics").text
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != "sig_gate_identity_observed_total":
            continue
        labels = dict(re.findall(r'([a-z_]+)="([^"]*)"', match["labels"]))
        counts[(labels["caller"], labels["key_id"], labels["result"])] = float(match["value"])
    return counts


def send_raw(gate: GateProcess, method: str, target: str, body: bytes, headers: list[list[str]]) -> httpx.Response:
    """One request with exactly these header lines, no signing adapter."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.request(method, gate.proxy_url + target, content=body, headers=[(n, v) for n, v in headers])


def assert_accepted(reply: httpx.Response, upstream: RecordingUpstream, method: str, target: str, body: bytes, key_id: str, caller: Optional[str]) -> None:
    assert reply.status_code == 200, reply.content
    received = upstream.next_request()
    assert (received.method, received.target, received.body) == (method, target, body)
    assert received.header("X-Gate-Verified-Key-Id") == key_id
    if caller is not None:
        assert received.header("X-Gate-Verified-Caller") == caller


def assert_refused(reply: httpx.Response, upstream: RecordingUpstream, reason: Optional[str]) -> None:
    assert reply.status_code == 401, (reply.status_code, reply.content)
    if reason is not None:
        assert reply.content == b'{"error":"invalid request signature","reason":"%s"}' % reason.encode()
    upstream.assert_nothing_received()


# --- the vectors against the real gate ---------------------------------------------------------


def _v2_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    cases = []
    for path in VECTORS_V2_FILES:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = {key["id"]: key for key in data["keys"]}
        cases += [(path.name, keys, case) for case in data["cases"]]
    return cases


V2_CASES = _v2_cases()


def test_replay_gate_configuration_holds_each_case_keys(tmp_path: Path) -> None:
    """Runs without a version 2 gate: the registry files the replay writes say what the cases say."""
    tomllib = pytest.importorskip("tomllib", reason="REGISTRY FILES NOT PARSED: tomllib needs Python 3.11")
    for index, (_file_name, keys, case) in enumerate(V2_CASES):
        directory = tmp_path / str(index)
        directory.mkdir()
        gate = case["gate"]
        env = gate_env_for([keys[k] for k in gate["keys"]], directory, audience=gate["audience"], observe=tuple(gate["observe"]))
        assert env.get("GATE_AUDIENCE") == gate["audience"]
        registry = tomllib.loads(Path(env["GATE_KEYS_FILE"]).read_text()) if "GATE_KEYS_FILE" in env else {"key": []}
        listed = {entry["id"]: entry for entry in registry["key"]}
        env_ids = [env["INTERSERVICE_HMAC_KEY_ID"]] if "INTERSERVICE_HMAC_SECRET" in env else []
        assert sorted([*listed, *env_ids]) == sorted(gate["keys"]), case["name"]
        assert sorted(k for k, entry in listed.items() if entry["observe"]) == sorted(gate["observe"]), case["name"]
        for key_id, entry in listed.items():
            key = keys[key_id]
            assert (entry["caller"], entry["alg"]) == (key["caller"], key["alg"])
            if key["alg"] == "hmac-sha256":
                assert (directory / entry["secret_file"]).read_text() == key["secret"] + "\n"
            else:
                assert entry["public_key"] == key["public_key"]


@pytest.mark.parametrize(("file_name", "keys", "case"), V2_CASES, ids=[f"{f}: {c['name']}" for f, _, c in V2_CASES])
def test_v2_vector_answered_by_the_gate_as_expected(
    file_name: str, keys: dict[str, Any], case: dict[str, Any], v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Each case's headers sent as they are to a gate holding the case's keys and audience."""
    gate_keys = [keys[key_id] for key_id in case["gate"]["keys"]]
    env = gate_env_for(gate_keys, tmp_path, audience=case["gate"]["audience"], observe=tuple(case["gate"]["observe"]))
    gate = start_gate(**env, GATE_CLOCK_SKEW_SECS=REPLAY_SKEW_SECS)
    body = base64.b64decode(case["body_base64"])
    before = observed_counts(gate)
    reply = send_raw(gate, case["method"], case["target"], body, case["headers"])
    expected = case["expected"]
    if expected["result"] == "accepted":
        assert_accepted(reply, upstream, case["method"], case["target"], body, expected["key_id"], expected["caller"])
    else:
        assert_refused(reply, upstream, expected["reason"])
    after = observed_counts(gate)
    counted = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    wanted: dict[tuple[str, str, str], float] = {}
    for entry in expected["observed"]:
        triple = (entry["caller"], entry["key_id"], entry["result"])
        wanted[triple] = wanted.get(triple, 0.0) + 1
    assert {k: v for k, v in counted.items() if v} == wanted


def _v1_groups() -> list[tuple[str, list[dict[str, Any]]]]:
    """hmac-v1.json's vectors grouped by secret: one gate per secret."""
    data = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
    groups: dict[str, list[dict[str, Any]]] = {}
    for vector in data["vectors"]:
        headers = [["X-Gate-Key-Id", vector["key_id"]]] if vector["key_id"] else []
        headers += [
            ["X-Gate-Timestamp", vector["timestamp"]],
            ["X-Gate-Nonce", vector["nonce"]],
            ["X-Gate-Signature", vector["signature"]],
        ]
        groups.setdefault(vector["secret"], []).append({**vector, "headers": headers})
    for vector in data["dual_sign"]:
        groups.setdefault(vector["secret"], []).append(vector)
    return list(groups.items())


V1_GROUPS = _v1_groups()


@pytest.mark.parametrize(("secret", "vectors"), V1_GROUPS, ids=[f"secret-{i}" for i in range(len(V1_GROUPS))])
def test_v1_vectors_accepted_by_the_gate(secret: str, vectors: list[dict[str, Any]], start_gate: StartGate, upstream: RecordingUpstream) -> None:
    """Version 1's vectors, sent as they are: the replay the version 2 test does, working today."""
    gate = start_gate(INTERSERVICE_HMAC_SECRET=secret, GATE_CLOCK_SKEW_SECS=REPLAY_SKEW_SECS)
    assert len({vector["nonce"] for vector in vectors}) == len(vectors)
    for vector in vectors:
        body = base64.b64decode(vector["body_base64"])
        reply = send_raw(gate, vector["method"], vector["target"], body, vector["headers"])
        expected_target = vector["target"][:-1] if vector["target"].endswith("?") else vector["target"]
        assert reply.status_code == 200, (vector["name"], reply.content)
        received = upstream.next_request()
        assert received.target in (vector["target"], expected_target), vector["name"]
        assert (received.method, received.body) == (vector["method"], body), vector["name"]
        assert received.header("X-Gate-Verified-Key-Id") == "current", vector["name"]


# --- the Python adapters with fresh timestamps -------------------------------------------------


KINDS = ["httpx", "requests"]


def send_signed(kind: str, gate: GateProcess, signer: GateSigner, method: str, target: str, body: bytes = b"") -> httpx.Response | requests.Response:
    url = gate.proxy_url + target
    if kind == "httpx":
        with httpx.Client(auth=GateAuth(signer), trust_env=False, timeout=10) as client:
            return client.request(method, url, content=body)
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, data=body, auth=GateRequestsAuth(signer), timeout=10)


def _status(reply: Any) -> int:
    return int(reply.status_code)


@pytest.fixture
def ed_key_files(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh Ed25519 key as openssl writes it, and its public key in the registry's form."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    path = tmp_path / "langgraph-ed.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key = Ed25519SigningKey.from_pem("langgraph-ed-2026-12", path.read_bytes())
    yield {"path": path, "key": key, "registry": {"id": key.key_id, "caller": "langgraph", "alg": "ed25519", "source": "registry", "public_key": key.public_key}}


LANGGRAPH_HMAC = {"id": "langgraph-2026-12", "caller": "langgraph", "alg": "hmac-sha256", "source": "registry", "secret": LANGGRAPH}
SHARED_ENV = {"id": "current", "caller": "shared", "alg": "hmac-sha256", "source": "env", "secret": SHARED}


@pytest.mark.parametrize("kind", KINDS)
def test_hmac_version_2_through_the_gate(kind: str, v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path) -> None:
    gate = start_gate(**gate_env_for([LANGGRAPH_HMAC], tmp_path, audience="tool-gate"))
    signer = GateSigner(SigningKey("langgraph-2026-12", LANGGRAPH.encode()), audience="tool-gate")
    for method, target, body in [("POST", "/tools/search?q=a+b&r=c%20d", UNICODE_JSON), ("GET", "/files/caf%C3%A9", b"")]:
        reply = send_signed(kind, gate, signer, method, target, body)
        assert _status(reply) == 200, reply.content
        received = upstream.next_request()
        assert (received.method, received.target, received.body) == (method, target, body)
        assert received.header("X-Gate-Verified-Caller") == "langgraph"
        assert received.header("X-Gate-Verified-Key-Id") == "langgraph-2026-12"


@pytest.mark.parametrize("kind", KINDS)
def test_ed25519_version_2_through_the_gate(
    kind: str, ed_key_files: dict[str, Any], v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    gate = start_gate(**gate_env_for([ed_key_files["registry"]], tmp_path, audience="tool-gate"))
    signer = GateSigner.from_env(
        environ={
            "GATE_SIGNING_KEY_ID": "langgraph-ed-2026-12",
            "GATE_SIGNING_KEY_FILE": str(ed_key_files["path"]),
            "GATE_SIGNING_ALG": "ed25519",
            "GATE_AUDIENCE": "tool-gate",
        }
    )
    reply = send_signed(kind, gate, signer, "PUT", "/blobs/upload", bytes(range(256)))
    assert _status(reply) == 200, reply.content
    received = upstream.next_request()
    assert received.body == bytes(range(256)) and received.header("X-Gate-Verified-Caller") == "langgraph"


def test_request_for_another_audience_is_refused(v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path) -> None:
    gate = start_gate(**gate_env_for([LANGGRAPH_HMAC], tmp_path, audience="billing-gate"))
    signer = GateSigner(SigningKey("langgraph-2026-12", LANGGRAPH.encode()), audience="tool-gate")
    headers = signer.sign("POST", "/tools/run", b"{}")
    assert_refused(send_raw(gate, "POST", "/tools/run", b"{}", [list(h) for h in headers.items()]), upstream, "bad_signature")


def test_migration_with_one_signer_configuration(
    ed_key_files: dict[str, Any], v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """The caller keeps one configuration (shared secret signs, its Ed25519 key observes) while
    the gate goes observe -> enforce -> shared secret retired."""
    shared_file = tmp_path / "shared"
    shared_file.write_text(SHARED + "\n")
    signer = GateSigner.from_env(
        environ={
            "GATE_SIGNING_KEY_ID": "current",
            "GATE_SIGNING_KEY_FILE": str(shared_file),
            "GATE_AUDIENCE": "tool-gate",
            "GATE_OBSERVE_KEY_ID": "langgraph-ed-2026-12",
            "GATE_OBSERVE_KEY_FILE": str(ed_key_files["path"]),
        }
    )
    ed = ed_key_files["registry"]
    phases = [
        ("observe", [SHARED_ENV, ed], ("langgraph-ed-2026-12",), "current", "shared"),
        ("enforce", [SHARED_ENV, ed], (), "current", "shared"),
        ("retired", [ed], (), "langgraph-ed-2026-12", "langgraph"),
    ]
    for name, keys, observe, key_id, caller in phases:
        directory = tmp_path / name
        directory.mkdir()
        gate = start_gate(**gate_env_for(keys, directory, audience="tool-gate", observe=observe))
        reply = send_signed("httpx", gate, signer, "POST", "/tools/search?q=a+b", UNICODE_JSON)
        assert _status(reply) == 200, (name, reply.content)
        received = upstream.next_request()
        assert (received.header("X-Gate-Verified-Key-Id"), received.header("X-Gate-Verified-Caller")) == (key_id, caller), name
        counts = observed_counts(gate)
        valid = counts.get(("langgraph", "langgraph-ed-2026-12", "valid"), 0.0)
        invalid = counts.get(("langgraph", "langgraph-ed-2026-12", "invalid"), 0.0)
        assert (valid, invalid) == ((1.0, 0.0) if observe else (0.0, 0.0)), name
        if name == "retired":
            v1 = GateSigner(SigningKey("current", SHARED.encode()))
            assert _status(send_signed("httpx", gate, v1, "GET", "/tools/list")) == 401
            upstream.assert_nothing_received()


def test_rust_keygen_key_signs_for_python(v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path) -> None:
    """`sig-gate keygen --ed25519 --out F`: Python signs with F, the gate verifies with what keygen printed."""
    key_file = tmp_path / "keygen.pem"
    result = subprocess.run(
        [str(v2_gate), "keygen", "--ed25519", "--out", str(key_file)], env=_isolated_env({}), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = Ed25519SigningKey.from_pem("keygen-2026-12", key_file.read_bytes())
    assert key.public_key in result.stdout, (result.stdout, key.public_key)
    registry = {"id": key.key_id, "caller": "planner", "alg": "ed25519", "source": "registry", "public_key": key.public_key}
    gate = start_gate(**gate_env_for([registry], tmp_path, audience="tool-gate"))
    reply = send_signed("requests", gate, GateSigner(key, audience="tool-gate"), "GET", "/tools/list")
    assert _status(reply) == 200, reply.content
    assert upstream.next_request().header("X-Gate-Verified-Caller") == "planner"
    again = subprocess.run([str(v2_gate), "keygen", "--ed25519", "--out", str(key_file)], env=_isolated_env({}), capture_output=True, timeout=60)
    assert again.returncode == 2, "an existing key file is never overwritten"


def test_openssl_key_verifies_at_the_gate(v2_gate: Path, start_gate: StartGate, upstream: RecordingUpstream, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("OPENSSL KEY NOT CHECKED LIVE: no openssl on PATH")
    key_file = tmp_path / "openssl.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key_file)], check=True, capture_output=True)
    key = Ed25519SigningKey.from_pem("openssl-2026-12", key_file.read_bytes())
    registry = {"id": key.key_id, "caller": "planner", "alg": "ed25519", "source": "registry", "public_key": key.public_key}
    gate = start_gate(**gate_env_for([registry], tmp_path, audience="tool-gate"))
    assert _status(send_signed("httpx", gate, GateSigner(key, audience="tool-gate"), "GET", "/x")) == 200
    assert upstream.next_request().header("X-Gate-Verified-Key-Id") == "openssl-2026-12"


# --- `sig-gate sign` and the Python signer agree on version 2 ------------------------------------


SIGNER_CASES = [(f, k, c) for f, k, c in V2_CASES if c["signer"] is not None]


def test_rust_sign_command_prints_every_v2_signer_vector(v2_sign_command: Path, tmp_path: Path) -> None:
    import sys

    for index, (_file_name, keys, case) in enumerate(SIGNER_CASES):
        directory = tmp_path / str(index)
        directory.mkdir()
        body_file = directory / "body"
        body_file.write_bytes(base64.b64decode(case["body_base64"]))
        env = _isolated_env(signer_env_for_case(case, keys, directory))
        args = ["sign", "--method", case["method"], "--path", case["target"], "--body-file", str(body_file)]
        args += ["--timestamp", case["timestamp"], "--nonce", case["nonce"]]
        rust = subprocess.run([str(v2_sign_command), *args], env=env, cwd=directory, capture_output=True, timeout=60)
        python = subprocess.run([sys.executable, "-m", "sig_gate_client", *args], env=env, cwd=directory, capture_output=True)
        expected = "".join(f"{name}: {value}\n" for name, value in case["headers"]).encode()
        assert rust.returncode == 0, (case["name"], rust.stderr)
        assert (rust.stdout, python.stdout) == (expected, expected), case["name"]


@pytest.mark.parametrize(
    "drop",
    ["GATE_AUDIENCE", "GATE_SIGNING_KEY_FILE", "GATE_OBSERVE_KEY_FILE", "bad-alg"],
)
def test_rust_and_python_refuse_the_same_v2_configurations(v2_sign_command: Path, tmp_path: Path, ed_key_files: dict[str, Any], drop: str) -> None:
    import sys

    secret = tmp_path / "secret"
    secret.write_text(LANGGRAPH + "\n")
    env = {
        "GATE_SIGNING_KEY_ID": "langgraph-2026-12",
        "GATE_SIGNING_KEY_FILE": str(secret),
        "GATE_AUDIENCE": "tool-gate",
        "GATE_OBSERVE_KEY_ID": "langgraph-ed-2026-12",
        "GATE_OBSERVE_KEY_FILE": str(ed_key_files["path"]),
    }
    if drop == "bad-alg":
        env["GATE_SIGNING_ALG"] = "rsa"
    else:
        del env[drop]
    args = ["sign", "--method", "GET", "--path", "/"]
    rust = subprocess.run([str(v2_sign_command), *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    python = subprocess.run([sys.executable, "-m", "sig_gate_client", *args], env=_isolated_env(env), cwd=tmp_path, capture_output=True, text=True)
    assert (rust.returncode, python.returncode) == (2, 2), (rust.stderr, python.stderr)
    assert LANGGRAPH not in rust.stderr + python.stderr
