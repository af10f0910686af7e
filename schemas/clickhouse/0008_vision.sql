-- Vision: what the cameras' frames showed, stored from the vision.detections topic, and the
-- evidence a camera's city event carries.
-- frame_detections_log: one row per processed frame, its detections as parallel arrays
-- (a frame with nothing in it is a row too: "the camera saw nothing" is a fact). The
-- view vision_detections has one row per detection. frame_id is the camera and the
-- capture time, so a frame processed twice (a restart) is one row.
-- city_events_log gains the camera's evidence: which camera, the detected class, the
-- detector's confidence and the blurred snapshot's uri (empty for other sources).
-- Within ClickHouse 18.16's DDL.

CREATE TABLE IF NOT EXISTS frame_detections_log
(
    frame_id String,
    camera_id String,
    seq UInt64,
    captured_at DateTime,
    captured_at_ms UInt64,
    processed_at DateTime,
    width UInt16,
    height UInt16,
    model String,
    snapshot_uri String,
    latency_ms Float32,
    class_name Array(String),
    code Array(String),
    score Array(Float32),
    track_id Array(String),
    x1 Array(Float32),
    y1 Array(Float32),
    x2 Array(Float32),
    y2 Array(Float32),
    kafka_topic String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (camera_id, frame_id);

CREATE VIEW IF NOT EXISTS frame_detections AS SELECT * FROM frame_detections_log FINAL;

CREATE VIEW IF NOT EXISTS vision_detections AS
SELECT frame_id, camera_id, seq, captured_at, model, snapshot_uri,
       class_name, code, score, track_id, x1, y1, x2, y2
FROM frame_detections_log FINAL
ARRAY JOIN class_name, code, score, track_id, x1, y1, x2, y2;

ALTER TABLE city_events_log ADD COLUMN camera_id String;
ALTER TABLE city_events_log ADD COLUMN detected_class String;
ALTER TABLE city_events_log ADD COLUMN confidence Nullable(Float32);
ALTER TABLE city_events_log ADD COLUMN snapshot_uri String
;

-- A view's "*" is expanded when it is created: recreated to show the new columns.
DROP TABLE IF EXISTS city_events;
CREATE VIEW IF NOT EXISTS city_events AS SELECT * FROM city_events_log FINAL
