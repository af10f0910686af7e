-- Similar past cases: one embedding per dispatched report (models/embedding: case_embedder,
-- 64 unit-length Float32), with what the search filters on (code, district, time) and
-- what the board shows of a past case (how it was handled: unit, event name; its text,
-- masked like everything stored). Rows are built by processors.similar.embedding_row.
-- case_id is the report's case (processors.cases; the report's own id until it is
-- linked to one), so the search can return one report per case.
-- Like the other logs: a ReplacingMergeTree keyed by the report, versioned by the
-- decision's time, so a report embedded again (a repeated delivery, or decided again
-- after a restart) keeps one row, the latest decision's; the view reads it FINAL.
-- Partitioned by the report's month (a report's time never changes, so its rows meet in
-- one partition and collapse). Within 18.16's DDL: no LowCardinality, DateTime in UTC.
-- Version 0005 is left to the case-links migration.

CREATE TABLE IF NOT EXISTS case_embeddings_log
(
    case_id String,
    input_id String,
    input_kind String,
    code String,
    event_name String,
    district String,
    street String,
    unit String,
    auto UInt8,
    text String,
    reported_at DateTime,
    decided_at DateTime,
    decided_at_ms UInt64,
    embedding Array(Float32),
    model_version String
)
ENGINE = ReplacingMergeTree(decided_at_ms)
PARTITION BY toYYYYMM(reported_at)
ORDER BY input_id;

CREATE VIEW IF NOT EXISTS case_embeddings AS SELECT * FROM case_embeddings_log FINAL;
