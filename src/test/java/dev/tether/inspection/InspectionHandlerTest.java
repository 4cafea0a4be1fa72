package dev.tether.inspection;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.persistence.Database;
import dev.tether.session.ClientProxy;
import dev.tether.session.OutboxMessage;
import dev.tether.session.SessionStore;
import dev.tether.testkit.TestDatabase;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ForkJoinPool;
import org.apache.pekko.persistence.query.Offset;
import org.apache.pekko.projection.eventsourced.EventEnvelope;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The projection handler against a real PostgreSQL (schema from the migrations): what each event
 * does to {@code session_index} and {@code message_history}, and that an ended row stays ended
 * whatever arrives late.
 */
class InspectionHandlerTest {
  private static final long T0 = 1_700_000_000_000L;
  private static Database database;
  private static SessionStore sessionStore;
  private final SessionIndexHandler handler = new SessionIndexHandler();
  private long offset;

  @BeforeAll
  static void connect() {
    database = Database.connect(TestDatabase.newDatabase(), "postgres", "postgres");
    sessionStore = new SessionStore(database.dataSource(), ForkJoinPool.commonPool());
  }

  @AfterAll
  static void close() {
    if (database != null) database.close();
  }

  /** Applies one event as a group of its own, in its own transaction. */
  private void project(String sessionId, long seqNr, long timestamp, ClientProxy.Event event) throws Exception {
    projectGroup(List.of(envelope(sessionId, seqNr, timestamp, event)));
  }

  private EventEnvelope<ClientProxy.Event> envelope(
      String sessionId, long seqNr, long timestamp, ClientProxy.Event event) {
    return EventEnvelope.create(Offset.sequence(++offset), "ClientProxy|" + sessionId, seqNr, event, timestamp);
  }

  /** Applies a group of events in one transaction, as the projection does. */
  private void projectGroup(List<EventEnvelope<ClientProxy.Event>> group) throws Exception {
    PooledJdbcSession session = new PooledJdbcSession(database.dataSource());
    try {
      handler.process(session, group);
      session.commit();
    } finally {
      session.close();
    }
  }

  private static OutboxMessage message(long seq, long ts) {
    return new OutboxMessage(seq, "{\"n\":" + seq + "}", "backend", null, ts);
  }

