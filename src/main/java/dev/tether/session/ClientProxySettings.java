package dev.tether.session;

import com.typesafe.config.Config;
import java.time.Duration;

/** The session's knobs, read once from {@code tether.session}. */
public record ClientProxySettings(
    Duration grace,
    int outboxMaxMessages,
    long outboxMaxBytes,
    int snapshotEvery,
    Duration tombstoneRetention,
    Duration askTimeout) {

  public static ClientProxySettings from(Config config) {
    Config c = config.getConfig("tether.session");
    return new ClientProxySettings(
        c.getDuration("grace"),
        c.getInt("outbox.max-messages"),
        c.getBytes("outbox.max-bytes"),
        c.getInt("snapshot-every"),
        c.getDuration("tombstone-retention"),
        c.getDuration("ask-timeout"));
  }
}
