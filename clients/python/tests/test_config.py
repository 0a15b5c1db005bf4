"""Environment loading: the same variables, defaults and refusals as the gate (README, "Configuration")."""

from __future__ import annotations

from pathlib import Path

import pytest

from sig_gate_client import GateConfigError, GateSigner, sign_gate_request

SECRET = "current-secret-0123456789abcdefghijkl"
PREV = "previous-secret-0123456789abcdefghijk"
TS, NONCE = "1764000000", "config-test-nonce-0001"


def _sign(**kwargs: object) -> dict[str, str]:
    return sign_gate_request("POST", "/tools/run?x=1", b"{}", timestamp=TS, nonce=NONCE, **kwargs)  # type: ignore[arg-type]


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "INTERSERVICE_HMAC_SECRET"
    assert "INTERSERVICE_HMAC_SECRET" in str(caught.value)
    assert "INTERSERVICE_HMAC_SECRET_FILE" in str(caught.value), "the message should offer the _FILE form"


def test_empty_secret_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", "")
    with pytest.raises(GateConfigError, match="INTERSERVICE_HMAC_SECRET: required"):
        _sign()


def test_env_secret_and_defaults_match_explicit_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    from_env = _sign()
    assert from_env == _sign(secret=SECRET, key_id="current")
    assert from_env["X-Gate-Key-Id"] == "current"
    assert "X-Gate-Signatures" not in from_env


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", PREV)
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID", "from-env")
    headers = _sign(secret=SECRET, key_id="from-arg")
    assert headers == _sign(secret=SECRET, key_id="from-arg", prev_secret=None)
    assert headers["X-Gate-Key-Id"] == "from-arg"
    monkeypatch.delenv("INTERSERVICE_HMAC_SECRET")
    monkeypatch.delenv("INTERSERVICE_HMAC_KEY_ID")
    assert headers == _sign(secret=SECRET, key_id="from-arg")


def test_key_ids_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID", "k-2025-11")
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID_PREV", "k-2025-08")
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", "true")
    headers = _sign()
    assert headers["X-Gate-Key-Id"] == "k-2025-11"
    assert '"key_id":"k-2025-08"' in headers["X-Gate-Signatures"]


@pytest.mark.parametrize("variable", ["INTERSERVICE_HMAC_KEY_ID", "INTERSERVICE_HMAC_KEY_ID_PREV"])
@pytest.mark.parametrize("bad", ["has space", "x" * 65, "slash/no", "ключ"])
def test_bad_key_id_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, bad: str) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv(variable, bad)
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == variable


def test_bad_key_id_argument_names_the_argument() -> None:
    with pytest.raises(GateConfigError) as caught:
        _sign(secret=SECRET, key_id="no spaces allowed")
    assert caught.value.variable == "key_id"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"file-secret-0123456789abcdefghijklmn\n", "file-secret-0123456789abcdefghijklmn"),
        (b"file-secret-0123456789abcdefghijklmn\r\n", "file-secret-0123456789abcdefghijklmn"),
        (b"file-secret-0123456789abcdefghijklmn", "file-secret-0123456789abcdefghijklmn"),
        # Only one line ending is stripped: the rest is part of the secret.
        (b"file-secret-0123456789abcdefghijklmn\n\n", "file-secret-0123456789abcdefghijklmn\n"),
        (b" file-secret-0123456789abcdefghijklmn \n", " file-secret-0123456789abcdefghijklmn "),
        ("Schlüssel-für-die-Dateivariante-ü\n".encode(), "Schlüssel-für-die-Dateivariante-ü"),
    ],
)
def test_secret_file_strips_one_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_FILE", str(path))
    assert _sign() == _sign(secret=expected)


def test_previous_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "prev"
    path.write_text(PREV + "\n")
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV_FILE", str(path))
    assert _sign(dual_sign=True) == _sign(secret=SECRET, prev_secret=PREV, dual_sign=True)


@pytest.mark.parametrize(
    ("direct", "file_variable"),
    [
        ("INTERSERVICE_HMAC_SECRET", "INTERSERVICE_HMAC_SECRET_FILE"),
        ("INTERSERVICE_HMAC_SECRET_PREV", "INTERSERVICE_HMAC_SECRET_PREV_FILE"),
    ],
)
def test_direct_and_file_together_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, direct: str, file_variable: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(PREV)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv(direct, SECRET if direct == "INTERSERVICE_HMAC_SECRET" else PREV)
    monkeypatch.setenv(file_variable, str(path))
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == direct
    assert file_variable in str(caught.value)
    assert SECRET not in str(caught.value) and PREV not in str(caught.value)


def test_unreadable_secret_file_names_the_file_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_FILE", str(missing))
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "INTERSERVICE_HMAC_SECRET_FILE"
    assert str(missing) in str(caught.value)


def test_non_utf8_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe" + b"a" * 40)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_FILE", str(path))
    with pytest.raises(GateConfigError, match="not UTF-8"):
        _sign()


def test_empty_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"\n")
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_FILE", str(path))
    with pytest.raises(GateConfigError, match="is empty"):
        _sign()


def test_short_secret_is_refused_unless_weak_secrets_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "only-31-bytes-long-secret-12345"
    assert len(short) == 31
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", short)
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "INTERSERVICE_HMAC_SECRET"
    assert "31 bytes" in str(caught.value) and short not in str(caught.value)
    monkeypatch.setenv("GATE_ALLOW_WEAK_SECRET", "Yes")
    assert _sign() == _sign(secret=short)


