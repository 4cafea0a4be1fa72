-- The grace sweeper (dev.tether.session.GraceSweeper) asks for detached sessions whose grace
-- deadline has passed, oldest deadline first; only detached rows carry a deadline that matters.
CREATE INDEX IF NOT EXISTS session_index_grace_idx ON session_index (grace_deadline) WHERE state = 'detached';
