-- Duplicate merging and hotspots, stored from the dispatch.cases and city.hotspots topics.
-- case_links_log: one row per decided report naming its case (reports about one problem
-- at one place within a window share a case). A report whose case was later folded into
-- another is linked again, often within the same batch (same linked_at); all links of a
-- report are on one partition of dispatch.cases (keyed by district), so the later one has
-- the higher offset and replaces the earlier. Partitions follow the report's own time,
-- which both links carry.
-- hotspots_log: a place that kept producing cases, raised at most once per place and day.
-- Within ClickHouse 18.16's DDL.

CREATE TABLE IF NOT EXISTS case_links_log
(
    input_id String,
    case_id String,
    merge_key String,
    merged UInt8,
    reporters UInt32,
    absorbed Array(String),
    relinked UInt8,
    district String,
    code String,
    event_name String,
    place_level String,
    place String,
    reported_at DateTime,
    linked_at DateTime,
    linked_at_ms UInt64,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(reported_at)
ORDER BY input_id;

CREATE VIEW IF NOT EXISTS case_links AS SELECT * FROM case_links_log FINAL;

-- One row per case: its reporters, codes, place and time span.
CREATE VIEW IF NOT EXISTS cases AS
SELECT
    case_id,
    any(district) AS district,
    argMax(place_level, kafka_offset) AS place_level,
    argMax(place, kafka_offset) AS place,
    groupUniqArray(code) AS codes,
    groupUniqArray(event_name) AS event_names,
    count() AS reports,
    min(reported_at) AS first_reported,
    max(reported_at) AS last_reported,
    groupArray(input_id) AS input_ids
FROM case_links
GROUP BY case_id;

CREATE TABLE IF NOT EXISTS hotspots_log
(
    hotspot_id String,
    district String,
    place_level String,
    place String,
    cases UInt32,
    first_day Date,
    last_day Date,
    case_ids Array(String),
    raised_at DateTime,
    raised_at_ms UInt64,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(raised_at_ms)
PARTITION BY toYYYYMM(last_day)
ORDER BY hotspot_id;

CREATE VIEW IF NOT EXISTS hotspots AS SELECT * FROM hotspots_log FINAL;
