package dev.tether.persistence;

import com.typesafe.config.Config;
import java.util.Optional;

/** Where the journal lives: an external PostgreSQL when {@code url} is set, else an embedded one. */
public record DatabaseSettings(
    Optional<String> url,
    String user,
    String password,
    int poolSize,
    Optional<String> embeddedDataDir,
    int embeddedPort) {

  public static DatabaseSettings from(Config config) {
    Config db = config.getConfig("tether.db");
    return new DatabaseSettings(
        nonBlank(db.getString("url")),
        db.getString("user"),
        db.getString("password"),
        db.getInt("pool-size"),
        nonBlank(db.getString("embedded.data-dir")),
        db.getInt("embedded.port"));
  }

  public boolean embedded() {
    return url.isEmpty();
  }

  private static Optional<String> nonBlank(String value) {
    return value == null || value.isBlank() ? Optional.empty() : Optional.of(value.trim());
  }
}
