-- message_history's only query by time is the purge of rows older than the history retention
-- (DELETE ... WHERE queued_at < ?). Rows are inserted in about the order they were queued, so a
-- BRIN index (the smallest and largest queued_at of each range of pages) finds the old pages as
-- well as a btree, yet costs next to nothing to keep up: the btree took a new entry for every
-- queued message and again for every acknowledgement (updates that touch the partial index of
-- V8's predicate cannot be HOT). Under the throughput bench the history's INSERT and ack UPDATE
-- were the database's two costliest statements.
CREATE INDEX IF NOT EXISTS message_history_queued_at_brin ON message_history USING brin (queued_at);
DROP INDEX IF EXISTS message_history_queued_at_idx;
