package dev.tether.session;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Join;
import org.apache.pekko.persistence.testkit.javadsl.EventSourcedBehaviorTestKit;

/**
 * The actor system the session unit tests run in: a one-node cluster (a session reaches rooms and
 * users through Cluster Sharding), the in-memory journal of the persistence testkit, and the
 * production serialization bindings and mailboxes.
 */
final class SessionTestSystems {
  private SessionTestSystems() {}

  static Config config(int numberOfShards) {
    return ConfigFactory.parseString(
            """
            pekko.actor.provider = cluster
            pekko.remote.artery.canonical.hostname = "127.0.0.1"
            pekko.remote.artery.canonical.port = 0
            pekko.cluster.jmx.multi-mbeans-in-same-jvm = on
            pekko.cluster.sharding.number-of-shards = %d
            # Remembered entities in the (in-memory) journal, not in LMDB files on disk.
            pekko.cluster.sharding.remember-entities-store = eventsourced
            pekko.loggers = ["org.apache.pekko.event.slf4j.Slf4jLogger"]
            pekko.logging-filter = "org.apache.pekko.event.slf4j.Slf4jLoggingFilter"
            pekko.loglevel = INFO
            pekko.coordinated-shutdown.run-by-jvm-shutdown-hook = off
            # The session state is a mutable object: a snapshot must be a serialized copy, as in
            # the real snapshot store, not a reference to the live state.
            pekko.persistence.testkit.snapshots.serialize = on
            """
                .formatted(numberOfShards))
        .withFallback(ConfigFactory.parseResources("serialization.conf"))
        // The entities' mailboxes are configured there (instrumented mailboxes).
        .withFallback(ConfigFactory.parseResources("telemetry.conf"))
        .withFallback(EventSourcedBehaviorTestKit.config());
  }

  /** Forms a one-node cluster. */
  static void joinSelf(ActorSystem<?> system) {
    Cluster cluster = Cluster.get(system);
    cluster.manager().tell(Join.create(cluster.selfMember().address()));
  }
}
