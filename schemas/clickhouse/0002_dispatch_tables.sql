-- Dispatch decisions and dispatchers' feedback, stored by the sink from the
-- dispatch.orders / dispatch.review / dispatch.feedback topics.
-- One decision per input: a report decided again after a restart (or first sent to
-- review because no model answered, then decided) collapses to its latest decision
-- (ReplacingMergeTree versioned by decided_at_ms). Within ClickHouse 18.16's DDL.

CREATE TABLE IF NOT EXISTS dispatch_decisions_log
(
    input_id String,
    input_kind String,
    code String,
    event_name String,
    urgency String,
    route String,
    unit String,
    district String,
    street String,
    location_type String,
    confidence Float32,
    auto UInt8,
    review_reasons Array(String),
    alt_units Array(String),
    alt_codes Array(String),
    alt_confidences Array(Float32),
    unresolved Array(String),
    model_versions String,
    backend String,
    queue_ms Float32,
    address_ms Float32,
    features_ms Float32,
    inference_ms Float32,
    decide_ms Float32,
    total_ms Float32,
    received_at DateTime,
    decided_at DateTime,
    decided_at_ms UInt64,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(decided_at_ms)
PARTITION BY toYYYYMM(received_at)
ORDER BY input_id;

CREATE TABLE IF NOT EXISTS dispatch_feedback_log
(
    feedback_id String,
    input_id String,
    verdict String,
    unit String,
    code String,
    dispatcher_id String,
    given_at DateTime,
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(given_at)
ORDER BY (input_id, feedback_id);

CREATE VIEW IF NOT EXISTS dispatch_decisions AS SELECT * FROM dispatch_decisions_log FINAL;
CREATE VIEW IF NOT EXISTS dispatch_feedback AS SELECT * FROM dispatch_feedback_log FINAL;

-- Each decision with the dispatcher's latest verdict on it (empty when none yet):
-- the live accuracy and auto-dispatch rate are computed from this.
CREATE VIEW IF NOT EXISTS dispatch_outcomes AS
SELECT
    input_id,
    decided_at,
    district,
    code,
    auto,
    unit AS decided_unit,
    confidence,
    correct_unit,
    verdict
FROM dispatch_decisions
ANY LEFT JOIN
(
    SELECT
        input_id,
        argMax(unit, given_at) AS correct_unit,
        argMax(verdict, given_at) AS verdict
    FROM dispatch_feedback
    GROUP BY input_id
) AS feedback USING input_id;

-- Live quality per day: automation, and accuracy where a dispatcher gave a verdict.
CREATE VIEW IF NOT EXISTS dispatch_quality AS
SELECT
    toDate(decided_at) AS day,
    count() AS decisions,
    sum(auto) AS auto_dispatched,
    sum(auto) / count() AS auto_rate,
    countIf(verdict != '') AS with_feedback,
    countIf(auto = 1 AND verdict != '') AS auto_with_feedback,
    countIf(auto = 1 AND verdict != '' AND decided_unit = correct_unit) AS auto_correct,
    if(auto_with_feedback = 0, nan, auto_correct / auto_with_feedback) AS auto_accuracy
FROM dispatch_outcomes
GROUP BY day;
