-- Ingest tables. ReplacingMergeTree keyed on the record id: a message re-delivered
-- after a crash is inserted again and collapses into one row at merge time; read
-- through the views below (FINAL) so queries never see the duplicate before that.
-- Kept within what ClickHouse 18.16 (Debian) understands: DateTime (UTC), no
-- LowCardinality, no DateTime64.

CREATE TABLE IF NOT EXISTS city_events_log
(
    event_id String,
    source String,
    reported_at DateTime,
    ingested_at DateTime,
    ingest_latency_ms Float32,
    report_delay_s Float32,
    district String,
    street String,
    road String,
    address String,
    location_type String,
    lon Nullable(Float64),
    lat Nullable(Float64),
    code String,
    event_class String,
    event_name String,
    urgency String,
    description String,
    reporter_id String,
    warnings Array(String),
    schema_version UInt16,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(reported_at)
ORDER BY (district, event_id);

CREATE TABLE IF NOT EXISTS citizen_appeals_log
(
    appeal_id String,
    channel String,
    received_at DateTime,
    ingested_at DateTime,
    ingest_latency_ms Float32,
    report_delay_s Float32,
    text String,
    text_chars UInt32,
    district String,
    address String,
    has_caller_contact UInt8,
    warnings Array(String),
    schema_version UInt16,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (channel, appeal_id);

CREATE TABLE IF NOT EXISTS video_frames_log
(
    frame_id String,
    camera_id String,
    captured_at DateTime,
    ingested_at DateTime,
    ingest_latency_ms Float32,
    report_delay_s Float32,
    seq UInt64,
    uri String,
    width UInt16,
    height UInt16,
    content_type String,
    district String,
    street String,
    road String,
    location_type String,
    lon Nullable(Float64),
    lat Nullable(Float64),
    warnings Array(String),
    schema_version UInt16,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(captured_at)
ORDER BY (camera_id, frame_id);

-- One row per source message that could not be processed; keyed on its Kafka
-- coordinates, so a dead letter re-sent after a restart is stored once.
CREATE TABLE IF NOT EXISTS dead_letters_log
(
    source_topic String,
    source_partition UInt32,
    source_offset UInt64,
    error_kind String,
    reason String,
    original_b64 String,
    key_b64 String,
    failed_at DateTime,
    processor String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(failed_at)
ORDER BY (source_topic, source_partition, source_offset);

-- What analysts and dashboards read: each record once.
CREATE VIEW IF NOT EXISTS city_events AS SELECT * FROM city_events_log FINAL;
CREATE VIEW IF NOT EXISTS citizen_appeals AS SELECT * FROM citizen_appeals_log FINAL;
CREATE VIEW IF NOT EXISTS video_frames AS SELECT * FROM video_frames_log FINAL;
CREATE VIEW IF NOT EXISTS dead_letters AS SELECT * FROM dead_letters_log FINAL;
