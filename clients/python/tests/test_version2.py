"""Signature version 2 from the environment: which version is chosen, key files, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from harness import REPO_ROOT, ed25519_verifies, independent_hmac_v2, independent_message_v2
from sig_gate_client import Ed25519SigningKey, GateConfigError, GateSigner, SigningKey, sign_gate_request

SECRET = "v2-signing-secret-0123456789abcdefghijklm"
V1_SECRET = "v1-shared-secret-0123456789abcdefghijklmn"
TS, NONCE = "1764000000", "version2-test-nonce-0001"
METHOD, TARGET, BODY = "POST", "/tools/run?x=1&x=2", '{"q":"東京"}'.encode()


def _pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _public(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def hmac_file(tmp_path: Path) -> Path:
    path = tmp_path / "hmac-key"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def ed_file(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> Path:
    path = tmp_path / "ed25519.pem"
    path.write_bytes(_pem(ed_key))
    return path


def _env(key_file: Path, **extra: str) -> dict[str, str]:
    return {"GATE_SIGNING_KEY_ID": "svc-2026-12", "GATE_SIGNING_KEY_FILE": str(key_file), "GATE_AUDIENCE": "tool-gate", **extra}


def _sign(env: dict[str, str]) -> dict[str, str]:
    return GateSigner.from_env(environ=env).sign(METHOD, TARGET, BODY, timestamp=TS, nonce=NONCE)


def _refusal(env: dict[str, str], **arguments: Any) -> GateConfigError:
    with pytest.raises(GateConfigError) as caught:
        GateSigner.from_env(environ=env, **arguments)
    return caught.value


# --- which version ------------------------------------------------------------------------------


def test_hmac_version_2_headers_in_order_and_independently_verified(hmac_file: Path) -> None:
    headers = _sign(_env(hmac_file))
    assert list(headers) == ["X-Gate-Version", "X-Gate-Key-Id", "X-Gate-Timestamp", "X-Gate-Nonce", "X-Gate-Signature"]
    assert headers["X-Gate-Version"] == "2" and headers["X-Gate-Key-Id"] == "svc-2026-12"
    expected = independent_hmac_v2(SECRET, "svc-2026-12", "tool-gate", headers, METHOD, TARGET, BODY)
    assert headers["X-Gate-Signature"] == expected


def test_alg_defaults_to_hmac_sha256(hmac_file: Path) -> None:
    assert _sign(_env(hmac_file)) == _sign(_env(hmac_file, GATE_SIGNING_ALG="hmac-sha256"))


def test_ed25519_version_2_verifies_with_the_public_key(ed_file: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    headers = _sign(_env(ed_file, GATE_SIGNING_ALG="ed25519"))
    assert len(headers["X-Gate-Signature"]) == 128
    message = independent_message_v2("ed25519", "svc-2026-12", "tool-gate", headers, METHOD, TARGET, BODY)
    assert ed25519_verifies(_public(ed_key), headers["X-Gate-Signature"], message)
    other_audience = independent_message_v2("ed25519", "svc-2026-12", "billing-gate", headers, METHOD, TARGET, BODY)
    assert not ed25519_verifies(_public(ed_key), headers["X-Gate-Signature"], other_audience)


def test_observe_key_adds_a_second_signature_beside_the_first(hmac_file: Path, ed_file: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    env = _env(hmac_file, GATE_OBSERVE_KEY_ID="svc-ed-2026-12", GATE_OBSERVE_KEY_FILE=str(ed_file))
    signer = GateSigner.from_env(environ=env)
    assert (signer.version, signer.key_id, signer.observe_key_id) == (2, "svc-2026-12", "svc-ed-2026-12")
    headers = signer.sign(METHOD, TARGET, BODY, timestamp=TS, nonce=NONCE)
    assert list(headers)[-1] == "X-Gate-Signatures" and " " not in headers["X-Gate-Signatures"]
    first, observed = json.loads(headers["X-Gate-Signatures"])
    assert first == {"key_id": "svc-2026-12", "signature": headers["X-Gate-Signature"]}
    assert list(observed) == ["key_id", "signature"] and observed["key_id"] == "svc-ed-2026-12"
    message = independent_message_v2("ed25519", "svc-ed-2026-12", "tool-gate", headers, METHOD, TARGET, BODY)
    assert ed25519_verifies(_public(ed_key), observed["signature"], message)


def test_version_1_is_unchanged_when_no_version_2_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", V1_SECRET)
    headers = sign_gate_request(METHOD, TARGET, BODY, timestamp=TS, nonce=NONCE)
    assert "X-Gate-Version" not in headers
    assert GateSigner.from_env().version == 1


def test_audience_alone_does_not_select_version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATE_AUDIENCE is also the gate's own variable; a shared ConfigMap may set it for a v1 caller."""
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", V1_SECRET)
    monkeypatch.setenv("GATE_AUDIENCE", "tool-gate")
    signer = GateSigner.from_env()
    assert signer.version == 1 and signer.audience is None
    assert "X-Gate-Version" not in signer.sign("GET", "/")


