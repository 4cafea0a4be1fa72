package dev.tether.inspection;

import dev.tether.session.ClientProxy;
import dev.tether.session.OutboxMessage;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.pekko.persistence.typed.PersistenceId;
import org.apache.pekko.projection.eventsourced.EventEnvelope;
import org.apache.pekko.projection.jdbc.javadsl.JdbcHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Applies a group of {@link ClientProxy} events to {@code session_index} and
 * {@code message_history}, in the projection's transaction (the offset is stored in the same one:
 * exactly once).
 *
 * <p>The common events, {@code MessageQueued}, {@code Acked}, {@code Attached} and
 * {@code Detached}, are applied in bulk: a run of them costs at most three statements (insert the
 * history rows, mark the acknowledged ones, update each session's row) whatever its length,
 * instead of one to three statements per event. Message events were most of the database's CPU
 * per delivery; attaches and detaches are what a reconnect storm or a mass disconnect is made
 * of (one statement each for 100,000 sockets closing). Everything else ({@code Opened},
 * {@code Ended}, a queued message that evicted older ones) ends the run and is applied on its
 * own, in journal order, so the result is the same as applying the events one by one
 * ({@code InspectionHandlerTest} checks both ways). A run can be applied as a whole because a
 * session's acknowledgement never exceeds the highest seq it had queued before it (the rows an
 * ack covers are in the run before it), and because what an attach or detach changes (state,
 * grace deadline, resume and takeover counts) depends on no message event and only the last
 * one of a session in the run decides the state.
 *
 * <p>A row in state {@code ended} never leaves it: {@code SessionStore.erase} may mark the row
 * ended before this handler sees the session's last events (or instead of it, when they were
 * erased first), so every state change is guarded. Counters and seqs may still catch up.
 */
