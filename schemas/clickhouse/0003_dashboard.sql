-- Dashboards and the dispatcher board.
-- 1. The decision and feedback logs gain what the board and the panels show: the report's
--    channel, text and place, and its deadline (respond_by: received_at + the urgency's
--    response time). Verdicts carry their decision's facts, so the feedback aggregates
--    need no join.
-- 2. Hourly aggregate tables, kept by materialized views, so a panel reads a few
--    thousand rows instead of every decision. Counts are distinct-id states
--    (uniqExact): a decision the sink stores twice after a crash (at-least-once) and the
--    backfill below (re-run after a half-applied migration, or overlapping rows the view
--    already took) are absorbed exactly. Conditional counts are uniqExactStateIf, whose
--    state is a plain uniqExact one: every count merges with uniqExactMerge(If) on both
--    engines (26.x refuses uniqExactMerge on a uniqExactIf state).
-- 3. review_items: the reports sent to a dispatcher, so the board never scans all
--    decisions.
-- One file for both engines: 18.16 has no ADD COLUMN IF NOT EXISTS, so the runner
-- (schemas.migrations) skips an ADD COLUMN whose column is already there instead, and a
-- half-applied run can still run again.

ALTER TABLE dispatch_decisions_log ADD COLUMN channel String AFTER input_kind;
ALTER TABLE dispatch_decisions_log ADD COLUMN text String AFTER channel;
ALTER TABLE dispatch_decisions_log ADD COLUMN road String AFTER street;
ALTER TABLE dispatch_decisions_log ADD COLUMN place String AFTER road;
-- Rows stored before this migration have no deadline: the same fallback as the sink's
-- for a decision without one (its receipt time), so they count as late.
ALTER TABLE dispatch_decisions_log ADD COLUMN respond_by DateTime DEFAULT received_at AFTER received_at;

ALTER TABLE dispatch_feedback_log ADD COLUMN auto Nullable(UInt8) AFTER given_at;
ALTER TABLE dispatch_feedback_log ADD COLUMN decided_unit String AFTER auto;
ALTER TABLE dispatch_feedback_log ADD COLUMN received_at Nullable(DateTime) AFTER decided_unit;
ALTER TABLE dispatch_feedback_log ADD COLUMN respond_by Nullable(DateTime) AFTER received_at;

-- Views fix their column list when created: recreate them (dependents first) so the
-- SELECT * views show the new columns. Views hold no data.
DROP TABLE IF EXISTS dispatch_quality;
DROP TABLE IF EXISTS dispatch_outcomes;
DROP TABLE IF EXISTS dispatch_decisions;
DROP TABLE IF EXISTS dispatch_feedback;

CREATE VIEW IF NOT EXISTS dispatch_decisions AS SELECT * FROM dispatch_decisions_log FINAL;
CREATE VIEW IF NOT EXISTS dispatch_feedback AS SELECT * FROM dispatch_feedback_log FINAL;

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

-- Reports per hour received: volume, automation and automatic dispatch within deadline.
CREATE TABLE IF NOT EXISTS dashboard_reports_hourly
(
    hour DateTime,
    district String,
    code String,
    event_name String,
    channel String,
    unit String,
    reports AggregateFunction(uniqExact, String),
    auto_dispatched AggregateFunction(uniqExact, String),
    auto_due AggregateFunction(uniqExact, String),
    auto_in_time AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, district, code, event_name, channel, unit);

CREATE MATERIALIZED VIEW IF NOT EXISTS dashboard_reports_hourly_mv TO dashboard_reports_hourly AS
SELECT
    toStartOfHour(received_at) AS hour,
    district,
    code,
    event_name,
    channel,
    unit,
    uniqExactState(input_id) AS reports,
    uniqExactStateIf(input_id, auto = 1) AS auto_dispatched,
    uniqExactStateIf(input_id, auto = 1 AND respond_by > received_at) AS auto_due,
    uniqExactStateIf(input_id, auto = 1 AND respond_by > received_at AND decided_at <= respond_by) AS auto_in_time
FROM dispatch_decisions_log
GROUP BY hour, district, code, event_name, channel, unit;

-- Reports per hour and place (the named place, else the road): recurring places.
CREATE TABLE IF NOT EXISTS dashboard_places_hourly
(
    hour DateTime,
    district String,
    street String,
    location String,
    code String,
    reports AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, district, street, location, code);

CREATE MATERIALIZED VIEW IF NOT EXISTS dashboard_places_hourly_mv TO dashboard_places_hourly AS
SELECT
    toStartOfHour(received_at) AS hour,
    district,
    street,
    if(place != '', place, road) AS location,
    code,
    uniqExactState(input_id) AS reports
FROM dispatch_decisions_log
GROUP BY hour, district, street, location, code;