def test_version_2_ignores_the_version_1_variables(hmac_file: Path) -> None:
    """In version 2 the shared secret and the dual-sign switch are not read (nor checked)."""
    env = _env(hmac_file, INTERSERVICE_HMAC_SECRET="weak", TOOL_GATE_DUAL_SIGN="maybe", INTERSERVICE_HMAC_KEY_ID="bad id")
    assert _sign(env) == _sign(_env(hmac_file))


@pytest.mark.parametrize("argument", ["secret", "key_id", "prev_secret", "prev_key_id", "dual_sign"])
def test_version_1_arguments_with_version_2_environment_is_an_error(hmac_file: Path, argument: str) -> None:
    value: Any = False if argument == "dual_sign" else V1_SECRET if "secret" in argument else "k1"
    error = _refusal(_env(hmac_file), **{argument: value})
    assert error.variable == "GATE_SIGNING_KEY_ID"
    assert argument in str(error) and "version 2" in str(error)
    assert V1_SECRET not in str(error)


def test_sign_gate_request_and_cli_follow_the_environment(hmac_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(hmac_file)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    expected = _sign(env)
    assert sign_gate_request(METHOD, TARGET, BODY, timestamp=TS, nonce=NONCE) == expected
    body_file = hmac_file.with_name("body")
    body_file.write_bytes(BODY)
    args = ["sign", "--method", METHOD, "--path", TARGET, "--body-file", str(body_file), "--timestamp", TS, "--nonce", NONCE]
    result = subprocess.run([sys.executable, "-m", "sig_gate_client", *args], env=dict(os.environ), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "".join(f"{name}: {value}\n" for name, value in expected.items())


# --- key files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (SECRET.encode(), SECRET),
        (SECRET.encode() + b"\n", SECRET),
        (SECRET.encode() + b"\r\n", SECRET),
        (SECRET.encode() + b"\n\n", SECRET + "\n"),
        (" ".encode() + SECRET.encode(), " " + SECRET),
    ],
    ids=["bare", "newline", "crlf", "two-newlines", "leading-space"],
)
def test_hmac_key_file_strips_one_trailing_newline(tmp_path: Path, content: bytes, secret: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    headers = _sign(_env(path))
    assert headers["X-Gate-Signature"] == independent_hmac_v2(secret, "svc-2026-12", "tool-gate", headers, METHOD, TARGET, BODY)


def test_openssl_genpkey_key_signs(tmp_path: Path) -> None:
    """The format the contract names: `openssl genpkey -algorithm ed25519` output, unchanged."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("OPENSSL FORMAT NOT CHECKED: no openssl on PATH (the vectors' PEM keys are the same format)")
    path = tmp_path / "openssl.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True, capture_output=True)
    public_der = subprocess.run([openssl, "pkey", "-in", str(path), "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
    signer = GateSigner.from_env(environ=_env(path, GATE_SIGNING_ALG="ed25519"))
    headers = signer.sign(METHOD, TARGET, BODY, timestamp=TS, nonce=NONCE)
    message = independent_message_v2("ed25519", "svc-2026-12", "tool-gate", headers, METHOD, TARGET, BODY)
    assert ed25519_verifies(public_der[-32:], headers["X-Gate-Signature"], message)
    assert Ed25519SigningKey.from_pem("k", path.read_bytes()).public_key == signer._current.public_key  # type: ignore[union-attr]


def test_ed25519_repr_shows_the_registry_public_key_not_the_private_key(ed_file: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = GateSigner.from_env(environ=_env(ed_file, GATE_SIGNING_ALG="ed25519"))
    import base64
    import hashlib

    public = base64.urlsafe_b64encode(_public(ed_key)).rstrip(b"=").decode()
    text = repr(signer)
    assert public in text and hashlib.sha256(_public(ed_key)).hexdigest()[:8] in text
    pem_body = "".join(ed_file.read_text().splitlines()[1:-1])
    raw = ed_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    assert pem_body not in text and raw.hex() not in text and "audience='tool-gate'" in text


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        (("GATE_SIGNING_KEY_FILE", "GATE_AUDIENCE"), "GATE_SIGNING_KEY_ID"),
        (("GATE_SIGNING_KEY_ID", "GATE_AUDIENCE"), "GATE_SIGNING_KEY_FILE"),
        (("GATE_SIGNING_KEY_ID", "GATE_SIGNING_KEY_FILE"), "GATE_AUDIENCE"),
    ],
)
def test_each_required_variable_is_named_when_missing(hmac_file: Path, present: tuple[str, str], missing: str) -> None:
    env = {name: value for name, value in _env(hmac_file).items() if name in present}
    error = _refusal(env)
    assert error.variable == missing
    assert "version 2" in str(error)


@pytest.mark.parametrize("lonely", ["GATE_SIGNING_ALG", "GATE_OBSERVE_KEY_ID", "GATE_OBSERVE_KEY_FILE"])
def test_any_version_2_variable_asks_for_the_required_ones(lonely: str) -> None:
    error = _refusal({lonely: "ed25519", "INTERSERVICE_HMAC_SECRET": V1_SECRET})
    assert error.variable == "GATE_SIGNING_KEY_ID"
    for name in ("GATE_SIGNING_KEY_ID", "GATE_SIGNING_KEY_FILE", "GATE_AUDIENCE"):
        assert name in str(error)


@pytest.mark.parametrize("alg", ["HMAC-SHA256", "rsa", "hmac_sha256", "Ed25519", "ed25519 "])
def test_unknown_alg_is_refused(hmac_file: Path, alg: str) -> None:
    error = _refusal(_env(hmac_file, GATE_SIGNING_ALG=alg))
    assert error.variable == "GATE_SIGNING_ALG" and "hmac-sha256 or ed25519" in str(error)


@pytest.mark.parametrize("variable", ["GATE_SIGNING_KEY_ID", "GATE_AUDIENCE", "GATE_OBSERVE_KEY_ID"])
@pytest.mark.parametrize("bad", ["has space", "x" * 65, "slash/no", "ключ"])
def test_bad_key_id_or_audience_names_the_variable(hmac_file: Path, ed_file: Path, variable: str, bad: str) -> None:
    env = _env(hmac_file, GATE_OBSERVE_KEY_ID="svc-ed", GATE_OBSERVE_KEY_FILE=str(ed_file))
    env[variable] = bad
    assert _refusal(env).variable == variable


def test_short_hmac_key_is_refused_unless_weak_secrets_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_text("only-31-bytes-long-secret-12345\n")
    error = _refusal(_env(path))
    assert error.variable == "GATE_SIGNING_KEY_FILE" and "31 bytes" in str(error)
    assert "only-31-bytes" not in str(error)
    assert _sign(_env(path, GATE_ALLOW_WEAK_SECRET="true"))["X-Gate-Version"] == "2"


def test_empty_hmac_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"\n")
    assert "is empty" in str(_refusal(_env(path)))


def test_pem_key_with_hmac_alg_points_at_the_alg_variable(ed_file: Path) -> None:
    """Using the PEM text as an HMAC secret would sign with the wrong key and fail at the gate."""
    error = _refusal(_env(ed_file))
    assert error.variable == "GATE_SIGNING_KEY_FILE"
    assert "GATE_SIGNING_ALG=ed25519" in str(error)


def test_hmac_secret_with_ed25519_alg_is_refused(hmac_file: Path) -> None:
    error = _refusal(_env(hmac_file, GATE_SIGNING_ALG="ed25519"))
    assert error.variable == "GATE_SIGNING_KEY_FILE" and "PKCS#8" in str(error)
    assert SECRET not in str(error)


def test_encrypted_pem_is_refused(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    path = tmp_path / "encrypted.pem"
    path.write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )
    error = _refusal(_env(path, GATE_SIGNING_ALG="ed25519"))
    assert error.variable == "GATE_SIGNING_KEY_FILE" and "encrypted" in str(error)


def test_pem_of_another_key_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    error = _refusal(_env(path, GATE_SIGNING_ALG="ed25519"))
    assert error.variable == "GATE_SIGNING_KEY_FILE" and "not an Ed25519 private key" in str(error)


def test_corrupt_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert "not a valid private key" in str(_refusal(_env(path, GATE_SIGNING_ALG="ed25519")))


@pytest.mark.parametrize("variable", ["GATE_SIGNING_KEY_FILE", "GATE_OBSERVE_KEY_FILE"])
def test_unreadable_key_file_names_the_variable_and_the_path(hmac_file: Path, ed_file: Path, tmp_path: Path, variable: str) -> None:
    env = _env(hmac_file, GATE_OBSERVE_KEY_ID="svc-ed", GATE_OBSERVE_KEY_FILE=str(ed_file))
    env[variable] = str(tmp_path / "missing")
    error = _refusal(env)
    assert error.variable == variable and str(tmp_path / "missing") in str(error)


@pytest.mark.parametrize(("given", "missing"), [("GATE_OBSERVE_KEY_ID", "GATE_OBSERVE_KEY_FILE"), ("GATE_OBSERVE_KEY_FILE", "GATE_OBSERVE_KEY_ID")])
def test_observe_id_and_file_go_together(hmac_file: Path, ed_file: Path, given: str, missing: str) -> None:
    env = _env(hmac_file, **{given: "svc-ed" if given.endswith("_ID") else str(ed_file)})
    assert _refusal(env).variable == missing


def test_observe_key_id_must_differ_from_the_signing_key_id(hmac_file: Path, ed_file: Path) -> None:
    error = _refusal(_env(hmac_file, GATE_OBSERVE_KEY_ID="svc-2026-12", GATE_OBSERVE_KEY_FILE=str(ed_file)))
    assert error.variable == "GATE_OBSERVE_KEY_ID"


def test_observe_key_must_be_ed25519(hmac_file: Path) -> None:
    other = hmac_file.with_name("other-hmac")
    other.write_text("another-hmac-secret-0123456789abcdefghijk")
    error = _refusal(_env(hmac_file, GATE_OBSERVE_KEY_ID="svc-ed", GATE_OBSERVE_KEY_FILE=str(other)))
    assert error.variable == "GATE_OBSERVE_KEY_FILE" and "Ed25519" in str(error)
    assert "another-hmac-secret" not in str(error)


def test_programmatic_misuse_is_a_type_error(ed_key: ed25519.Ed25519PrivateKey) -> None:
    hmac_key = SigningKey("k1", SECRET.encode())
    ed = Ed25519SigningKey("k2", ed_key)
    with pytest.raises(TypeError, match="audience"):
        GateSigner(ed)
    with pytest.raises(TypeError, match="observe"):
        GateSigner(hmac_key, observe=ed)
    with pytest.raises(TypeError, match="observe must be an Ed25519SigningKey"):
        GateSigner(ed, audience="tool-gate", observe=hmac_key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dual_with"):
        GateSigner(hmac_key, SigningKey("k0", V1_SECRET.encode()), audience="tool-gate")
    with pytest.raises(GateConfigError) as caught:
        GateSigner(hmac_key, audience="not an audience")
    assert caught.value.variable == "audience"
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        Ed25519SigningKey("k3", ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key id"):
        Ed25519SigningKey("bad id", ed_key)


def test_no_error_message_or_repr_contains_key_material(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey, ed_file: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    short_file = tmp_path / "short"
    short_file.write_text("short-secret-value")
    pem_text = ed_file.read_text()
    pem_body = "".join(pem_text.splitlines()[1:-1])
    scenarios: list[dict[str, str]] = [
        _env(short_file),
        _env(secret_file, GATE_SIGNING_ALG="ed25519"),
        _env(ed_file),
        _env(secret_file, GATE_OBSERVE_KEY_ID="o", GATE_OBSERVE_KEY_FILE=str(secret_file)),
        _env(secret_file, GATE_SIGNING_ALG="rsa"),
        _env(ed_file, GATE_SIGNING_ALG="ed25519", GATE_OBSERVE_KEY_ID="svc-2026-12", GATE_OBSERVE_KEY_FILE=str(ed_file)),
    ]
    for env in scenarios:
        error = _refusal(env)
        for text in (str(error), repr(error)):
            assert SECRET not in text and "short-secret-value" not in text and pem_body not in text
    signer = GateSigner.from_env(environ=_env(secret_file, GATE_OBSERVE_KEY_ID="o", GATE_OBSERVE_KEY_FILE=str(ed_file)))
    assert SECRET not in repr(signer) and pem_body not in repr(signer) and "fingerprint=" in repr(signer)


# --- without the optional cryptography package --------------------------------------------------

# Run in a fresh interpreter in which `import cryptography` fails, as on a machine where only
# the base package is installed.
_WITHOUT_CRYPTOGRAPHY = """
import sys
sys.modules["cryptography"] = None  # any import of cryptography now raises ImportError
"""


def _run_without_cryptography(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INTERSERVICE_", "TOOL_GATE_", "GATE_"))}
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_CRYPTOGRAPHY + code], env={**base, **env}, capture_output=True, text=True
    )


def test_hmac_users_never_import_cryptography(hmac_file: Path) -> None:
    code = """
import sig_gate_client
from sig_gate_client import GateSigner
v1 = GateSigner.from_env(environ={"INTERSERVICE_HMAC_SECRET": "v1-shared-secret-0123456789abcdefghijklmn"})
assert "X-Gate-Version" not in v1.sign("GET", "/")
v2 = GateSigner.from_env()
assert v2.sign("GET", "/")["X-Gate-Version"] == "2"
assert "cryptography" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    result = _run_without_cryptography(code, _env(hmac_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [({"GATE_SIGNING_ALG": "ed25519"}, "GATE_SIGNING_ALG"), ({"GATE_OBSERVE_KEY_ID": "svc-ed"}, "GATE_OBSERVE_KEY_FILE")],
    ids=["signing-key", "observe-key"],
)
def test_ed25519_without_cryptography_says_what_to_install(hmac_file: Path, ed_file: Path, extra: dict[str, str], variable: str) -> None:
    env = _env(ed_file if variable == "GATE_SIGNING_ALG" else hmac_file, **extra)
    if variable == "GATE_OBSERVE_KEY_FILE":
        env["GATE_OBSERVE_KEY_FILE"] = str(ed_file)
    code = """
from sig_gate_client import GateConfigError, GateSigner
try:
    GateSigner.from_env()
except GateConfigError as error:
    print(error.variable)
    print(error)
"""
    result = _run_without_cryptography(code, env)
    assert result.returncode == 0, result.stderr
    named, message = result.stdout.splitlines()
    assert named == variable
    assert "sig-gate-client[ed25519]" in message and "cryptography" in message

    cli = "from sig_gate_client.cli import main\nsys.exit(main(['sign', '--method', 'GET', '--path', '/']))"
    result = _run_without_cryptography(cli, env)
    assert result.returncode == 2 and result.stdout == ""
    assert variable in result.stderr and "sig-gate-client[ed25519]" in result.stderr


def test_pyproject_declares_cryptography_only_as_an_extra() -> None:
    """HMAC-only users install nothing new: no run-time dependency, an [ed25519] extra."""
    import re

    text = (REPO_ROOT / "clients" / "python" / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^dependencies = \[\]$", text, re.MULTILINE)
    assert re.search(r'^ed25519 = \["cryptography>=[0-9.]+"\]$', text, re.MULTILINE)