def test_secret_length_counts_utf8_bytes_not_characters() -> None:
    sixteen_chars_32_bytes = "ü" * 16
    assert _sign(secret=sixteen_chars_32_bytes)["X-Gate-Signature"]
    with pytest.raises(GateConfigError, match="30 bytes"):
        _sign(secret="ü" * 15)


@pytest.mark.parametrize("spelling", ["true", "TRUE", "True", "1", "yes", "YES", "yEs"])
def test_dual_sign_true_spellings(monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", spelling)
    assert "X-Gate-Signatures" in _sign()


@pytest.mark.parametrize("spelling", ["false", "FALSE", "0", "no", "No", ""])
def test_dual_sign_false_spellings(monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", spelling)
    assert "X-Gate-Signatures" not in _sign()


@pytest.mark.parametrize("spelling", ["on", "off", "2", "y", "n", "true ", "enabled"])
def test_unknown_boolean_spelling_names_the_variable(monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", spelling)
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "TOOL_GATE_DUAL_SIGN"


def test_unknown_allow_weak_spelling_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE_ALLOW_WEAK_SECRET", "sure")
    with pytest.raises(GateConfigError) as caught:
        _sign(secret=SECRET)
    assert caught.value.variable == "GATE_ALLOW_WEAK_SECRET"


def test_dual_sign_argument_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", "true")
    assert "X-Gate-Signatures" not in _sign(dual_sign=False)
    monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", "false")
    assert "X-Gate-Signatures" in _sign(dual_sign=True)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_dual_sign_without_previous_secret_explains_what_is_missing(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    if how == "env":
        monkeypatch.setenv("TOOL_GATE_DUAL_SIGN", "yes")
    with pytest.raises(GateConfigError) as caught:
        _sign(dual_sign=True if how == "argument" else None)
    message = str(caught.value)
    assert "TOOL_GATE_DUAL_SIGN=true" in message
    assert "INTERSERVICE_HMAC_SECRET_PREV" in message


def test_previous_equal_to_current_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", SECRET)
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "INTERSERVICE_HMAC_SECRET_PREV"
    assert SECRET not in str(caught.value)


def test_equal_key_ids_with_two_secrets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET_PREV", PREV)
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID", "same")
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID_PREV", "same")
    with pytest.raises(GateConfigError) as caught:
        _sign()
    assert caught.value.variable == "INTERSERVICE_HMAC_KEY_ID_PREV"


def test_equal_key_ids_without_previous_secret_are_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", SECRET)
    monkeypatch.setenv("INTERSERVICE_HMAC_KEY_ID", "previous")
    assert _sign()["X-Gate-Key-Id"] == "previous"


def test_explicit_environ_mapping_is_used_instead_of_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERSERVICE_HMAC_SECRET", PREV)
    signer = GateSigner.from_env(environ={"INTERSERVICE_HMAC_SECRET": SECRET, "INTERSERVICE_HMAC_KEY_ID": "k1"})
    assert signer.key_id == "k1"
    assert signer.sign("POST", "/tools/run?x=1", b"{}", timestamp=TS, nonce=NONCE) == _sign(secret=SECRET, key_id="k1")


def test_secret_argument_of_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="secret must be str or bytes"):
        _sign(secret=12345678901234567890123456789012345)
    assert _sign(secret=SECRET.encode()) == _sign(secret=SECRET)


def test_no_error_message_or_repr_contains_a_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Collect every refusal we can provoke with secrets configured and scan them."""
    short = "short-secret-value"
    errors: list[BaseException] = []
    scenarios: list[dict[str, str]] = [
        {"INTERSERVICE_HMAC_SECRET": short},
        {"INTERSERVICE_HMAC_SECRET": SECRET, "INTERSERVICE_HMAC_SECRET_PREV": SECRET},
        {"INTERSERVICE_HMAC_SECRET": SECRET, "INTERSERVICE_HMAC_SECRET_FILE": str(tmp_path / "x")},
        {"INTERSERVICE_HMAC_SECRET": SECRET, "INTERSERVICE_HMAC_SECRET_PREV": short},
        {"INTERSERVICE_HMAC_SECRET": SECRET, "TOOL_GATE_DUAL_SIGN": "true"},
        {
            "INTERSERVICE_HMAC_SECRET": SECRET,
            "INTERSERVICE_HMAC_SECRET_PREV": PREV,
            "INTERSERVICE_HMAC_SECRET_PREV_FILE": str(tmp_path / "x"),
        },
        {
            "INTERSERVICE_HMAC_SECRET": SECRET,
            "INTERSERVICE_HMAC_SECRET_PREV": PREV,
            "INTERSERVICE_HMAC_KEY_ID": "k",
            "INTERSERVICE_HMAC_KEY_ID_PREV": "k",
        },
    ]
    for scenario in scenarios:
        with monkeypatch.context() as patch:
            for name, value in scenario.items():
                patch.setenv(name, value)
            with pytest.raises((GateConfigError, ValueError)) as caught:
                _sign()
            errors.append(caught.value)
    assert len(errors) == len(scenarios)
    for error in errors:
        for text in (str(error), repr(error)):
            assert short not in text and PREV not in text and SECRET not in text

    signer = GateSigner.from_env(secret=SECRET, prev_secret=PREV, dual_sign=True)
    for text in (repr(signer), str(signer), repr(signer._current), repr(signer._dual_with)):
        assert SECRET not in text and PREV not in text
    assert "fingerprint=" in repr(signer)
