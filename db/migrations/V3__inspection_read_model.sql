-- The session inspection read model (dev.tether.inspection): tables kept by a projection over the
-- tagged journal, never written by the session actor itself.

-- Offset store and management tables of pekko-projection-jdbc 1.0.0 (the version pinned in
-- pom.xml), PostgreSQL dialect with the default lower-case names: what PostgresDialect's
-- createTableStatements / createManagementTableStatements issue (pekko.projection.jdbc.offset-store
-- table = pekko_projection_offset_store, management-table = pekko_projection_management).
CREATE TABLE IF NOT EXISTS pekko_projection_offset_store (
  projection_name VARCHAR(255) NOT NULL,
  projection_key VARCHAR(255) NOT NULL,
  current_offset VARCHAR(255) NOT NULL,
  manifest VARCHAR(4) NOT NULL,
  mergeable BOOLEAN NOT NULL,
  last_updated BIGINT NOT NULL,
  PRIMARY KEY(projection_name, projection_key)
);

CREATE INDEX IF NOT EXISTS projection_name_index ON pekko_projection_offset_store (projection_name);

CREATE TABLE IF NOT EXISTS pekko_projection_management (
  projection_name VARCHAR(255) NOT NULL,
  projection_key VARCHAR(255) NOT NULL,
  paused BOOLEAN NOT NULL,
  last_updated BIGINT NOT NULL,
  PRIMARY KEY(projection_name, projection_key)
);

-- One row per session, from its events. 'ended' is final: the projection never moves a row out
-- of it (events may be projected after SessionStore.erase has already marked the row ended).
CREATE TABLE IF NOT EXISTS session_index (
  session_id     VARCHAR(64)  PRIMARY KEY,
  user_id        VARCHAR(255) NOT NULL,
  state          VARCHAR(16)  NOT NULL CHECK (state IN ('attached', 'detached', 'ended')),
  last_seq       BIGINT       NOT NULL DEFAULT 0,
  acked_seq      BIGINT       NOT NULL DEFAULT 0,
  outbox_size    INTEGER      NOT NULL DEFAULT 0,
  grace_deadline TIMESTAMPTZ,
  resumes        BIGINT       NOT NULL DEFAULT 0,
  takeovers      BIGINT       NOT NULL DEFAULT 0,
  lost           BIGINT       NOT NULL DEFAULT 0,
  created_at     TIMESTAMPTZ  NOT NULL,
  updated_at     TIMESTAMPTZ  NOT NULL,
  -- 'ended' or 'expired', the tombstone's words (what a later resume is told)
  ended_reason   VARCHAR(16)
);

-- The listing is newest first, keyset-paginated on (created_at, session_id), optionally filtered
-- by state or by user.
CREATE INDEX IF NOT EXISTS session_index_created_idx ON session_index (created_at DESC, session_id DESC);
CREATE INDEX IF NOT EXISTS session_index_state_idx ON session_index (state, created_at DESC, session_id DESC);
CREATE INDEX IF NOT EXISTS session_index_user_idx ON session_index (user_id, created_at DESC, session_id DESC);
-- The purge of ended sessions past the tombstone retention.
CREATE INDEX IF NOT EXISTS session_index_ended_idx ON session_index (updated_at) WHERE state = 'ended';

-- What became of each downstream message: metadata only (never the body), kept for
-- tether.inspection.history-retention, also after the session ended.
CREATE TABLE IF NOT EXISTS message_history (
  session_id VARCHAR(64)  NOT NULL,
  seq        BIGINT       NOT NULL,
  queued_at  TIMESTAMPTZ  NOT NULL,
  acked_at   TIMESTAMPTZ,
  lost       BOOLEAN      NOT NULL DEFAULT FALSE,
  bytes      INTEGER      NOT NULL,
  sender     VARCHAR(255) NOT NULL,
  room       VARCHAR(255),
  PRIMARY KEY (session_id, seq)
);

CREATE INDEX IF NOT EXISTS message_history_queued_at_idx ON message_history (queued_at);