-- Verdicts per hour the report was received (verdicts from before this migration carry
-- no receipt time: their own time instead), final unit and how the report was decided
-- (decision: 1 automatically, 0 by a dispatcher, -1 unknown). A dispatcher's verdict on a
-- review item is that report's dispatch: in time when given by respond_by.
-- Deadlines: a decision stored before they were recorded has respond_by = received_at
-- (the column's default); it is left out of compliance (neither due nor in time), here
-- and in dashboard_reports_hourly, rather than counted late.
CREATE TABLE IF NOT EXISTS dashboard_feedback_hourly
(
    hour DateTime,
    unit String,
    decision Int8,
    judged AggregateFunction(uniqExact, String),
    confirmed AggregateFunction(uniqExact, String),
    corrected AggregateFunction(uniqExact, String),
    dispatcher_due AggregateFunction(uniqExact, String),
    dispatched_in_time AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, unit, decision);

CREATE MATERIALIZED VIEW IF NOT EXISTS dashboard_feedback_hourly_mv TO dashboard_feedback_hourly AS
SELECT
    toStartOfHour(ifNull(received_at, given_at)) AS hour,
    unit,
    toInt8(ifNull(auto, -1)) AS decision,
    uniqExactState(input_id) AS judged,
    uniqExactStateIf(input_id, verdict = 'confirmed') AS confirmed,
    uniqExactStateIf(input_id, verdict = 'corrected') AS corrected,
    uniqExactStateIf(input_id, ifNull(auto, 1) = 0 AND ifNull(respond_by > received_at, 0) = 1) AS dispatcher_due,
    uniqExactStateIf(input_id, ifNull(auto, 1) = 0 AND ifNull(respond_by > received_at AND given_at <= respond_by, 0) = 1) AS dispatched_in_time
FROM dispatch_feedback_log
GROUP BY hour, unit, decision;

-- The reports sent to a dispatcher (latest decision wins), with what the board shows.
CREATE TABLE IF NOT EXISTS review_items
(
    input_id String,
    received_at DateTime,
    respond_by DateTime,
    decided_at DateTime,
    code String,
    event_name String,
    urgency String,
    unit String,
    district String,
    street String,
    channel String,
    text String,
    confidence Float32,
    review_reasons Array(String),
    alt_units Array(String),
    alt_codes Array(String),
    alt_confidences Array(Float32),
    decided_at_ms UInt64
)
ENGINE = ReplacingMergeTree(decided_at_ms)
PARTITION BY toYYYYMM(received_at)
ORDER BY input_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS review_items_mv TO review_items AS
SELECT
    input_id, received_at, respond_by, decided_at, code, event_name, urgency, unit,
    district, street, channel, text, confidence, review_reasons, alt_units, alt_codes,
    alt_confidences, decided_at_ms
FROM dispatch_decisions_log
WHERE auto = 0;

-- For analysts: the aggregate tables with their counts finalised.
CREATE VIEW IF NOT EXISTS reports_hourly AS
SELECT
    hour,
    district,
    code,
    event_name,
    channel,
    unit,
    uniqExactMerge(reports) AS reports,
    uniqExactMerge(auto_dispatched) AS auto_dispatched,
    uniqExactMerge(auto_due) AS auto_due,
    uniqExactMerge(auto_in_time) AS auto_in_time
FROM dashboard_reports_hourly
GROUP BY hour, district, code, event_name, channel, unit;

CREATE VIEW IF NOT EXISTS places_hourly AS
SELECT hour, district, street, location, code, uniqExactMerge(reports) AS reports
FROM dashboard_places_hourly
GROUP BY hour, district, street, location, code;

CREATE VIEW IF NOT EXISTS feedback_hourly AS
SELECT
    hour,
    unit,
    decision,
    uniqExactMerge(judged) AS judged,
    uniqExactMerge(confirmed) AS confirmed,
    uniqExactMerge(corrected) AS corrected,
    uniqExactMerge(dispatcher_due) AS dispatcher_due,
    uniqExactMerge(dispatched_in_time) AS dispatched_in_time
FROM dashboard_feedback_hourly
GROUP BY hour, unit, decision;

-- What the new tables should hold for decisions and verdicts stored before them (and
-- those the views took between their creation and here: distinct states and the
-- replacing engine absorb the overlap, so re-running these is harmless too).
INSERT INTO dashboard_reports_hourly
SELECT
    toStartOfHour(received_at) AS hour,
    district,
    code,
    event_name,
    channel,
    unit,
    uniqExactState(input_id) AS reports,
    uniqExactStateIf(input_id, auto = 1) AS auto_dispatched,
    uniqExactStateIf(input_id, auto = 1 AND respond_by > received_at) AS auto_due,
    uniqExactStateIf(input_id, auto = 1 AND respond_by > received_at AND decided_at <= respond_by) AS auto_in_time
FROM dispatch_decisions_log
GROUP BY hour, district, code, event_name, channel, unit;

INSERT INTO dashboard_places_hourly
SELECT
    toStartOfHour(received_at) AS hour,
    district,
    street,
    if(place != '', place, road) AS location,
    code,
    uniqExactState(input_id) AS reports
FROM dispatch_decisions_log
GROUP BY hour, district, street, location, code;

INSERT INTO dashboard_feedback_hourly
SELECT
    toStartOfHour(ifNull(received_at, given_at)) AS hour,
    unit,
    toInt8(ifNull(auto, -1)) AS decision,
    uniqExactState(input_id) AS judged,
    uniqExactStateIf(input_id, verdict = 'confirmed') AS confirmed,
    uniqExactStateIf(input_id, verdict = 'corrected') AS corrected,
    uniqExactStateIf(input_id, ifNull(auto, 1) = 0 AND ifNull(respond_by > received_at, 0) = 1) AS dispatcher_due,
    uniqExactStateIf(input_id, ifNull(auto, 1) = 0 AND ifNull(respond_by > received_at AND given_at <= respond_by, 0) = 1) AS dispatched_in_time
FROM dispatch_feedback_log
GROUP BY hour, unit, decision;

INSERT INTO review_items
SELECT
    input_id, received_at, respond_by, decided_at, code, event_name, urgency, unit,
    district, street, channel, text, confidence, review_reasons, alt_units, alt_codes,
    alt_confidences, decided_at_ms
FROM dispatch_decisions_log
WHERE auto = 0;
