-- The grace sweeper now pages through the overdue sessions with a (grace_deadline, session_id)
-- cursor, so that sessions it has just woken, still shown detached while the read model catches
-- up, do not hide the ones behind them. This index serves that order and the row comparison.
CREATE INDEX IF NOT EXISTS session_index_grace_cursor_idx
  ON session_index (grace_deadline, session_id) WHERE state = 'detached';
DROP INDEX IF EXISTS session_index_grace_idx;
