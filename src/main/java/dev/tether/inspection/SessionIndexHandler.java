package dev.tether.inspection;

import dev.tether.session.ClientProxy;
import dev.tether.session.OutboxMessage;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import org.apache.pekko.persistence.typed.PersistenceId;
import org.apache.pekko.projection.eventsourced.EventEnvelope;
import org.apache.pekko.projection.jdbc.javadsl.JdbcHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Applies one {@link ClientProxy} event to {@code session_index} and {@code message_history}, in
 * the projection's transaction (the offset is stored in the same one: exactly once).
 *
 * <p>A row in state {@code ended} never leaves it: {@code SessionStore.erase} may mark the row
 * ended before this handler sees the session's last events (or instead of it, when they were
 * erased first), so every state change is guarded. Counters and seqs may still catch up.
 */
final class SessionIndexHandler extends JdbcHandler<EventEnvelope<ClientProxy.Event>, PooledJdbcSession> {
  private static final Logger log = LoggerFactory.getLogger(SessionIndexHandler.class);

  @Override
  public void process(PooledJdbcSession session, EventEnvelope<ClientProxy.Event> envelope) throws Exception {
    String sessionId = PersistenceId.extractEntityId(envelope.persistenceId());
    OffsetDateTime at = time(envelope.timestamp());
    session.<Void>withConnection(
        c -> {
          apply(c, sessionId, envelope.event(), at);
          return null;
        });
  }

  private static void apply(Connection c, String sessionId, ClientProxy.Event event, OffsetDateTime at)
      throws SQLException {
    if (event instanceof ClientProxy.Opened e) onOpened(c, e);
    else if (event instanceof ClientProxy.Attached e) onAttached(c, sessionId, e);
    else if (event instanceof ClientProxy.Detached e) onDetached(c, sessionId, e, at);
    else if (event instanceof ClientProxy.MessageQueued e) onMessageQueued(c, sessionId, e, at);
    else if (event instanceof ClientProxy.Acked e) onAcked(c, sessionId, e, at);
    else if (event instanceof ClientProxy.Ended e) onEnded(c, sessionId, e);
    // Rooms, upstream and user-index events do not show in the read model.
  }

  private static void onOpened(Connection c, ClientProxy.Opened e) throws SQLException {
    OffsetDateTime ts = time(e.ts());
    // A conflict means SessionStore.erase got here first (the row is ended): fill in what only
    // this event knows, keep the state.
    try (PreparedStatement ps =
        c.prepareStatement(
            "INSERT INTO session_index(session_id, user_id, state, created_at, updated_at) "
                + "VALUES (?, ?, 'attached', ?, ?) "
                + "ON CONFLICT (session_id) DO UPDATE SET user_id = EXCLUDED.user_id, created_at = EXCLUDED.created_at")) {
      ps.setString(1, e.sessionId());
      ps.setString(2, e.userId());
      ps.setObject(3, ts);
      ps.setObject(4, ts);
      ps.executeUpdate();
    }
  }

