-- Does the foreign key's ON DELETE CASCADE (event_tag -> event_journal) make the journal's
-- snapshot deletes expensive? A scratch schema "x" with the journal's and the tags' shape, 2,000
-- sessions of 200 interleaved events each, then 20 sessions' deletes of 199 events, twice, each
-- way: through the cascade (x.j, x.t) and with a set-based tag delete and no foreign key
-- (x.j2, x.t2). Run against a node's embedded PostgreSQL:
--   TETHER_EMBEDDED_DB_PORT=5499 mvn -q compile exec:java &
--   PGPASSWORD=postgres psql -h 127.0.0.1 -p 5499 -U postgres -f bench/sql/journal-delete-cascade.sql
-- Figures and conclusion: docs/BENCHMARKS.md, "The database's side of a delivery".
DROP SCHEMA IF EXISTS x CASCADE;
CREATE SCHEMA x;
CREATE TABLE x.j (ordering BIGSERIAL, persistence_id VARCHAR(255) NOT NULL, sequence_number BIGINT NOT NULL, deleted BOOLEAN DEFAULT FALSE NOT NULL, payload BYTEA, PRIMARY KEY(persistence_id, sequence_number));
CREATE UNIQUE INDEX j_ordering_idx ON x.j(ordering);
CREATE TABLE x.t (event_id BIGINT, tag VARCHAR(256), PRIMARY KEY(event_id, tag), CONSTRAINT fk FOREIGN KEY(event_id) REFERENCES x.j(ordering) ON DELETE CASCADE);
CREATE INDEX t_tag ON x.t(tag, event_id);
CREATE TABLE x.j2 (LIKE x.j INCLUDING ALL);
CREATE TABLE x.t2 (event_id BIGINT, tag VARCHAR(256), PRIMARY KEY(event_id, tag));
CREATE INDEX t2_tag ON x.t2(tag, event_id);
-- 2000 sessions x 200 events, interleaved like a live journal
INSERT INTO x.j(persistence_id, sequence_number, payload) SELECT 'S|s' || (g % 2000), g / 2000 + 1, decode(repeat('ab', 100), 'hex') FROM generate_series(0, 399999) g;
INSERT INTO x.t SELECT ordering, 'tag-' || (ordering % 4) FROM x.j;
INSERT INTO x.j2 SELECT * FROM x.j;
INSERT INTO x.t2 SELECT * FROM x.t;
VACUUM ANALYZE x.j; VACUUM ANALYZE x.t; VACUUM ANALYZE x.j2; VACUUM ANALYZE x.t2;
\timing on
-- with the cascade: 20 sessions' 199 events each
DO $$ BEGIN FOR i IN 0..19 LOOP DELETE FROM x.j WHERE persistence_id = 'S|s' || i AND sequence_number <= 199; END LOOP; END $$;
-- explicit, set-based tag delete, no foreign key
DO $$ BEGIN FOR i IN 0..19 LOOP
  WITH d AS (DELETE FROM x.j2 WHERE persistence_id = 'S|s' || i AND sequence_number <= 199 RETURNING ordering)
  DELETE FROM x.t2 WHERE event_id IN (SELECT ordering FROM d);
END LOOP; END $$;
DO $$ BEGIN FOR i IN 20..39 LOOP DELETE FROM x.j WHERE persistence_id = 'S|s' || i AND sequence_number <= 199; END LOOP; END $$;
DO $$ BEGIN FOR i IN 20..39 LOOP
  WITH d AS (DELETE FROM x.j2 WHERE persistence_id = 'S|s' || i AND sequence_number <= 199 RETURNING ordering)
  DELETE FROM x.t2 WHERE event_id IN (SELECT ordering FROM d);
END LOOP; END $$;
DROP SCHEMA x CASCADE;