  private static Map<String, Object> row(String sessionId) throws Exception {
    try (Connection c = database.dataSource().getConnection();
        PreparedStatement q = c.prepareStatement("SELECT * FROM session_index WHERE session_id = ?")) {
      q.setString(1, sessionId);
      try (ResultSet rs = q.executeQuery()) {
        assertTrue(rs.next(), "no row for " + sessionId);
        Map<String, Object> row = new LinkedHashMap<>();
        for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
          String column = rs.getMetaData().getColumnName(i);
          Object value = rs.getObject(i);
          if (value instanceof java.sql.Timestamp) value = rs.getObject(i, OffsetDateTime.class).toInstant().toEpochMilli();
          row.put(column, value);
        }
        return row;
      }
    }
  }

  private static List<String> history(String sessionId) throws Exception {
    try (Connection c = database.dataSource().getConnection();
        PreparedStatement q =
            c.prepareStatement(
                "SELECT seq, lost, acked_at IS NOT NULL AS acked FROM message_history WHERE session_id = ? ORDER BY seq")) {
      q.setString(1, sessionId);
      List<String> out = new ArrayList<>();
      try (ResultSet rs = q.executeQuery()) {
        while (rs.next()) {
          out.add(rs.getLong(1) + (rs.getBoolean(2) ? ":lost" : rs.getBoolean(3) ? ":acked" : ":open"));
        }
      }
      return out;
    }
  }

  @Test
  void eventsBuildTheSessionRowAndItsHistory() throws Exception {
    String id = "s_lifecycle";
    project(id, 1, T0, new ClientProxy.Opened(id, "ann", "hash", T0));
    project(id, 2, T0, new ClientProxy.Attached(1, false, false, T0));
    Map<String, Object> opened = row(id);
    assertEquals("attached", opened.get("state"));
    assertEquals("ann", opened.get("user_id"));
    assertEquals(T0, opened.get("created_at"));

    for (long seq = 1; seq <= 3; seq++) {
      project(id, 2 + seq, T0 + seq, new ClientProxy.MessageQueued(message(seq, T0 + seq), null, 0, 0));
    }
    // The fourth overflows an outbox of three: seq 1 is dropped.
    project(id, 6, T0 + 4, new ClientProxy.MessageQueued(message(4, T0 + 4), null, 0, 1));
    project(id, 7, T0 + 10, new ClientProxy.Acked(3));
    assertEquals(List.of("1:lost", "2:acked", "3:acked", "4:open"), history(id));
    Map<String, Object> afterAck = row(id);
    assertEquals(4L, afterAck.get("last_seq"));
    assertEquals(3L, afterAck.get("acked_seq"));
    assertEquals(1L, afterAck.get("lost"));
    assertEquals(1, afterAck.get("outbox_size"));
    assertEquals(T0 + 10, afterAck.get("updated_at"));

    project(id, 8, T0 + 20, new ClientProxy.Detached(T0 + 120_000));
    Map<String, Object> detached = row(id);
    assertEquals("detached", detached.get("state"));
    assertEquals(T0 + 120_000, detached.get("grace_deadline"));

    project(id, 9, T0 + 30, new ClientProxy.Attached(2, true, true, T0 + 30));
    Map<String, Object> resumed = row(id);
    assertEquals("attached", resumed.get("state"));
    assertNull(resumed.get("grace_deadline"));
    assertEquals(1L, resumed.get("resumes"));
    assertEquals(1L, resumed.get("takeovers"));

    project(id, 10, T0 + 40, new ClientProxy.Ended("logout", T0 + 40));
    Map<String, Object> ended = row(id);
    assertEquals("ended", ended.get("state"));
    assertEquals("ended", ended.get("ended_reason"));
    assertEquals(0, ended.get("outbox_size"));
    assertEquals(T0 + 40, ended.get("updated_at"));
    assertEquals(T0 + 40, ended.get("ended_at")); // the purge's clock

    // The erase that follows keeps it ended, with the tombstone's reason and its end time.
    sessionStore.erase(id, "ann", "ended", false).toCompletableFuture().get();
    assertEquals("ended", row(id).get("state"));
    assertEquals(T0 + 40, row(id).get("ended_at"));
    assertEquals("ended", row(id).get("ended_reason"));
    assertEquals(List.of("1:lost", "2:acked", "3:acked", "4:open"), history(id), "history outlives the session");
  }

  /**
   * The same events of two interleaved sessions, applied one per transaction and as one group
   * (where message, attach and detach events run in bulk), leave the same rows: several acks per
   * session in a run, an evicting message in the middle, several attaches and detaches of one
   * session in a run, with messages between them.
   */
  @Test
  void aGroupLeavesTheSameRowsAsOneEventAtATime() throws Exception {
    List<List<Object>> script = new ArrayList<>();
    for (String who : List.of("a", "b")) {
      script.add(List.of(who, T0, new ClientProxy.Opened("?", "u-" + who, "hash", T0)));
      script.add(List.of(who, T0, new ClientProxy.Attached(1, false, false, T0)));
    }
    for (long seq = 1; seq <= 6; seq++) {
      script.add(List.of("a", T0 + seq, new ClientProxy.MessageQueued(message(seq, T0 + seq), null, 0, 0)));
      script.add(List.of("b", T0 + seq, new ClientProxy.MessageQueued(message(seq, T0 + seq), null, 0, 0)));
      if (seq == 2) script.add(List.of("a", T0 + 20, new ClientProxy.Acked(1)));
      if (seq == 4) script.add(List.of("a", T0 + 21, new ClientProxy.Acked(3)));
    }
    script.add(List.of("b", T0 + 30, new ClientProxy.MessageQueued(message(7, T0 + 30), null, 0, 2)));
    script.add(List.of("b", T0 + 31, new ClientProxy.Acked(5)));
    script.add(List.of("a", T0 + 32, new ClientProxy.Detached(T0 + 120_000)));
    script.add(List.of("a", T0 + 33, new ClientProxy.MessageQueued(message(7, T0 + 33), null, 0, 0)));
    script.add(List.of("a", T0 + 34, new ClientProxy.Attached(2, true, false, T0 + 34)));
    script.add(List.of("a", T0 + 35, new ClientProxy.Acked(7)));
    script.add(List.of("b", T0 + 36, new ClientProxy.Detached(T0 + 130_000)));
    script.add(List.of("b", T0 + 37, new ClientProxy.MessageQueued(message(8, T0 + 37), null, 0, 0)));
    script.add(List.of("b", T0 + 38, new ClientProxy.Attached(2, true, true, T0 + 38)));
    script.add(List.of("b", T0 + 39, new ClientProxy.Detached(T0 + 140_000)));
    script.add(List.of("a", T0 + 40, new ClientProxy.Detached(T0 + 150_000)));
    script.add(List.of("a", T0 + 41, new ClientProxy.Attached(3, false, true, T0 + 41)));
    script.add(List.of("b", T0 + 42, new ClientProxy.Attached(3, true, false, T0 + 42)));
    script.add(List.of("b", T0 + 43, new ClientProxy.Detached(T0 + 160_000)));

    java.util.Map<String, Long> seqNrs = new java.util.HashMap<>();
    List<EventEnvelope<ClientProxy.Event>> group = new ArrayList<>();
    for (List<Object> step : script) {
      String who = (String) step.get(0);
      long ts = (Long) step.get(1);
      ClientProxy.Event event = (ClientProxy.Event) step.get(2);
      long seqNr = seqNrs.merge(who, 1L, Long::sum);
      if (event instanceof ClientProxy.Opened o) {
        project("single-" + who, seqNr, ts, new ClientProxy.Opened("single-" + who, o.userId(), "hash", o.ts()));
        group.add(envelope("group-" + who, seqNr, ts, new ClientProxy.Opened("group-" + who, o.userId(), "hash", o.ts())));
      } else {
        project("single-" + who, seqNr, ts, event);
        group.add(envelope("group-" + who, seqNr, ts, event));
      }
    }
    projectGroup(group);

    for (String who : List.of("a", "b")) {
      Map<String, Object> single = row("single-" + who);
      Map<String, Object> grouped = row("group-" + who);
      single.remove("session_id");
      grouped.remove("session_id");
      assertEquals(single, grouped, "session " + who);
      assertEquals(history("single-" + who), history("group-" + who), "history of " + who);
    }
    assertEquals(List.of("1:acked", "2:acked", "3:acked", "4:acked", "5:acked", "6:acked", "7:acked"), history("group-a"));
    assertEquals(List.of("1:lost", "2:lost", "3:acked", "4:acked", "5:acked", "6:open", "7:open", "8:open"), history("group-b"));
    Map<String, Object> a = row("group-a"), b = row("group-b");
    assertEquals(3, b.get("outbox_size"));
    assertEquals(0, a.get("outbox_size"));
    // The last attach or detach of each decides its state.
    assertEquals("attached", a.get("state"));
    assertNull(a.get("grace_deadline"));
    assertEquals(List.of(1L, 1L), List.of(a.get("resumes"), a.get("takeovers")));
    assertEquals(T0 + 41, a.get("updated_at"));
    assertEquals("detached", b.get("state"));
    assertEquals(T0 + 160_000, b.get("grace_deadline"));
    assertEquals(List.of(2L, 1L), List.of(b.get("resumes"), b.get("takeovers")));
    assertEquals(T0 + 43, b.get("updated_at"));
  }

  @Test
  void eraseBeforeTheProjectionMarksTheSessionEndedForGood() throws Exception {
    String id = "s_erased_first";
    sessionStore.erase(id, "bea", "expired", false).toCompletableFuture().get();
    Map<String, Object> erased = row(id);
    assertEquals("ended", erased.get("state"));
    assertEquals("expired", erased.get("ended_reason"));
    assertEquals("bea", erased.get("user_id"));

    // The projection had fetched the session's events before they were erased: none revives it.
    project(id, 1, T0, new ClientProxy.Opened(id, "bea", "hash", T0));
    project(id, 2, T0, new ClientProxy.Attached(1, false, false, T0));
    assertEquals("ended", row(id).get("state"), "a late Opened and Attached");
    project(id, 3, T0 + 1, new ClientProxy.MessageQueued(message(1, T0 + 1), null, 0, 0));
    assertEquals(0, row(id).get("outbox_size"));
    project(id, 4, T0 + 2, new ClientProxy.Detached(T0 + 120_000));
    assertEquals("ended", row(id).get("state"), "a late Detached");
    project(id, 5, T0 + 3, new ClientProxy.Attached(2, true, false, T0 + 3));
    assertEquals("ended", row(id).get("state"), "a late Attached");
    assertNull(row(id).get("grace_deadline"));
    // Nor does a group where they run in bulk.
    projectGroup(
        List.of(
            envelope(id, 6, T0 + 4, new ClientProxy.Detached(T0 + 130_000)),
            envelope(id, 7, T0 + 5, new ClientProxy.Attached(3, true, false, T0 + 5)),
            envelope(id, 8, T0 + 6, new ClientProxy.Detached(T0 + 140_000))));
    assertEquals("ended", row(id).get("state"), "a late group of attaches and detaches");
    assertNull(row(id).get("grace_deadline"));
    project(id, 9, T0 + 7, new ClientProxy.Ended("expired", T0 + 7));

    Map<String, Object> late = row(id);
    assertEquals("ended", late.get("state"));
    assertEquals("expired", late.get("ended_reason"));
    assertNull(late.get("grace_deadline"));
    assertEquals(0, late.get("outbox_size"));
    assertEquals(T0, late.get("created_at"), "Opened still fills in when the session began");
    assertEquals(erased.get("updated_at"), late.get("updated_at"), "late events do not move updated_at");
    assertEquals(1L, late.get("last_seq"));
    assertEquals(2L, late.get("resumes"));
    assertEquals(List.of("1:open"), history(id));
  }

  @Test
  void theGraceSweepersQueryPagesThroughOverdueSessionsInDeadlineAndIdOrder() throws Exception {
    // Two sessions share a deadline (the id breaks the tie), one is not overdue yet, one is
    // attached again: the pages hold only the three overdue detached ones, in order.
    String[][] sessions = {{"sw_b", "1000"}, {"sw_a", "1000"}, {"sw_c", "2000"}, {"sw_later", "9000"}, {"sw_back", "500"}};
    long seqNr = 0;
    for (String[] s : sessions) {
      project(s[0], ++seqNr, T0, new ClientProxy.Opened(s[0], "sweep", "hash", T0));
      project(s[0], ++seqNr, T0, new ClientProxy.Detached(T0 + Long.parseLong(s[1])));
    }
    project("sw_back", ++seqNr, T0 + 1, new ClientProxy.Attached(2, true, false, T0 + 1));
    InspectionStore store = new InspectionStore(database.dataSource(), ForkJoinPool.commonPool());
    java.time.Instant now = java.time.Instant.ofEpochMilli(T0 + 5000);

    List<dev.tether.session.GraceSweeper.Overdue> first =
        store.detachedPastDeadline(now, null, 2).toCompletableFuture().get();
    assertEquals(List.of("sw_a", "sw_b"), first.stream().map(o -> o.sessionId()).toList());
    assertEquals(T0 + 1000, first.get(0).graceDeadline().toEpochMilli());
    List<dev.tether.session.GraceSweeper.Overdue> second =
        store.detachedPastDeadline(now, first.get(1), 2).toCompletableFuture().get();
    assertEquals(List.of("sw_c"), second.stream().map(o -> o.sessionId()).toList(), "after the cursor, ties included");
    assertEquals(
        List.of(), store.detachedPastDeadline(now, second.get(0), 2).toCompletableFuture().get(), "past the last page");
  }

  @Test
  void settingsComeFromTetherInspection() {
    InspectionSettings settings =
        InspectionSettings.from(
            com.typesafe.config.ConfigFactory.parseString(
                    "tether.session.tombstone-retention = 3d\n"
                        + "tether.inspection { history-retention = 2h, purge-interval = 1m }")
                .withFallback(com.typesafe.config.ConfigFactory.parseResources("tether.conf"))
                .resolve());
    assertEquals(java.time.Duration.ofHours(2), settings.historyRetention());
    assertEquals(java.time.Duration.ofDays(3), settings.endedRetention(), "defaults to the tombstone retention");
    assertEquals(java.time.Duration.ofMinutes(1), settings.purgeInterval());
  }
}
