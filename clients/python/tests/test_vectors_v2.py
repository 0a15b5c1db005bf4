"""The client against the shared version 2 vectors: tests/vectors/hmac-v2.json and ed25519-v2.json.

The files are written by tests/vectors/generate.py with hmac/hashlib and an Ed25519 built from
RFC 8032, sharing no code with this package (whose Ed25519 is the ``cryptography`` package's),
and read by the Rust tests too: passing here means both languages sign version 2 identically.
Test_vectors.py already checks that the generator's output is what is on disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import VECTORS_V2_FILES, signer_env_for_case
from sig_gate_client import Ed25519SigningKey, GateSigner, SigningKey, protocol

HMAC_FILE, ED25519_FILE = VECTORS_V2_FILES


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


FILES = {path.name: _load(path) for path in VECTORS_V2_FILES}
CASES = [(name, case) for name, data in FILES.items() for case in data["cases"]]
CASE_IDS = [f"{name}: {case['name']}" for name, case in CASES]
SIGNER_CASES = [(name, case) for name, case in CASES if case["signer"] is not None]
SIGNER_IDS = [f"{name}: {case['name']}" for name, case in SIGNER_CASES]
SIGNATURES = [(name, case, entry) for name, case in CASES for entry in case["signatures"]]
SIGNATURE_IDS = [f"{name}: {case['name']}: {i}" for name, case in CASES for i, _ in enumerate(case["signatures"])]


def _keys(file_name: str) -> dict[str, dict[str, Any]]:
    return {key["id"]: key for key in FILES[file_name]["keys"]}


def _body(case: dict[str, Any]) -> bytes:
    return base64.b64decode(case["body_base64"], validate=True)


def _public_bytes(key: dict[str, Any]) -> bytes:
    padded = key["public_key"] + "=" * (-len(key["public_key"]) % 4)
    return base64.urlsafe_b64decode(padded)


def test_files_shape_and_coverage() -> None:
    hmac_file, ed_file = FILES["hmac-v2.json"], FILES["ed25519-v2.json"]
    assert (hmac_file["version"], hmac_file["algorithm"]) == (2, protocol.ALG_HMAC_SHA256)
    assert (ed_file["version"], ed_file["algorithm"]) == (2, protocol.ALG_ED25519)
    assert {key["alg"] for key in hmac_file["keys"]} == {protocol.ALG_HMAC_SHA256}
    for data in FILES.values():
        names = [case["name"] for case in data["cases"]]
        assert len(set(names)) == len(names)
        results = {case["expected"]["result"] for case in data["cases"]}
        assert results == {"accepted", "rejected"}
        reasons = {case["expected"].get("reason") for case in data["cases"]} - {None}
        assert {"bad_signature", "malformed_signature", "missing_key_id", "unknown_key_id"} <= reasons
        assert any("another audience" in name for name in names)
        assert any("X-Gate-Version" in name for name in names)
    all_names = " / ".join(case["name"] for _, case in CASES)
    for phrase in (
        "algorithm confusion",
        "wrong alg line",
        "X-Gate-Version: 3",
        "missing X-Gate-Version",
        "missing key id",
        "wrong length",
        "unknown key id only",
        "unconfigured key id next to a valid one",
        "observe key never grants access",
        "claiming another caller's key id",
        "percent-encoded non-ASCII path",
        "GET with empty body",
    ):
        assert phrase in all_names, phrase


@pytest.mark.parametrize("file_name", [path.name for path in VECTORS_V2_FILES])
def test_ed25519_keys_load_and_match_their_public_keys(file_name: str) -> None:
    """The PEM (PKCS#8, as openssl writes it), the raw private key and the registry's public key agree."""
    ed_keys = [key for key in FILES[file_name]["keys"] if key["alg"] == protocol.ALG_ED25519]
    assert ed_keys or file_name == "hmac-v2.json"
    for key in ed_keys:
        loaded = Ed25519SigningKey.from_pem(key["id"], key["private_key_pem"])
        assert loaded.public_key == key["public_key"]
        assert "=" not in key["public_key"] and len(_public_bytes(key)) == 32
        assert _public_bytes(key).hex() == key["public_key_hex"]
        assert loaded.fingerprint == hashlib.sha256(_public_bytes(key)).hexdigest()[:8]
        der = base64.b64decode("".join(key["private_key_pem"].splitlines()[1:-1]))
        assert der[-32:].hex() == key["private_key_hex"]


@pytest.mark.parametrize(("file_name", "case", "entry"), SIGNATURES, ids=SIGNATURE_IDS)
def test_signed_string_and_signature(file_name: str, case: dict[str, Any], entry: dict[str, str]) -> None:
    """Every signature of every case, honest or not, recomputed with this package's code."""
    body = _body(case)
    digest = protocol.body_sha256(body)
    assert digest == case["body_sha256"]
    key = _keys(file_name)[entry["signing_key"]]
    if entry["alg"] == protocol.ALGORITHM:  # a version 1 signature, in the cases that mix versions
        message = protocol.signed_string(entry["key_id"], case["timestamp"], case["nonce"], case["method"], case["target"], digest)
        assert entry["audience"] == ""
    else:
        message = protocol.signed_string_v2(
            entry["alg"], entry["key_id"], entry["audience"], case["timestamp"], case["nonce"], case["method"], case["target"], digest
        )
        assert message.count("\n") == 9 and not message.endswith("\n")
    assert message == entry["signed_string"]

    if entry["primitive"] == protocol.ALG_HMAC_SHA256:
        computed = protocol.compute_signature(key["secret"].encode("utf-8"), message)
    elif entry["primitive"] == protocol.ALG_ED25519:
        computed = Ed25519SigningKey.from_pem(entry["key_id"], key["private_key_pem"])._private_key.sign(message.encode()).hex()
    else:
        assert entry["primitive"] == "hmac-sha256-keyed-with-public-key"
        computed = protocol.compute_signature(_public_bytes(key), message)
    assert computed == entry["signature"]
    if case["signer"] is not None:
        wire = dict(case["headers"])
        assert entry["signature"] in wire["X-Gate-Signature"] + wire.get("X-Gate-Signatures", "")


def _honest(file_name: str, entry: dict[str, str]) -> bool:
    """Made by a key's own algorithm, with that algorithm on line 2 (whatever key id it claims)."""
    alg = _keys(file_name)[entry["signing_key"]]["alg"]
    return entry["alg"] == alg and entry["primitive"] == alg


HONEST = [(name, case, entry) for name, case, entry in SIGNATURES if _honest(name, entry)]
HONEST_IDS = [f"{name}: {case['name']}: {case['signatures'].index(entry)}" for name, case, entry in HONEST]


@pytest.mark.parametrize(("file_name", "case", "entry"), HONEST, ids=HONEST_IDS)
def test_key_classes_sign_honest_version_2_entries(file_name: str, case: dict[str, Any], entry: dict[str, str]) -> None:
    """SigningKey.sign_v2 and Ed25519SigningKey.sign_v2 give each entry made by a key's own algorithm."""
    key = _keys(file_name)[entry["signing_key"]]
    signer_key: Any
    if key["alg"] == protocol.ALG_HMAC_SHA256:
        signer_key = SigningKey(entry["key_id"], key["secret"].encode("utf-8"))
    else:
        signer_key = Ed25519SigningKey.from_pem(entry["key_id"], key["private_key_pem"])
    signature = signer_key.sign_v2(entry["audience"], case["timestamp"], case["nonce"], case["method"], case["target"], case["body_sha256"])
    assert signature == entry["signature"]
    assert len(signature) == (64 if key["alg"] == protocol.ALG_HMAC_SHA256 else 128)


@pytest.mark.parametrize(("file_name", "case"), SIGNER_CASES, ids=SIGNER_IDS)
def test_signer_from_environment_prints_the_vector_headers(file_name: str, case: dict[str, Any], tmp_path: Path) -> None:
    env = signer_env_for_case(case, _keys(file_name), tmp_path)
    signer = GateSigner.from_env(environ=env)
    assert signer.version == 2
    headers = signer.sign(case["method"], case["target"], _body(case), timestamp=case["timestamp"], nonce=case["nonce"])
    assert [list(item) for item in headers.items()] == case["headers"]


def test_cli_prints_every_signer_vector(tmp_path: Path) -> None:
    """``python -m sig_gate_client sign`` with each vector's variables, in one fresh interpreter each."""
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_", "GATE_"))}
    for index, (file_name, case) in enumerate(SIGNER_CASES):
        directory = tmp_path / str(index)
        directory.mkdir()
        body_file = directory / "body"
        body_file.write_bytes(_body(case))
        env = {**base, **signer_env_for_case(case, _keys(file_name), directory)}
        args = ["sign", "--method", case["method"], "--path", case["target"], "--body-file", str(body_file)]
        args += ["--timestamp", case["timestamp"], "--nonce", case["nonce"]]
        result = subprocess.run([sys.executable, "-m", "sig_gate_client", *args], env=env, capture_output=True)
        assert result.returncode == 0, (case["name"], result.stderr)
        expected = "".join(f"{name}: {value}\n" for name, value in case["headers"])
        assert result.stdout.decode() == expected, case["name"]


def test_programmatic_signer_matches_the_environment_one() -> None:
    """GateSigner(key, audience=..., observe=...) is what from_env builds."""
    file_name = "ed25519-v2.json"
    case = next(c for c in FILES[file_name]["cases"] if c["signer"] and c["signer"]["observe_key_id"])
    keys = _keys(file_name)
    signing, observe = keys[case["signer"]["key_id"]], keys[case["signer"]["observe_key_id"]]
    assert signing["alg"] == protocol.ALG_HMAC_SHA256
    signer = GateSigner(
        SigningKey(signing["id"], signing["secret"].encode()),
        audience=case["signer"]["audience"],
        observe=Ed25519SigningKey.from_pem(observe["id"], observe["private_key_pem"].encode()),
    )
    assert signer.observe_key_id == observe["id"] and signer.audience == "tool-gate"
    headers = signer.sign(case["method"], case["target"], _body(case), timestamp=case["timestamp"], nonce=case["nonce"])
    assert [list(item) for item in headers.items()] == case["headers"]
