package dev.tether.testkit;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.time.Duration;

/**
 * Holds an exclusive lock on a test database's journal table: every session write waits until it
 * is closed. What a slow journal does, on demand: tests use it to hold a handshake or a publish in
 * progress on a real node.
 */
public final class JournalLock implements AutoCloseable {
  private final String dbUrl;
  private final Connection connection;

  public JournalLock(String dbUrl) throws SQLException {
    this.dbUrl = dbUrl;
    connection = DriverManager.getConnection(dbUrl, "postgres", "postgres");
    connection.setAutoCommit(false);
    try (var statement = connection.createStatement()) {
      statement.execute("LOCK TABLE event_journal IN EXCLUSIVE MODE");
    }
  }

  /** Waits until some write waits for this lock (a session's persist is in progress on the node). */
  public void awaitAWriteWaiting(Duration max) throws Exception {
    long deadline = System.nanoTime() + max.toNanos();
    try (Connection observer = DriverManager.getConnection(dbUrl, "postgres", "postgres");
        var query =
            observer.prepareStatement(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid"
                    + " WHERE c.relname = 'event_journal' AND NOT l.granted")) {
      while (System.nanoTime() < deadline) {
        try (var rows = query.executeQuery()) {
          rows.next();
          if (rows.getLong(1) > 0) return;
        }
        Thread.sleep(20);
      }
    }
    throw new AssertionError("no write waited for the journal lock within " + max);
  }

  /** Releases the lock; a second call (a test that released it early) does nothing. */
  @Override
  public void close() throws SQLException {
    if (connection.isClosed()) return;
    connection.rollback();
    connection.close();
  }
}
