-- Keep the planner's statistics of the journal fresh.
--
-- The read model follows the journal with pekko-persistence-jdbc's eventsByTag query: a join of
-- event_journal and event_tag on a range of `ordering`, ORDER BY ordering LIMIT n. With
-- statistics taken while the table was small (or never), PostgreSQL estimates the range at a few
-- rows and plans a bitmap scan of the whole range plus a sort, instead of walking the ordering
-- index and stopping after n rows. Measured on a fresh database under load (bench throughput):
-- 150 ms per query instead of 3-6 ms, so the projection fell ever further behind and its
-- queries grew with the backlog; its share of the database's CPU was 85 %.
--
-- PostgreSQL's defaults re-analyze a table after 10 % of it changed; the journal is insert-heavy
-- and append-only by `ordering`, so analyze it after 2 % (or 1000 rows) instead. Tether also
-- analyzes both tables at start-up (Database.migrate).
ALTER TABLE public.event_journal SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE public.event_tag SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
