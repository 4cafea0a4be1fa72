package dev.tether.inspection;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.WsClient;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ForkJoinPool;
import java.util.stream.Collectors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Session inspection from the read model, scenario by scenario: a real node, real WebSocket
 * clients, real PostgreSQL, and the projection catching up in the background (every assertion
 * on the read model polls until a deadline).
 */
class InspectionScenarioTest {
  private static final int OUTBOX_MAX = 3;
  private static final Duration GRACE = Duration.ofSeconds(4);
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.session.grace", GRACE.toMillis() + "ms",
              "tether.session.outbox.max-messages", OUTBOX_MAX));
  private static ReadModel model;

  @BeforeAll
  static void startHelpers() {
    model = new ReadModel(node.api());
  }

  /** A user name no other test uses, so each test sees only its own sessions. */
  private static String user(String name) {
    return name + "-" + UUID.randomUUID().toString().substring(0, 8);
  }

  private static String id(JsonNode welcome) {
    return welcome.get("sessionId").asText();
  }

  /** Opens a session as {@code user} and publishes {@code count} messages that it receives (seq 1..count). */
  private static String helloAndReceive(WsClient ws, String user, int count) {
    String id = id(ws.hello(user));
    for (int n = 1; n <= count; n++) {
      assertEquals(n, node.api().publishToSession(id, "{\"n\":" + n + "}"));
      ws.expect("msg");
    }
    return id;
  }

  private static Set<String> ids(List<JsonNode> rows) {
    return rows.stream().map(r -> r.get("sessionId").asText()).collect(Collectors.toSet());
  }

  @Test
  void sessionsAppearWithTheirStatesAndFilterByStateAndUser() throws InterruptedException {
    String user = user("lister");
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port());
        WsClient c = WsClient.connect(node.port());
        WsClient e = WsClient.connect(node.port());
        WsClient stranger = WsClient.connect(node.port())) {
      JsonNode wa = a.hello(user);
      JsonNode wb = b.hello(user);
      JsonNode wc = c.hello(user);
      JsonNode we = e.hello(user);
      JsonNode ws = stranger.hello(user("stranger"));

      b.drop();
      e.drop();
      c.drop();
      model.awaitLiveState(id(wc), "detached");
      try (WsClient c2 = WsClient.connect(node.port())) {
        assertTrue(c2.resume(wc, 0).get("resumed").asBoolean());

        // attached, detached (with its deadline), resumed (attached again, counted).
        JsonNode rowA = model.awaitRow(user, id(wa), "attached");
        assertEquals(user, rowA.get("userId").asText());
        assertTrue(rowA.get("graceDeadline").isNull());
        assertTrue(rowA.get("createdAt").asLong() > 0);
        JsonNode rowB = model.awaitRow(user, id(wb), "detached");
        long deadline = rowB.get("graceDeadline").asLong();
        assertTrue(deadline > rowB.get("createdAt").asLong(), rowB::toString);
        assertTrue(deadline <= System.currentTimeMillis() + GRACE.toMillis(), rowB::toString);
        model.awaitRow(user, id(we), "detached");
        JsonNode rowC =
            model.awaitRow(user, id(wc), "attached", row -> assertEquals(1, row.get("resumes").asLong()));
        assertEquals(0, rowC.get("takeovers").asLong());
        assertTrue(rowC.get("updatedAt").asLong() >= rowC.get("createdAt").asLong());

        // Filters: by user and state together, and a user filter that leaves others out.
        assertEquals(
            Set.of(id(wb), id(we)),
            ids(ReadModel.items(model.list("user=" + ReadModel.encode(user) + "&state=detached").get("sessions"))));
        assertEquals(
            Set.of(id(wa), id(wc)),
            ids(ReadModel.items(model.list("user=" + ReadModel.encode(user) + "&state=attached").get("sessions"))));
        assertFalse(ids(model.sessionsOf(user)).contains(id(ws)));
        // The other user's session may reach the read model a moment later: poll for it.
        Set<String> attachedAnyUser = Set.of();
        long listDeadline = System.nanoTime() + java.time.Duration.ofSeconds(15).toNanos();
        while (System.nanoTime() < listDeadline) {
          attachedAnyUser = ids(ReadModel.items(model.list("state=attached&limit=1000").get("sessions")));
          if (attachedAnyUser.containsAll(Set.of(id(wa), id(wc), id(ws)))) break;
          Thread.sleep(100);
        }
        Set<String> seen = attachedAnyUser;
        assertTrue(attachedAnyUser.containsAll(Set.of(id(wa), id(wc), id(ws))), seen::toString);
        assertFalse(attachedAnyUser.contains(id(wb)));

        // Logout ends a session; grace expiry ends the dropped ones.
        a.send("{\"type\":\"bye\"}");
        a.expect("bye");
        JsonNode loggedOut = model.awaitRow(user, id(wa), "ended");
        assertEquals("ended", loggedOut.get("endedReason").asText());
        assertTrue(loggedOut.get("graceDeadline").isNull());
        JsonNode expired = model.awaitRow(user, id(we), "ended");
        assertEquals("expired", expired.get("endedReason").asText());
        assertEquals("expired", model.awaitRow(user, id(wb), "ended").get("endedReason").asText());
        assertEquals(
            Set.of(id(wa), id(wb), id(we)),
            ids(ReadModel.items(model.list("user=" + ReadModel.encode(user) + "&state=ended").get("sessions"))));
        assertEquals("attached", model.row(user, id(wc)).orElseThrow().get("state").asText());
      }
    }
  }

  @Test
  void listingPagesWithAnOpaqueCursor() {
    String user = user("pager");
    List<WsClient> clients = new ArrayList<>();
    try {
      Set<String> opened = new HashSet<>();
      for (int i = 0; i < 5; i++) {
        WsClient ws = WsClient.connect(node.port());
        clients.add(ws);
        opened.add(id(ws.hello(user)));
      }
      Eventually.awaitAssert(ReadModel.DEADLINE, () -> assertEquals(opened, ids(model.sessionsOf(user))));

      List<JsonNode> seen = new ArrayList<>();
      String query = "user=" + ReadModel.encode(user) + "&limit=2";
      JsonNode page = model.list(query);
      int pages = 1;
      seen.addAll(ReadModel.items(page.get("sessions")));
      while (!page.get("nextCursor").isNull()) {
        assertEquals(2, page.get("sessions").size(), "a page with a next cursor is full");
        page = model.list(query + "&cursor=" + ReadModel.encode(page.get("nextCursor").asText()));
        seen.addAll(ReadModel.items(page.get("sessions")));
        pages++;
      }
      assertEquals(3, pages);
      assertEquals(1, page.get("sessions").size());
      assertEquals(5, seen.size(), "no session twice");
      assertEquals(opened, ids(seen));
      for (int i = 1; i < seen.size(); i++) {
        assertTrue(
            seen.get(i - 1).get("createdAt").asLong() >= seen.get(i).get("createdAt").asLong(), "newest first");
      }
      // Exactly one page's worth: no next cursor.
      assertTrue(model.list("user=" + ReadModel.encode(user) + "&limit=5").get("nextCursor").isNull());
    } finally {
      clients.forEach(WsClient::close);
    }
  }

  @Test
  void receiptMovesFromQueuedToWrittenToAcked() {
    String user = user("receipts");
    JsonNode welcome;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello(user);
      ws.drop();
    }
    String id = id(welcome);
    model.awaitLiveState(id, "detached");
    long seq = node.api().publishToSession(id, "{\"n\":1}");
    JsonNode queued = model.receipt(id, seq);
    assertEquals("queued", queued.get("status").asText(), queued::toString);
    assertEquals(id, queued.get("sessionId").asText());
    assertEquals(seq, queued.get("seq").asLong());
    assertEquals("unknown", model.receipt(id, seq + 1).get("status").asText(), "not yet assigned");
    // queuedAt comes from the read model once the projection has the message.
    Eventually.awaitAssert(ReadModel.DEADLINE, () -> assertTrue(model.receipt(id, seq).get("queuedAt").asLong() > 0));

    try (WsClient ws = WsClient.connect(node.port())) {
      ws.resume(welcome, 0);
      assertEquals(seq, ws.expect("msg").get("seq").asLong());
      JsonNode written = model.receipt(id, seq);
      assertEquals("written", written.get("status").asText());
      assertTrue(written.get("ackedAt").isNull());

      ws.send("{\"type\":\"ack\",\"seq\":" + seq + "}");
      JsonNode acked =
          Eventually.awaitAssert(
              ReadModel.DEADLINE,
              () -> {
                JsonNode r = model.receipt(id, seq);
                assertEquals("acked", r.get("status").asText());
                assertFalse(r.get("ackedAt").isNull(), "ackedAt from the read model");
                return r;
              });
      assertTrue(acked.get("ackedAt").asLong() >= acked.get("queuedAt").asLong());
    }
  }

  @Test
  void overflowShowsLostInReceiptsHistoryAndListing_andEndedSessionsAnswerFromHistory() {
    String user = user("overflow");
    String id;
    try (WsClient ws = WsClient.connect(node.port())) {
      // The client reads but never acks: the outbox keeps the last OUTBOX_MAX, drops the oldest.
      id = helloAndReceive(ws, user, 5);
      assertEquals("lost", model.receipt(id, 1).get("status").asText());
      assertEquals("lost", model.receipt(id, 2).get("status").asText());
      assertEquals("written", model.receipt(id, 3).get("status").asText());
      assertEquals("written", model.receipt(id, 5).get("status").asText());

      List<JsonNode> history = model.awaitHistory(id, 5);
      Eventually.awaitAssert(ReadModel.DEADLINE, () -> {
        List<JsonNode> h = ReadModel.items(model.history(id, "").get("messages"));
        assertEquals(List.of(true, true, false, false, false), h.stream().map(m -> m.get("lost").asBoolean()).toList());
      });
      assertEquals("backend", history.get(0).get("from").asText());
      JsonNode row =
          model.awaitRow(
              user,
              id,
              "attached",
              r -> {
                assertEquals(5, r.get("lastSeq").asLong());
                assertEquals(2, r.get("lost").asLong());
              });
      assertEquals(OUTBOX_MAX, row.get("outboxSize").asInt());

      ws.send("{\"type\":\"ack\",\"seq\":3}");
      Eventually.awaitAssert(
          ReadModel.DEADLINE,
          () -> assertFalse(ReadModel.items(model.history(id, "from=3&limit=1").get("messages")).get(0).get("ackedAt").isNull()));
      // Seq 1 is below the cumulative ack now, but it was dropped by the overflow before it was
      // acknowledged (written to the socket or not): it stays lost.
      assertEquals("lost", model.receipt(id, 1).get("status").asText());
      assertEquals("acked", model.receipt(id, 3).get("status").asText());
      ws.send("{\"type\":\"bye\"}");
      ws.expect("bye");
    }
    model.awaitRow(user, id, "ended");
    Eventually.awaitAssert(ReadModel.DEADLINE, () -> assertEquals(404, node.api().get("/api/sessions/" + id).status()));

    // The session is gone: receipts come from the history alone.
    assertEquals("lost", model.receipt(id, 1).get("status").asText());
    JsonNode acked = model.receipt(id, 3);
    assertEquals("acked", acked.get("status").asText());
    assertNotNull(acked.get("ackedAt"));
    assertFalse(acked.get("ackedAt").isNull());
    JsonNode neverAcked = model.receipt(id, 4);
    assertEquals("unknown", neverAcked.get("status").asText());
    assertTrue(neverAcked.get("queuedAt").asLong() > 0);
    assertEquals("unknown", model.receipt(id, 99).get("status").asText());
    assertTrue(model.receipt(id, 99).get("queuedAt").isNull());
  }

  /**
   * A client acks and logs out at once: the session ends and is erased, but only after the read
   * model has projected its last events, so the receipts and the history still tell the acks.
   */
  @Test
  void anAckRightBeforeLogoutIsStillInTheHistory() {
    String user = user("ack-then-bye");
    String id;
    try (WsClient ws = WsClient.connect(node.port())) {
      id = helloAndReceive(ws, user, 3);
      ws.send("{\"type\":\"ack\",\"seq\":3}");
      ws.send("{\"type\":\"bye\"}");
      ws.expect("bye");
    }
    model.awaitRow(user, id, "ended", row -> assertEquals(3, row.get("ackedSeq").asLong(), row.toString()));
    List<JsonNode> history = model.awaitHistory(id, 3);
    for (JsonNode message : history) assertFalse(message.get("ackedAt").isNull(), history.toString());
    assertEquals("acked", model.receipt(id, 3).get("status").asText());
  }

  @Test
  void historyListsMessagesWithAckTimesInPages() {
    String user = user("history");
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello(user);
      String id = id(welcome);
      ws.send("{\"type\":\"join\",\"room\":\"hist-room\"}");
      ws.expect("joined");
      node.api().publishToSession(id, "{\"n\":1}");
      node.api().publishToSession(id, "{\"n\":2}");
      assertEquals(202, node.api().post("/api/rooms/hist-room/messages", "{\"data\":{\"n\":3}}").status());
      for (int i = 0; i < 3; i++) ws.expect("msg");
      ws.send("{\"type\":\"ack\",\"seq\":2}");

      List<JsonNode> messages =
          Eventually.awaitAssert(
              ReadModel.DEADLINE,
              () -> {
                List<JsonNode> m = ReadModel.items(model.history(id, "").get("messages"));
                assertEquals(3, m.size(), m::toString);
                assertFalse(m.get(1).get("ackedAt").isNull(), "seq 2 acked");
                return m;
              });
      assertEquals(List.of(1L, 2L, 3L), messages.stream().map(m -> m.get("seq").asLong()).toList());
      assertFalse(messages.get(0).get("ackedAt").isNull(), "a cumulative ack covers seq 1");
      assertTrue(messages.get(2).get("ackedAt").isNull());
      assertEquals("hist-room", messages.get(2).get("room").asText());
      assertTrue(messages.get(0).get("room").isNull());
      assertEquals("backend", messages.get(0).get("from").asText());
      assertTrue(messages.get(0).get("bytes").asInt() > 0);
      assertFalse(messages.get(0).get("lost").asBoolean());
      assertTrue(messages.get(0).get("queuedAt").asLong() <= messages.get(0).get("ackedAt").asLong());

      JsonNode first = model.history(id, "limit=2");
      assertEquals(2, first.get("messages").size());
      assertEquals(3, first.get("next").asLong());
      JsonNode second = model.history(id, "from=3&limit=2");
      assertEquals(1, second.get("messages").size());
      assertEquals(3, second.get("messages").get(0).get("seq").asLong());
      assertTrue(second.get("next").isNull());
      assertEquals(0, model.history("s_nobody", "").get("messages").size());

      // The live view is still the actor's own.
      Api.Response live = node.api().get("/api/sessions/" + id);
      assertEquals(200, live.status());
      assertEquals("hist-room", live.json().get("rooms").get(0).asText());
    }
  }

  @Test
  void clusterShowsThisNodeWithItsShards() {
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.hello(user("cluster"));
      JsonNode cluster = node.api().get("/api/cluster").json();
      assertEquals(1, cluster.get("nodes").size(), cluster::toString);
      JsonNode self = cluster.get("nodes").get(0);
      assertEquals(cluster.get("self").asText(), self.get("address").asText());
      assertTrue(self.get("address").asText().startsWith("pekko://tether@127.0.0.1:"));
      assertEquals("up", self.get("status").asText());
      assertTrue(self.get("reachable").asBoolean());
      assertTrue(self.get("roles").isArray());
      JsonNode sessions = self.get("sharding").get("ClientProxy");
      assertTrue(sessions.get("shards").asInt() >= 1, cluster::toString);
      assertTrue(sessions.get("entities").asInt() >= 1, cluster::toString);
      JsonNode memberships = self.get("sharding").get("Membership");
      assertTrue(memberships.get("entities").asInt() >= 1, "the user index of the open session");
      assertEquals(0, sessions.get("failedShards").asInt());
    }
  }

  @Test
  void badParametersAreJson400s() {
    for (String path :
        List.of(
            "/api/sessions?state=sleeping",
            "/api/sessions?limit=0",
            "/api/sessions?limit=1001",
            "/api/sessions?limit=ten",
            "/api/sessions?user=",
            "/api/sessions?cursor=not-a-cursor",
            "/api/sessions/s_x/messages/abc",
            "/api/sessions/s_x/messages/0",
            "/api/sessions/s_x/history?from=-1",
            "/api/sessions/s_x/history?limit=5000")) {
      Api.Response r = node.api().get(path);
      assertEquals(400, r.status(), () -> path + " answered " + r.status() + " " + r.body());
      assertEquals("bad-request", r.json().get("error").asText(), path);
    }
    assertEquals(200, node.api().get("/api/sessions?limit=1000").status());
    assertEquals(405, node.api().delete("/api/sessions").status());
  }

  @Test
  void purgeDropsOldHistoryAndLongEndedSessionsOnly() throws Exception {
    String prefix = "s_purge_" + UUID.randomUUID().toString().substring(0, 8);
    try (Connection c = node.database().dataSource().getConnection();
        Statement s = c.createStatement()) {
      s.executeUpdate(
          "INSERT INTO message_history(session_id, seq, queued_at, bytes, sender) VALUES "
              + "('" + prefix + "', 1, now() - interval '25 hours', 10, 'backend'), "
              + "('" + prefix + "', 2, now() - interval '1 hour', 10, 'backend')");
      s.executeUpdate(
          "INSERT INTO session_index(session_id, user_id, state, created_at, updated_at, ended_at) VALUES "
              + "('" + prefix + "_old_ended', 'u', 'ended', now() - interval '9 days', now() - interval '8 days', now() - interval '8 days'), "
              + "('" + prefix + "_new_ended', 'u', 'ended', now() - interval '9 days', now() - interval '1 day', now() - interval '1 day'), "
              + "('" + prefix + "_old_live', 'u', 'detached', now() - interval '9 days', now() - interval '8 days', NULL), "
              // ended before migration V6 (no ended_at): purged by its updated_at
              + "('" + prefix + "_old_legacy', 'u', 'ended', now() - interval '9 days', now() - interval '8 days', NULL), "
              + "('" + prefix + "_new_legacy', 'u', 'ended', now() - interval '9 days', now() - interval '1 day', NULL)");
    }
    InspectionStore store = new InspectionStore(node.database().dataSource(), ForkJoinPool.commonPool());
    InspectionStore.Purged purged =
        store.purge(Duration.ofHours(24), Duration.ofDays(7)).toCompletableFuture().get();
    assertTrue(purged.messages() >= 1);
    assertTrue(purged.sessions() >= 2);
    String url = node.database().url();
    assertEquals(1, TestDatabase.count(url, "SELECT count(*) FROM message_history WHERE session_id = ?", prefix));
    assertEquals(
        3,
        TestDatabase.count(url, "SELECT count(*) FROM session_index WHERE session_id LIKE ?", prefix + "%"));
    assertEquals(
        0, TestDatabase.count(url, "SELECT count(*) FROM session_index WHERE session_id = ?", prefix + "_old_ended"));
    assertEquals(
        0, TestDatabase.count(url, "SELECT count(*) FROM session_index WHERE session_id = ?", prefix + "_old_legacy"));
  }
}
