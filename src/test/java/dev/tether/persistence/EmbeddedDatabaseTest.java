package dev.tether.persistence;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Optional;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The embedded PostgreSQL as the default run starts it, here with the diagnostic
 * {@code tether.db.embedded.statement-stats} on: the migrations are applied, and
 * pg_stat_statements records them.
 */
class EmbeddedDatabaseTest {
  private static Database database;

  @BeforeAll
  static void start() {
    database =
        Database.start(
            new DatabaseSettings(Optional.empty(), "postgres", "", 2, Optional.empty(), 0, true, 0));
  }

  @AfterAll
  static void stop() {
    if (database != null) database.close();
  }

  @Test
  void statementStatisticsRecordTheMigrations() throws SQLException {
    long migrationStatements =
        queryLong("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%CREATE TABLE%message_history%'");
    assertTrue(migrationStatements >= 1, "pg_stat_statements should have seen V3's CREATE TABLE, saw " + migrationStatements);
  }

  @Test
  void unacknowledgedHistoryHasItsPartialIndex() throws SQLException {
    // V8: the read model's ack and eviction updates look up unacknowledged rows only.
    try (Connection c = database.dataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs =
            st.executeQuery("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_history_unacked_idx'")) {
      assertTrue(rs.next(), "message_history_unacked_idx is missing");
      assertEquals(
          "CREATE INDEX message_history_unacked_idx ON public.message_history USING btree (session_id, seq) "
              + "WHERE ((acked_at IS NULL) AND (NOT lost))",
          rs.getString(1));
    }
  }

  @Test
  void historyPurgeFindsOldRowsThroughABrinIndex() throws SQLException {
    // V9: the purge's DELETE ... WHERE queued_at < ? is served by a BRIN index; the btree is gone.
    assertEquals(1, queryLong("SELECT count(*) FROM pg_indexes WHERE indexname = 'message_history_queued_at_brin' AND indexdef LIKE '%USING brin (queued_at)%'"));
    assertEquals(0, queryLong("SELECT count(*) FROM pg_indexes WHERE indexname = 'message_history_queued_at_idx'"));
  }

  @Test
  void tagTableHasAValidIndexByTag() throws SQLException {
    // V10, built CONCURRENTLY outside a transaction: present and valid (a failed concurrent build
    // would leave it invalid, and the planner would not use it).
    assertEquals(
        1,
        queryLong(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                + "WHERE c.relname = 'event_tag_tag_idx' AND i.indisvalid"));
  }

  private static long queryLong(String sql) throws SQLException {
    try (Connection c = database.dataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs = st.executeQuery(sql)) {
      rs.next();
      return rs.getLong(1);
    }
  }
}
