"""Settings: frozen, read from CITYSTREAM_* variables, credentials kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from streams.settings import REPO_ROOT, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("CITYSTREAM_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = Settings()
    assert s.topic_prefix == ""
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.domain_file == REPO_ROOT.parent / "shared" / "domain" / "qingdao.json"
    assert s.domain_file.is_file()
    assert s.topic("city.events") == "city.events"
    assert s.chdb_data_path == s.var_dir / "chdb"


@pytest.mark.parametrize(("field", "value"), [("topic_prefix", "x."), ("max_text_chars", 1)])
def test_frozen(field, value):
    s = Settings()
    with pytest.raises(ValidationError):
        setattr(s, field, value)
    assert getattr(s, field) != value


def test_env_topic_prefix(monkeypatch):
    monkeypatch.setenv("CITYSTREAM_TOPIC_PREFIX", "ci42.")
    s = Settings()
    assert s.topic_prefix == "ci42."
    assert s.topic("city.events") == "ci42.city.events"


def test_env_values_are_converted(monkeypatch, tmp_path):
    monkeypatch.setenv("CITYSTREAM_MAX_TEXT_CHARS", "123")
    monkeypatch.setenv("CITYSTREAM_SINK_FLUSH_INTERVAL_S", "0.25")
    monkeypatch.setenv("CITYSTREAM_DOMAIN_FILE", str(tmp_path / "d.json"))
    monkeypatch.setenv("CITYSTREAM_CHDB_PATH", str(tmp_path / "ch"))
    s = Settings()
    assert s.max_text_chars == 123
    assert s.sink_flush_interval_s == 0.25
    assert s.domain_file == tmp_path / "d.json"
    assert isinstance(s.domain_file, Path)
    assert s.chdb_data_path == tmp_path / "ch"


def test_env_names_are_case_insensitive_prefix(monkeypatch):
    monkeypatch.setenv("citystream_topic_prefix", "low.")
    assert Settings().topic_prefix == "low."


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CITYSTREAM_MAX_TEXT_CHARS", "0"),
        ("CITYSTREAM_MAX_TEXT_CHARS", "many"),
        ("CITYSTREAM_MAX_MESSAGE_BYTES", "100"),
        ("CITYSTREAM_WEB_PORT", "70000"),
        ("CITYSTREAM_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("CITYSTREAM_LOG_LEVEL", "verbose"),
        ("CITYSTREAM_SINK_FLUSH_INTERVAL_S", "0"),
    ],
)
def test_invalid_env_values_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "given",
    [
        {},
        {"kafka_sasl_mechanism": "PLAIN"},
        {"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u"},
        {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
        {"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": ""},
    ],
)
def test_sasl_without_credentials_refused(protocol, given):
    with pytest.raises(ValidationError) as info:
        Settings(kafka_security_protocol=protocol, **given)
    assert "CITYSTREAM_KAFKA_SASL_PASSWORD" in str(info.value)


def test_sasl_from_env_without_credentials_refused(monkeypatch):
    monkeypatch.setenv("CITYSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError):
        Settings()


def test_sasl_with_credentials_and_secret_kept_out_of_repr(monkeypatch):
    password = "hunter2-very-secret"
    monkeypatch.setenv("CITYSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_USERNAME", "citystream")
    monkeypatch.setenv("CITYSTREAM_KAFKA_SASL_PASSWORD", password)
    s = Settings()
    assert isinstance(s.kafka_sasl_password, SecretStr)
    assert s.kafka_sasl_password.get_secret_value() == password
    assert password not in repr(s)
    assert password not in str(s)
    assert password not in s.model_dump_json()
    assert password not in repr(s.model_dump())


def test_clickhouse_password_is_secret():
    s = Settings(clickhouse_password="ch-pass-123")
    assert isinstance(s.clickhouse_password, SecretStr)
    assert "ch-pass-123" not in repr(s)


def test_plaintext_needs_no_credentials():
    assert Settings(kafka_security_protocol="PLAINTEXT").kafka_sasl_password is None
    assert Settings(kafka_security_protocol="SSL").kafka_security_protocol == "SSL"
