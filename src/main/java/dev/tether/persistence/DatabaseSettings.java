package dev.tether.persistence;

import com.typesafe.config.Config;
import java.util.Optional;

/**
 * Where the journal lives: an external PostgreSQL when {@code url} is set, else an embedded one.
 * {@code embeddedStatementStats} loads pg_stat_statements into the embedded server (diagnosis).
 * {@code projectionThreads} is how many connections the inspection projections may hold at once
 * ({@code pekko.projection.jdbc.blocking-jdbc-dispatcher}'s pool size).
 */
public record DatabaseSettings(
    Optional<String> url,
    String user,
    String password,
    int poolSize,
    Optional<String> embeddedDataDir,
    int embeddedPort,
    boolean embeddedStatementStats,
    int projectionThreads) {

  public static DatabaseSettings from(Config config) {
    Config db = config.getConfig("tether.db");
    return new DatabaseSettings(
        nonBlank(db.getString("url")),
        db.getString("user"),
        db.getString("password"),
        db.getInt("pool-size"),
        nonBlank(db.getString("embedded.data-dir")),
        db.getInt("embedded.port"),
        db.getBoolean("embedded.statement-stats"),
        config.getInt("pekko.projection.jdbc.blocking-jdbc-dispatcher.thread-pool-executor.fixed-pool-size"));
  }

  public boolean embedded() {
    return url.isEmpty();
  }

  private static Optional<String> nonBlank(String value) {
    return value == null || value.isBlank() ? Optional.empty() : Optional.of(value.trim());
  }
}
