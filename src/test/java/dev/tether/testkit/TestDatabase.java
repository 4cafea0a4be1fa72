package dev.tether.testkit;

import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One real PostgreSQL server (embedded) for the whole test JVM, and a fresh database in it for
 * each test that asks, so tests never see each other's sessions. Migrations are applied by the
 * code under test ({@code Database.start}/{@code connect}), exactly as in production.
 */
public final class TestDatabase {
  private static EmbeddedPostgres server;
  private static final AtomicInteger counter = new AtomicInteger();

  private TestDatabase() {}

  private static synchronized EmbeddedPostgres server() {
    if (server == null) {
      try {
        server = EmbeddedPostgres.builder().setServerConfig("max_connections", "300").start();
      } catch (IOException e) {
        throw new IllegalStateException("Could not start embedded PostgreSQL for tests", e);
      }
      Runtime.getRuntime()
          .addShutdownHook(
              new Thread(
                  () -> {
                    try {
                      server.close();
                    } catch (IOException ignored) {
                      // the JVM is exiting anyway
                    }
                  }));
    }
    return server;
  }

  /** Creates an empty database and returns its JDBC URL (user and password: postgres). */
  public static String newDatabase() {
    String name = "tether_test_" + counter.incrementAndGet() + "_" + ProcessHandle.current().pid();
    try (Connection c = server().getPostgresDatabase().getConnection();
        Statement s = c.createStatement()) {
      s.execute("CREATE DATABASE " + name);
    } catch (SQLException e) {
      throw new IllegalStateException(e);
    }
    return server().getJdbcUrl("postgres", name);
  }

  /** Config overrides that point a TetherNode at {@code url}. */
  public static Map<String, Object> overridesFor(String url) {
    Map<String, Object> overrides = new HashMap<>();
    overrides.put("tether.db.url", url);
    overrides.put("tether.db.user", "postgres");
    overrides.put("tether.db.password", "postgres");
    overrides.put("tether.db.pool-size", 4);
    return overrides;
  }

  /** Counts rows of a query's single long column (e.g. {@code SELECT count(*) ...}). */
  public static long count(String url, String sql, Object... params) {
    return queryLong(url, sql, params);
  }

  /** The first row's first column of a query (or of an {@code INSERT ... RETURNING}), as a long. */
  public static long queryLong(String url, String sql, Object... params) {
    try (Connection c = java.sql.DriverManager.getConnection(url, "postgres", "postgres");
        var ps = c.prepareStatement(sql)) {
      for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
      try (ResultSet rs = ps.executeQuery()) {
        rs.next();
        return rs.getLong(1);
      }
    } catch (SQLException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Runs one statement that returns no rows. */
  public static void update(String url, String sql, Object... params) {
    try (Connection c = java.sql.DriverManager.getConnection(url, "postgres", "postgres");
        var ps = c.prepareStatement(sql)) {
      for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
      ps.executeUpdate();
    } catch (SQLException e) {
      throw new IllegalStateException(e);
    }
  }

  public static Map<String, Object> copy(Map<String, Object> m) {
    return new HashMap<>(m);
  }
}