final class SessionIndexHandler
    extends JdbcHandler<List<EventEnvelope<ClientProxy.Event>>, PooledJdbcSession> {
  private static final Logger log = LoggerFactory.getLogger(SessionIndexHandler.class);

  @Override
  public void process(PooledJdbcSession session, List<EventEnvelope<ClientProxy.Event>> envelopes)
      throws Exception {
    session.<Void>withConnection(
        c -> {
          Run run = new Run();
          for (EventEnvelope<ClientProxy.Event> envelope : envelopes) {
            String sessionId = PersistenceId.extractEntityId(envelope.persistenceId());
            ClientProxy.Event event = envelope.event();
            if (event instanceof ClientProxy.MessageQueued q && q.evictThrough() == 0) {
              run.queued(sessionId, q, envelope.timestamp());
            } else if (event instanceof ClientProxy.Acked a) {
              run.acked(sessionId, a, envelope.timestamp());
            } else if (event instanceof ClientProxy.Attached a) {
              run.attached(sessionId, a);
            } else if (event instanceof ClientProxy.Detached d) {
              run.detached(sessionId, d, envelope.timestamp());
            } else {
              run.flush(c);
              apply(c, sessionId, event, time(envelope.timestamp()));
            }
          }
          run.flush(c);
          return null;
        });
  }

  private static void apply(Connection c, String sessionId, ClientProxy.Event event, OffsetDateTime at)
      throws SQLException {
    if (event instanceof ClientProxy.Opened e) onOpened(c, e);
    else if (event instanceof ClientProxy.MessageQueued e) onMessageQueued(c, sessionId, e, at);
    else if (event instanceof ClientProxy.Ended e) onEnded(c, sessionId, e);
    // Acked, Attached and Detached are always part of a Run. Rooms, upstream and user-index
    // events do not show in the read model.
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

  private static void onEnded(Connection c, String sessionId, ClientProxy.Ended e) throws SQLException {
    // The tombstone's words ('expired' or 'ended': logout, kicked, abandoned), so the reason reads the same whether this
    // event or SessionStore.erase marked the row first.
    String reason = "expired".equals(e.reason()) ? "expired" : "ended";
    try (PreparedStatement ps =
        c.prepareStatement(
            "UPDATE session_index SET "
                + "ended_reason = CASE WHEN state = 'ended' THEN ended_reason ELSE ? END, "
                + "updated_at = CASE WHEN state = 'ended' THEN updated_at ELSE ? END, "
                + "ended_at = COALESCE(ended_at, ?), "
                + "state = 'ended', grace_deadline = NULL, outbox_size = 0 "
                + "WHERE session_id = ?")) {
      ps.setString(1, reason);
      ps.setObject(2, time(e.ts()));
      ps.setObject(3, time(e.ts()));
      ps.setString(4, sessionId);
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

  /**
   * A run of {@code MessageQueued} (without eviction), {@code Acked}, {@code Attached} and
   * {@code Detached} events, possibly of many sessions, applied with at most three statements
   * over arrays ({@code unnest}).
   */
  private static final class Run {
    // message_history rows to insert
    private final List<String> rowSession = new ArrayList<>();
    private final List<Long> rowSeq = new ArrayList<>();
    private final List<Long> rowQueuedAt = new ArrayList<>();
    private final List<Integer> rowBytes = new ArrayList<>();
    private final List<String> rowSender = new ArrayList<>();
    private final List<String> rowRoom = new ArrayList<>();
    // acknowledgements: rows of the session with seq in (after, through] are acked at `at`
    private final List<String> ackSession = new ArrayList<>();
    private final List<Long> ackAfter = new ArrayList<>();
    private final List<Long> ackThrough = new ArrayList<>();
    private final List<Long> ackAt = new ArrayList<>();
    // per session: what the run changes in session_index
    private final Map<String, Counters> sessions = new LinkedHashMap<>();

    private static final class Counters {
      long lastSeq;
      long ackedSeq;
      int queued;
      int acked;
      long at;
      // attaches and detaches: the last one decides the state; null when the run has none
      String state;
      Long graceDeadline; // of the last Detached, when it is the last of the two
      int resumes;
      int takeovers;
    }

    private Counters counters(String sessionId) {
      return sessions.computeIfAbsent(sessionId, id -> new Counters());
    }

    void queued(String sessionId, ClientProxy.MessageQueued event, long at) {
      OutboxMessage message = event.message();
      rowSession.add(sessionId);
      rowSeq.add(message.seq());
      rowQueuedAt.add(message.ts());
      rowBytes.add((int) Math.min(Integer.MAX_VALUE, message.bytes()));
      rowSender.add(message.from());
      rowRoom.add(message.room());
      Counters counters = counters(sessionId);
      counters.lastSeq = Math.max(counters.lastSeq, message.seq());
      counters.queued++;
      counters.at = Math.max(counters.at, at);
    }

    void acked(String sessionId, ClientProxy.Acked event, long at) {
      Counters counters = counters(sessionId);
      ackSession.add(sessionId);
      // An earlier ack in this run covered everything up to its seq (the WHERE clause skips
      // rows already acked anyway); this one covers what follows, with its own time.
      ackAfter.add(counters.ackedSeq);
      ackThrough.add(event.seq());
      ackAt.add(at);
      counters.ackedSeq = Math.max(counters.ackedSeq, event.seq());
      counters.at = Math.max(counters.at, at);
    }

    void attached(String sessionId, ClientProxy.Attached event) {
      Counters counters = counters(sessionId);
      counters.state = "attached";
      counters.graceDeadline = null;
      if (event.resumed()) counters.resumes++;
      if (event.takeover()) counters.takeovers++;
      counters.at = Math.max(counters.at, event.ts());
    }

    void detached(String sessionId, ClientProxy.Detached event, long at) {
      Counters counters = counters(sessionId);
      counters.state = "detached";
      counters.graceDeadline = event.graceDeadline();
      counters.at = Math.max(counters.at, at);
    }

    void flush(Connection c) throws SQLException {
      if (sessions.isEmpty()) return;
      if (!rowSession.isEmpty()) insertHistory(c);
      if (!ackSession.isEmpty()) markAcked(c);
      updateSessions(c);
      for (List<?> list :
          List.of(rowSession, rowSeq, rowQueuedAt, rowBytes, rowSender, rowRoom, ackSession, ackAfter, ackThrough, ackAt)) {
        list.clear();
      }
      sessions.clear();
    }

    private void insertHistory(Connection c) throws SQLException {
      try (PreparedStatement ps =
          c.prepareStatement(
              "INSERT INTO message_history(session_id, seq, queued_at, bytes, sender, room) "
                  + "SELECT sid, seq, to_timestamp(ms / 1000.0), bytes, sender, room "
                  + "FROM unnest(?::varchar[], ?::bigint[], ?::bigint[], ?::int[], ?::varchar[], ?::varchar[]) "
                  + "AS v(sid, seq, ms, bytes, sender, room) "
                  + "ON CONFLICT (session_id, seq) DO NOTHING")) {
        ps.setArray(1, c.createArrayOf("varchar", rowSession.toArray()));
        ps.setArray(2, c.createArrayOf("bigint", rowSeq.toArray()));
        ps.setArray(3, c.createArrayOf("bigint", rowQueuedAt.toArray()));
        ps.setArray(4, c.createArrayOf("integer", rowBytes.toArray()));
        ps.setArray(5, c.createArrayOf("varchar", rowSender.toArray()));
        ps.setArray(6, c.createArrayOf("varchar", rowRoom.toArray()));
        ps.executeUpdate();
      }
    }

    /** Marks the acknowledged rows, counting per session how many it marked (for outbox_size). */
    private void markAcked(Connection c) throws SQLException {
      try (PreparedStatement ps =
          c.prepareStatement(
              "UPDATE message_history m SET acked_at = to_timestamp(v.ms / 1000.0) "
                  + "FROM unnest(?::varchar[], ?::bigint[], ?::bigint[], ?::bigint[]) AS v(sid, after, through, ms) "
                  + "WHERE m.session_id = v.sid AND m.seq > v.after AND m.seq <= v.through "
                  + "AND m.acked_at IS NULL AND NOT m.lost "
                  + "RETURNING m.session_id")) {
        ps.setArray(1, c.createArrayOf("varchar", ackSession.toArray()));
        ps.setArray(2, c.createArrayOf("bigint", ackAfter.toArray()));
        ps.setArray(3, c.createArrayOf("bigint", ackThrough.toArray()));
        ps.setArray(4, c.createArrayOf("bigint", ackAt.toArray()));
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) sessions.get(rs.getString(1)).acked++;
        }
      }
    }

    private void updateSessions(Connection c) throws SQLException {
      int n = sessions.size();
      Object[] ids = new Object[n], lastSeqs = new Object[n], ackedSeqs = new Object[n];
      Object[] queued = new Object[n], acked = new Object[n], ats = new Object[n];
      Object[] states = new Object[n], graceDeadlines = new Object[n], resumes = new Object[n], takeovers = new Object[n];
      int i = 0;
      for (Map.Entry<String, Counters> e : sessions.entrySet()) {
        Counters counters = e.getValue();
        ids[i] = e.getKey();
        lastSeqs[i] = counters.lastSeq;
        ackedSeqs[i] = counters.ackedSeq;
        queued[i] = counters.queued;
        acked[i] = counters.acked;
        ats[i] = counters.at;
        states[i] = counters.state;
        graceDeadlines[i] = counters.graceDeadline;
        resumes[i] = counters.resumes;
        takeovers[i] = counters.takeovers;
        i++;
      }
      try (PreparedStatement ps =
          c.prepareStatement(
              // An ended row keeps its state and updated_at; without an attach or detach in the
              // run (v.state null) the state and grace deadline stay as they are.
              "UPDATE session_index s SET last_seq = GREATEST(s.last_seq, v.last_seq), "
                  + "acked_seq = GREATEST(s.acked_seq, v.acked_seq), "
                  + "outbox_size = CASE WHEN s.state = 'ended' THEN 0 "
                  + "ELSE GREATEST(0, s.outbox_size + v.queued - v.acked) END, "
                  + "updated_at = CASE WHEN s.state = 'ended' THEN s.updated_at "
                  + "ELSE GREATEST(s.updated_at, to_timestamp(v.ms / 1000.0)) END, "
                  + "state = CASE WHEN s.state = 'ended' OR v.state IS NULL THEN s.state ELSE v.state END, "
                  + "grace_deadline = CASE WHEN v.state IS NULL THEN s.grace_deadline "
                  + "WHEN s.state = 'ended' OR v.state = 'attached' THEN NULL "
                  + "ELSE to_timestamp(v.deadline_ms / 1000.0) END, "
                  + "resumes = s.resumes + v.resumes, takeovers = s.takeovers + v.takeovers "
                  + "FROM unnest(?::varchar[], ?::bigint[], ?::bigint[], ?::int[], ?::int[], ?::bigint[], "
                  + "?::varchar[], ?::bigint[], ?::int[], ?::int[]) "
                  + "AS v(sid, last_seq, acked_seq, queued, acked, ms, state, deadline_ms, resumes, takeovers) "
                  + "WHERE s.session_id = v.sid "
                  + "RETURNING s.session_id")) {
        ps.setArray(1, c.createArrayOf("varchar", ids));
        ps.setArray(2, c.createArrayOf("bigint", lastSeqs));
        ps.setArray(3, c.createArrayOf("bigint", ackedSeqs));
        ps.setArray(4, c.createArrayOf("integer", queued));
        ps.setArray(5, c.createArrayOf("integer", acked));
        ps.setArray(6, c.createArrayOf("bigint", ats));
        ps.setArray(7, c.createArrayOf("varchar", states));
        ps.setArray(8, c.createArrayOf("bigint", graceDeadlines));
        ps.setArray(9, c.createArrayOf("integer", resumes));
        ps.setArray(10, c.createArrayOf("integer", takeovers));
        java.util.Set<String> missing = new java.util.HashSet<>(sessions.keySet());
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) missing.remove(rs.getString(1));
        }
        for (String sessionId : missing) {
          log.warn("No session_index row for {}; its messages, acks, attaches and detaches not applied", sessionId);
        }
      }
    }
  }

  private static OffsetDateTime time(long epochMillis) {
    return OffsetDateTime.ofInstant(Instant.ofEpochMilli(epochMillis), ZoneOffset.UTC);
  }
}
