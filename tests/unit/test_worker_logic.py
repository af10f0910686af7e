"""The worker's pure pieces: grouping a micro-batch, process_safely, broker options."""

from __future__ import annotations

import base64
import ssl
from datetime import datetime

import faust
import pytest

from processors import worker
from processors.ingest import (
    DEAD_LETTERS_TABLE,
    IngestContext,
    SourceMessage,
    StoredRow,
    dead_letter_row,
    group_outcomes,
    ingest,
)
from processors.worker import faust_broker_options, process_safely
from schemas.errors import DeadLetter, ErrorKind
from streams.settings import Settings

from .factories import RECEIVED_AT, citizen_appeal, city_event, encode, message

# --- group_outcomes ------------------------------------------------------------------------


def _outcomes(ctx: IngestContext) -> list[StoredRow | DeadLetter]:
    return [
        ingest(message(encode(city_event(event_id="E1")), offset=1), ctx, RECEIVED_AT),
        ingest(message(b"{not json", offset=2), ctx, RECEIVED_AT),
        ingest(
            message(encode(citizen_appeal(appeal_id="A1")), "citizen.appeals", offset=3),
            ctx,
            RECEIVED_AT,
        ),
        ingest(message(encode(city_event(event_id="E2")), offset=4), ctx, RECEIVED_AT),
        ingest(message(encode(city_event(code="Z99")), offset=5, key=None), ctx, RECEIVED_AT),
    ]


def test_group_outcomes_groups_rows_per_table_in_order(ctx: IngestContext) -> None:
    outcomes = _outcomes(ctx)
    assert [type(o).__name__ for o in outcomes] == [
        "StoredRow",
        "DeadLetter",
        "StoredRow",
        "StoredRow",
        "DeadLetter",
    ]
    batch = group_outcomes(outcomes)
    assert set(batch.rows_by_table) == {
        "city_events_log",
        "citizen_appeals_log",
        "citizen_appeals_raw_log",  # the unmasked appeal, for the admin-only table
        DEAD_LETTERS_TABLE,
    }
    assert [r["event_id"] for r in batch.rows_by_table["city_events_log"]] == ["E1", "E2"]
    assert [r["appeal_id"] for r in batch.rows_by_table["citizen_appeals_log"]] == ["A1"]
    assert len(batch.rows_by_table[DEAD_LETTERS_TABLE]) == len(batch.dead_letters) == 2


def test_dead_letters_are_kept_and_stored_as_rows(ctx: IngestContext) -> None:
    outcomes = _outcomes(ctx)
    batch = group_outcomes(outcomes)
    dead = [o for o in outcomes if isinstance(o, DeadLetter)]
    assert batch.dead_letters == dead
    stored = batch.rows_by_table[DEAD_LETTERS_TABLE]
    assert [r["source_offset"] for r in stored] == [2, 5]
    first, second = stored
    assert base64.b64decode(first["original_b64"]) == b"{not json"
    assert first["error_kind"] == str(ErrorKind.MALFORMED_JSON)
    assert first["source_topic"] == "city.events"
    assert first["source_partition"] == 3
    assert base64.b64decode(first["key_b64"]) == "市南区".encode()
    assert first["processor"] == "ingest"
    # Stored as naive UTC, like every DateTime column.
    assert first["failed_at"] == datetime(2026, 11, 26, 0, 30, 5)
    assert first["failed_at"].tzinfo is None
    # No key: an empty string, not None (the column is a plain String).
    assert second["key_b64"] == ""
    assert second["error_kind"] == str(ErrorKind.UNKNOWN_CODE)
    assert base64.b64decode(second["original_b64"]) == outcomes[4].original


def test_dead_letter_row_matches_the_row_in_the_batch(ctx: IngestContext) -> None:
    outcomes = _outcomes(ctx)
    batch = group_outcomes(outcomes)
    assert batch.rows_by_table[DEAD_LETTERS_TABLE] == [
        dead_letter_row(d) for d in batch.dead_letters
    ]


def test_empty_batch() -> None:
    batch = group_outcomes([])
    assert batch.rows_by_table == {}
    assert batch.dead_letters == []


def test_a_batch_of_only_good_rows_has_no_dead_letter_table(ctx: IngestContext) -> None:
    ok = ingest(message(encode(city_event())), ctx, RECEIVED_AT)
    batch = group_outcomes([ok])
    assert list(batch.rows_by_table) == ["city_events_log"]
    assert batch.dead_letters == []


