package dev.tether.persistence;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Map;
import javax.sql.DataSource;
import org.flywaydb.core.Flyway;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The PostgreSQL server Tether writes to: an external one (TETHER_DB_URL) or an embedded one
 * started from the zonky binaries, so that a fresh machine needs nothing but Java and Maven.
 * Migrations from db/migrations are applied before the actor system starts.
 */
public final class Database implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(Database.class);

  private final String url;
  private final String user;
  private final String password;
  private final EmbeddedPostgres embedded; // null when external
  private boolean closed;
  private final HikariDataSource dataSource;

  private Database(
      String url, String user, String password, EmbeddedPostgres embedded, int poolSize, int projectionThreads) {
    this.url = url;
    this.user = user;
    this.password = password;
    this.embedded = embedded;
    HikariConfig hikari = new HikariConfig();
    hikari.setJdbcUrl(url);
    hikari.setUsername(user);
    hikari.setPassword(password);
    // Half the journal's pool for Tether's own SQL (erasure, tombstones, read-model queries),
    // plus one connection per thread of the inspection projections (they write through this pool).
    hikari.setMaximumPoolSize(Math.max(2, poolSize / 2) + projectionThreads);
    hikari.setPoolName("tether-store");
    this.dataSource = new HikariDataSource(hikari);
  }

  /** Starts (embedded) or connects to (external) the database and applies the migrations. */
  public static Database start(DatabaseSettings settings) {
    Database database;
    if (settings.embedded()) {
      EmbeddedPostgres pg = startEmbedded(settings);
      String url = pg.getJdbcUrl("postgres", "postgres");
      log.info("Embedded PostgreSQL listening on port {}", pg.getPort());
      database =
          new Database(url, "postgres", "postgres", pg, settings.poolSize(), settings.projectionThreads());
    } else {
      database =
          new Database(
              settings.url().get(),
              settings.user(),
              settings.password(),
              null,
              settings.poolSize(),
              settings.projectionThreads());
      log.info("Using external PostgreSQL at {}", withoutQuery(settings.url().get()));
    }
    database.migrate();
    return database;
  }

  /** Connects to an existing database (tests create one database per test class). */
  public static Database connect(String url, String user, String password) {
    Database database = new Database(url, user, password, null, 4, 0);
    database.migrate();
    return database;
  }

  /** The URL without its query string, where a password may hide: safe to log. */
  private static String withoutQuery(String url) {
    int query = url.indexOf('?');
    return query < 0 ? url : url.substring(0, query) + "?...";
  }

  private static EmbeddedPostgres startEmbedded(DatabaseSettings settings) {
    try {
      EmbeddedPostgres.Builder builder = EmbeddedPostgres.builder();
      if (settings.embeddedPort() > 0) builder.setPort(settings.embeddedPort());
      if (settings.embeddedDataDir().isPresent()) {
        Path dir = Path.of(settings.embeddedDataDir().get()).toAbsolutePath();
        Files.createDirectories(dir);
        builder.setDataDirectory(dir).setCleanDataDirectory(false);
      }
      // Sessions write small rows often; these favour latency on a small machine. Durability
      // is kept (fsync on): the journal is the product.
      builder.setServerConfig("max_connections", "200");
      // A fresh database fills its journal fast: let autovacuum look for tables to analyze every
      // 10 s rather than every minute, so the read model's queries get good plans early (see
      // db/migrations/V4__journal_statistics.sql).
      builder.setServerConfig("autovacuum_naptime", "10s");
      if (settings.embeddedStatementStats()) builder.setServerConfig("shared_preload_libraries", "pg_stat_statements");
      EmbeddedPostgres pg = builder.start();
      if (settings.embeddedStatementStats()) {
        try (Connection c = pg.getPostgresDatabase().getConnection();
            Statement st = c.createStatement()) {
          st.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        }
        log.info("pg_stat_statements is on (tether.db.embedded.statement-stats)");
      }
      return pg;
    } catch (IOException | SQLException e) {
      throw new IllegalStateException("Could not start the embedded PostgreSQL", e);
    }
  }

  private void migrate() {
    Flyway.configure()
        .dataSource(dataSource)
        .locations("classpath:db/migrations")
        // Flyway serialises nodes that start together with an advisory lock. Held in a
        // transaction (its default), that open transaction is one CREATE INDEX CONCURRENTLY
        // (V10) waits for to end, on another of Flyway's connections: the migration would wait
        // forever. A session-level lock holds no transaction open.
        .configuration(Map.of("flyway.postgresql.transactional.lock", "false"))
        .load()
        .migrate();
    analyzeJournal();
  }

  /**
   * Fresh statistics for the journal before the read model starts querying it: after a restart
   * on a journal that grew since autovacuum last looked, stale statistics make the read model's
   * catch-up queries scan their whole range (V4__journal_statistics.sql). Takes well under a
   * second on millions of rows (ANALYZE samples).
   */
  private void analyzeJournal() {
    try (Connection c = dataSource.getConnection();
        Statement s = c.createStatement()) {
      s.execute("ANALYZE public.event_journal, public.event_tag");
    } catch (SQLException e) {
      // Only a planner hint: a role without the right to analyze must not stop Tether.
      log.warn("Could not analyze the journal tables: {}", e.getMessage());
    }
  }

  /** The settings pekko-persistence-jdbc reads (see persistence.conf). */
  public Map<String, Object> configOverrides() {
    return Map.of("tether.db.url", url, "tether.db.user", user, "tether.db.password", password);
  }

  public DataSource dataSource() {
    return dataSource;
  }

  public String url() {
    return url;
  }

  @Override
  public synchronized void close() {
    // Called when the actor system has terminated and again by whoever stops the node: once.
    if (closed) return;
    closed = true;
    dataSource.close();
    if (embedded != null) {
      try {
        embedded.close();
      } catch (IOException e) {
        log.warn("Embedded PostgreSQL did not stop cleanly", e);
      }
    }
  }
}
