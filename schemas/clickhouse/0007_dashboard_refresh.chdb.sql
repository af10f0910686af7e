-- The dashboards' aggregates off the embedded engine's insert path (the server keeps its
-- views: 0007_dashboard_refresh.sql).
-- The four materialized views of 0003 are dropped; their tables and the read views stay.
-- The worker (processors/dashboard_refresh.py) runs the views' own SELECTs, read from
-- 0003, every few seconds on the sink's thread, over the rows inserted since (and over
-- any the sink inserted that a merge has already collapsed into a later version). The
-- distinct-id states and review_items' replacing engine make a row taken twice harmless,
-- as for the views.
-- The logs keep each row's insert block number through merges (_block_number), so a
-- refresh reads just the rows above its watermark even from a merged part.
-- dashboard_refresh_state: for each log, the highest insert block already aggregated (a
-- MergeTree's block numbers grow with every insert). Recorded here before the views go,
-- so the rows the views took are not taken again (taking them again would be harmless
-- too). Re-running: the watermark only grows (the replacing engine keeps the highest).

ALTER TABLE dispatch_decisions_log MODIFY SETTING enable_block_number_column = 1;
ALTER TABLE dispatch_feedback_log MODIFY SETTING enable_block_number_column = 1;

CREATE TABLE IF NOT EXISTS dashboard_refresh_state
(
    source String,
    block UInt64
)
ENGINE = ReplacingMergeTree(block)
ORDER BY source;

INSERT INTO dashboard_refresh_state
SELECT table AS source, max(max_block_number) AS block
FROM system.parts
WHERE database = currentDatabase() AND active
    AND table IN ('dispatch_decisions_log', 'dispatch_feedback_log')
GROUP BY table;

DROP TABLE IF EXISTS dashboard_reports_hourly_mv;
DROP TABLE IF EXISTS dashboard_places_hourly_mv;
DROP TABLE IF EXISTS dashboard_feedback_hourly_mv;
DROP TABLE IF EXISTS review_items_mv;