  private static void onAttached(Connection c, String sessionId, ClientProxy.Attached e) throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET "
                + "state = CASE WHEN state = 'ended' THEN state ELSE 'attached' END, "
                + "grace_deadline = NULL, resumes = resumes + ?, takeovers = takeovers + ?, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END "
                + "WHERE session_id = ?")) {
      ps.setInt(1, e.resumed() ? 1 : 0);
      ps.setInt(2, e.takeover() ? 1 : 0);
      ps.setObject(3, time(e.ts()));
      ps.setString(4, sessionId);
      expectRow(ps.executeUpdate(), sessionId, e);
    }
  }

  private static void onDetached(Connection c, String sessionId, ClientProxy.Detached e, OffsetDateTime at)
      throws SQLException {
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET "
                + "state = CASE WHEN state = 'ended' THEN state ELSE 'detached' END, "
                + "grace_deadline = CASE WHEN state = 'ended' THEN NULL ELSE ? END, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END "
                + "WHERE session_id = ?")) {
      ps.setObject(1, time(e.graceDeadline()));
      ps.setObject(2, at);
      ps.setString(3, sessionId);
      expectRow(ps.executeUpdate(), sessionId, e);
    }
  }

  private static void onMessageQueued(
      Connection c, String sessionId, ClientProxy.MessageQueued e, OffsetDateTime at) throws SQLException {
    OutboxMessage message = e.message();
    try (PreparedStatement ps =
        c.prepareStatement(
            "INSERT INTO message_history(session_id, seq, queued_at, bytes, sender, room) "
                + "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, seq) DO NOTHING")) {
      ps.setString(1, sessionId);
      ps.setLong(2, message.seq());
      ps.setObject(3, time(message.ts()));
      ps.setInt(4, (int) Math.min(Integer.MAX_VALUE, message.bytes()));
      ps.setString(5, message.from());
      ps.setString(6, message.room());
      ps.executeUpdate();
    }
    int evicted = 0;
    if (e.evictThrough() > 0) {
      // The outbox dropped everything still unacknowledged up to evictThrough.
      try (PreparedStatement ps =
          c.prepareStatement(
              "UPDATE message_history SET lost = TRUE "
                  + "WHERE session_id = ? AND seq <= ? AND acked_at IS NULL AND NOT lost")) {
        ps.setString(1, sessionId);
        ps.setLong(2, e.evictThrough());
        evicted = ps.executeUpdate();
      }
    }
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET last_seq = GREATEST(last_seq, ?), lost = lost + ?, "
                + "outbox_size = CASE WHEN state = 'ended' THEN 0 ELSE GREATEST(0, outbox_size + 1 - ?) END, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END "
                + "WHERE session_id = ?")) {
      ps.setLong(1, message.seq());
      ps.setInt(2, evicted);
      ps.setInt(3, evicted);
      ps.setObject(4, at);
      ps.setString(5, sessionId);
      expectRow(ps.executeUpdate(), sessionId, e);
    }
  }

  private static void onAcked(Connection c, String sessionId, ClientProxy.Acked e, OffsetDateTime at)
      throws SQLException {
    int acked;
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE message_history SET acked_at = ? "
                + "WHERE session_id = ? AND seq <= ? AND acked_at IS NULL AND NOT lost")) {
      ps.setObject(1, at);
      ps.setString(2, sessionId);
      ps.setLong(3, e.seq());
      acked = ps.executeUpdate();
    }
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET acked_seq = GREATEST(acked_seq, ?), "
                + "outbox_size = CASE WHEN state = 'ended' THEN 0 ELSE GREATEST(0, outbox_size - ?) END, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END "
                + "WHERE session_id = ?")) {
      ps.setLong(1, e.seq());
      ps.setInt(2, acked);
      ps.setObject(3, at);
      ps.setString(4, sessionId);
      expectRow(ps.executeUpdate(), sessionId, e);
    }
  }

  private static void onEnded(Connection c, String sessionId, ClientProxy.Ended e) throws SQLException {
    // The tombstone's words ('expired' or 'ended'), so the reason reads the same whether this
    // event or SessionStore.erase marked the row first.
    String reason = "expired".equals(e.reason()) ? "expired" : "ended";
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET "
                + "ended_reason = CASE WHEN state = 'ended' THEN ended_reason ELSE ? END, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END, "
                + "state = 'ended', grace_deadline = NULL, outbox_size = 0 "
                + "WHERE session_id = ?")) {
      ps.setString(1, reason);
      ps.setObject(2, time(e.ts()));
      ps.setString(3, sessionId);
      expectRow(ps.executeUpdate(), sessionId, e);
    }
  }

  /**
   * No row: the session's {@code Opened} never reached the projection (deleted with old events
   * by snapshot retention while the projection lagged far behind). Nothing to attach it to.
   */
  private static void expectRow(int updated, String sessionId, ClientProxy.Event event) {
    if (updated == 0) {
      log.warn("No session_index row for {}; {} not applied", sessionId, event.getClass().getSimpleName());
    }
  }

  private static OffsetDateTime time(long epochMillis) {
    return OffsetDateTime.ofInstant(Instant.ofEpochMilli(epochMillis), ZoneOffset.UTC);
  }
}
