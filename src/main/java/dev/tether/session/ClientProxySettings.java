package dev.tether.session;

import com.typesafe.config.Config;
import java.time.Duration;

/**
 * The session's knobs, read once from {@code tether.session}.
 *
 * @param passivateDetachedAfter how long a detached session stays in memory without receiving a
 *     command before it leaves memory (it stays durable; the next message or resume brings it
 *     back, and {@link GraceSweeper} wakes it when its grace period is over)
 * @param readModelWaitBeforeErase how long an ended session waits, at most, for the inspection
 *     read model to project its last events before they are erased
 * @param checkWrittenAfter how long after writing to its connection a session whose client has
 *     not acknowledged the writes tells the connection how far it wrote (a delivery dropped
 *     between nodes, with none after it, is noticed so)
 */
public record ClientProxySettings(
    Duration grace,
    int outboxMaxMessages,
    long outboxMaxBytes,
    int snapshotEvery,
    Duration tombstoneRetention,
    Duration askTimeout,
    Duration passivateDetachedAfter,
    Duration readModelWaitBeforeErase,
    Duration checkWrittenAfter) {

  /**
   * The default of 30 s for {@code passivateDetachedAfter}, no wait for a read model before
   * erasing (unit tests: no projection runs), and 10 s for {@code checkWrittenAfter}.
   */
  public ClientProxySettings(
      Duration grace,
      int outboxMaxMessages,
      long outboxMaxBytes,
      int snapshotEvery,
      Duration tombstoneRetention,
      Duration askTimeout) {
    this(
        grace,
        outboxMaxMessages,
        outboxMaxBytes,
        snapshotEvery,
        tombstoneRetention,
        askTimeout,
        Duration.ofSeconds(30),
        Duration.ZERO,
        Duration.ofSeconds(10));
  }

  public static ClientProxySettings from(Config config) {
    Config c = config.getConfig("tether.session");
    return new ClientProxySettings(
        c.getDuration("grace"),
        c.getInt("outbox.max-messages"),
        c.getBytes("outbox.max-bytes"),
        c.getInt("snapshot-every"),
        c.getDuration("tombstone-retention"),
        c.getDuration("ask-timeout"),
        c.getDuration("passivate-detached-after"),
        c.getDuration("read-model-wait-before-erase"),
        c.getDuration("check-written-after"));
  }
}
