-- When a session ends (logout, kick, grace expiry) its journal rows and snapshots are deleted.
-- What remains is this small marker, so that a later `resume` can still be answered with
-- reason "ended" or "expired" instead of "unknown". Rows older than
-- tether.session.tombstone-retention are removed by the periodic sweep.
CREATE TABLE IF NOT EXISTS session_tombstones (
  session_id  VARCHAR(64)  PRIMARY KEY,
  user_id     VARCHAR(255) NOT NULL,
  reason      VARCHAR(16)  NOT NULL,
  ended_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS session_tombstones_ended_at_idx ON session_tombstones (ended_at);
