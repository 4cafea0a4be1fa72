-- Let the read model's frequent updates be HOT (heap-only tuple) updates.
--
-- Every message updates its message_history row once more when it is acknowledged (acked_at), and
-- every group of events updates its session's session_index row (last_seq, outbox_size,
-- updated_at, ...). PostgreSQL can make such an update "HOT" -- the new row version on the same
-- page, no new entry in any index, cleaned up without a vacuum -- only if no column the update
-- changes is used by an index, and only if the page has room. Measured under load (bench
-- throughput, docs/BENCHMARKS.md tenth session): 12 % of the message_history updates and 0.6 %
-- of the session_index updates were HOT, so nearly every update also wrote a new entry into each
-- of the table's indexes (two for the history, five for the index).
--
-- 1. Room on the pages for the new versions (applies to pages written from now on).
ALTER TABLE message_history SET (fillfactor = 80);
ALTER TABLE session_index SET (fillfactor = 50);

-- 2. updated_at changes with every event, and the purge's partial index on it made every
-- session_index update a non-HOT one. The purge now keys on ended_at, set once when the session
-- ends and never changed after. Rows that ended before this migration (or on a node of the
-- previous release during a rolling upgrade) have no ended_at: the purge also takes ended rows
-- without one by their updated_at (InspectionStore.purge), so nothing is backfilled here and
-- the table is locked only for one scan (the new index, empty at first).
ALTER TABLE session_index ADD COLUMN IF NOT EXISTS ended_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS session_index_ended_at_idx ON session_index (ended_at) WHERE ended_at IS NOT NULL;
DROP INDEX IF EXISTS session_index_ended_idx;