# --- process_safely ------------------------------------------------------------------------


def test_process_safely_passes_through_ingest_results(ctx: IngestContext) -> None:
    msg = message(encode(city_event()))
    assert process_safely(msg, ctx, RECEIVED_AT) == ingest(msg, ctx, RECEIVED_AT)
    bad = message(b"")
    result = process_safely(bad, ctx, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert result.error_kind != ErrorKind.PROCESSING_ERROR


def test_process_safely_turns_a_processor_bug_into_a_dead_letter(
    ctx: IngestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(msg: SourceMessage, ctx: IngestContext, now: datetime) -> StoredRow:
        raise RuntimeError("district table exploded")

    monkeypatch.setattr(worker, "ingest", broken)
    original = encode(city_event())
    msg = message(original, "citizen.appeals", partition=7, offset=99, key=b"k")
    result = process_safely(msg, ctx, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert result.error_kind is ErrorKind.PROCESSING_ERROR
    assert "district table exploded" in result.reason
    assert "RuntimeError" in result.reason
    assert result.original == original
    assert result.key == b"k"
    assert (result.source_topic, result.source_partition, result.source_offset) == (
        "citizen.appeals",
        7,
        99,
    )
    assert result.failed_at == RECEIVED_AT
    assert result.processor == "ingest"


def test_process_safely_keeps_none_value_as_empty_bytes(
    ctx: IngestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(msg: SourceMessage, ctx: IngestContext, now: datetime) -> StoredRow:
        raise KeyError("x" * 5000)

    monkeypatch.setattr(worker, "ingest", broken)
    result = process_safely(message(None, key=None), ctx, RECEIVED_AT)
    assert isinstance(result, DeadLetter)
    assert result.original == b""
    assert result.key is None
    # A huge exception message is capped.
    assert len(result.reason) <= 2000


# --- faust_broker_options -----------------------------------------------------------------


def test_broker_options_list_every_bootstrap_server() -> None:
    settings = Settings(kafka_bootstrap_servers="a:1, b:2")
    options = faust_broker_options(settings)
    assert options["broker"] == "kafka://a:1;kafka://b:2"


def test_plaintext_has_no_credentials() -> None:
    options = faust_broker_options(Settings(kafka_bootstrap_servers="h:9092"))
    assert options == {"broker": "kafka://h:9092"}


def test_sasl_plaintext_gives_sasl_credentials() -> None:
    settings = Settings(
        kafka_bootstrap_servers="h:9092",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="ingest",
        kafka_sasl_password="s3cret",
    )
    options = faust_broker_options(settings)
    creds = options["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "ingest"
    assert creds.password == "s3cret"
    assert creds.mechanism.value == "SCRAM-SHA-256"
    assert creds.ssl_context is None
    # The secret is handed over as plain text, not as the SecretStr's masked repr.
    assert "*" not in creds.password


def test_ssl_gives_ssl_credentials_that_verify_the_broker() -> None:
    # No CA file: the system trust store. faust-streaming's SSLCredentials(cafile=...)
    # without a ``purpose`` calls ssl.create_default_context(purpose=None) -> TypeError.
    options = faust_broker_options(Settings(kafka_security_protocol="SSL"))
    creds = options["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert creds.context.check_hostname is True


def test_sasl_ssl_without_a_ca_file_uses_the_system_trust_store() -> None:
    # kafka_ssl_cafile is optional (kafka_admin only passes it when set); SASL_SSL must
    # not turn None into a file called "None".
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="ingest",
        kafka_sasl_password="s3cret",
    )
    creds = faust_broker_options(settings)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_with_a_ca_file_verifies_against_it() -> None:
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        pytest.skip("no system CA bundle to point at")
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ingest",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=cafile,
    )
    creds = faust_broker_options(settings)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.get_ca_certs() or creds.ssl_context.cert_store_stats()["x509"] > 0


def test_dispatch_pressure_holds_for_a_while_after_a_slow_batch(monkeypatch):
    from processors import worker

    clock = [100.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    pressure = worker.DispatchPressure(threshold_s=0.1, hold_s=0.5)
    pressure.observe(0.05)
    assert not pressure.behind()
    pressure.observe(0.3)
    assert pressure.behind()
    clock[0] += 0.6
    assert not pressure.behind()
