package dev.tether.inspection;

import dev.tether.session.ClientProxy;
import java.util.Optional;
import javax.sql.DataSource;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.cluster.sharding.typed.ShardedDaemonProcessSettings;
import org.apache.pekko.cluster.sharding.typed.javadsl.ShardedDaemonProcess;
import org.apache.pekko.persistence.jdbc.query.javadsl.JdbcReadJournal;
import org.apache.pekko.projection.Projection;
import org.apache.pekko.projection.ProjectionBehavior;
import org.apache.pekko.projection.ProjectionId;
import org.apache.pekko.projection.eventsourced.EventEnvelope;
import org.apache.pekko.projection.eventsourced.javadsl.EventSourcedProvider;
import org.apache.pekko.projection.javadsl.SourceProvider;
import org.apache.pekko.projection.jdbc.javadsl.JdbcProjection;
import org.apache.pekko.persistence.query.Offset;

/**
 * The session read model ({@code session_index}, {@code message_history}): one exactly-once JDBC
 * projection per tag slice of the session events ({@link ClientProxy#tagFor}), each run once in
 * the cluster by a sharded daemon process, its offset committed with its writes. The session
 * actor has no second write path: everything here is derived from the journal, plus the
 * {@code ended} mark that {@code SessionStore.erase} sets when it deletes a session's events.
 */
public final class InspectionProjection {
  /** The projection's name in the offset store; each slice's tag is its key. */
  public static final String NAME = "session-inspection";

  private InspectionProjection() {}

  /**
   * Starts the projections and the periodic purge of expired history and ended sessions. Call
   * after {@code ClientProxy.init}; the tables come from the Flyway migrations.
   */
  public static InspectionStore init(ActorSystem<?> system, DataSource dataSource, InspectionSettings settings) {
    ShardedDaemonProcess.get(system)
        .init(
            ProjectionBehavior.Command.class,
            NAME,
            ClientProxy.TAG_SLICES,
            slice -> ProjectionBehavior.create(projection(system, dataSource, "session-" + slice)),
            ShardedDaemonProcessSettings.create(system),
            Optional.of(ProjectionBehavior.stopMessage()));

    InspectionStore store =
        new InspectionStore(dataSource, system.dispatchers().lookup(DispatcherSelector.blocking()));
    system
        .scheduler()
        .scheduleAtFixedRate(
            settings.purgeInterval(),
            settings.purgeInterval(),
            () ->
                store
                    .purge(settings.historyRetention(), settings.endedRetention())
                    .whenComplete(
                        (purged, failure) -> {
                          if (failure != null) system.log().warn("Purging the inspection read model failed", failure);
                        }),
            system.executionContext());
    return store;
  }

  static Projection<EventEnvelope<ClientProxy.Event>> projection(
      ActorSystem<?> system, DataSource dataSource, String tag) {
    SourceProvider<Offset, EventEnvelope<ClientProxy.Event>> source =
        EventSourcedProvider.eventsByTag(system, JdbcReadJournal.Identifier(), tag);
    // Events are applied in groups (up to 200, or whatever arrived within 200 ms), one
    // transaction per group with the offset stored in it: still exactly once, at a fraction of
    // the database round trips of one transaction per event (and the handler applies a group's
    // message, attach and detach events in bulk).
    return JdbcProjection.groupedWithin(
            ProjectionId.of(NAME, tag),
            source,
            () -> new PooledJdbcSession(dataSource),
            SessionIndexHandler::new,
            system)
        .withGroup(200, java.time.Duration.ofMillis(200));
  }
}
