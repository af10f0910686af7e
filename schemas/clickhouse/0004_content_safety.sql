-- Content safety and appeal analysis.
-- 1. Appeals and events are stored masked (phone numbers, ID and bank cards, plates,
--    e-mail, names: processors/pii.py); the appeal rows gain what the analysis found
--    (urgency, sentiment, repeat complaint) and the content screen's flags.
-- 2. citizen_appeals_raw_log: the unmasked text and the caller's contact, for the admin
--    role only (the worker's /query refuses it to others; on a server the analyst user
--    has no grant on it).
-- 3. model_audit_log: every model output (model, version, input hash, output, backend,
--    processor, time); one row per output, a repeated delivery collapsing into one.
-- One file for both engines: ADD COLUMN without IF NOT EXISTS (18.16 has none), which the
-- runner skips when the column is there.

ALTER TABLE citizen_appeals_log ADD COLUMN pii_types Array(String);
ALTER TABLE citizen_appeals_log ADD COLUMN urgency String;
ALTER TABLE citizen_appeals_log ADD COLUMN urgency_reasons Array(String);
ALTER TABLE citizen_appeals_log ADD COLUMN sentiment String;
ALTER TABLE citizen_appeals_log ADD COLUMN sentiment_score Float32;
ALTER TABLE citizen_appeals_log ADD COLUMN repeat_complaint UInt8;
ALTER TABLE citizen_appeals_log ADD COLUMN content_flags Array(String);
ALTER TABLE citizen_appeals_log ADD COLUMN screen_score Float32;
ALTER TABLE city_events_log ADD COLUMN pii_types Array(String);

DROP TABLE IF EXISTS citizen_appeals;
CREATE VIEW IF NOT EXISTS citizen_appeals AS SELECT * FROM citizen_appeals_log FINAL;
DROP TABLE IF EXISTS city_events;
CREATE VIEW IF NOT EXISTS city_events AS SELECT * FROM city_events_log FINAL;

CREATE TABLE IF NOT EXISTS citizen_appeals_raw_log
(
    appeal_id String,
    received_at DateTime,
    text String,
    address String,
    caller_name String,
    caller_phone String,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY appeal_id;

CREATE TABLE IF NOT EXISTS model_audit_log
(
    input_id String,
    model String,
    version String,
    input_hash String,
    output String,
    backend String,
    processor String,
    produced_at DateTime,
    produced_at_ms UInt64,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(produced_at)
ORDER BY (input_id, model, produced_at_ms);

CREATE VIEW IF NOT EXISTS model_audit AS SELECT * FROM model_audit_log FINAL;
