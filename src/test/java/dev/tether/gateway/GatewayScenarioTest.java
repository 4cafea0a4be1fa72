package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * The contract, scenario by scenario: a real gateway on a random port, real WebSocket clients,
 * real PostgreSQL. Each test names what it proves.
 */
class GatewayScenarioTest {
  private static final int OUTBOX_MAX = 20;
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.session.outbox.max-messages", OUTBOX_MAX,
              "tether.gateway.limits.max-frame-bytes", 4096,
              "tether.gateway.limits.outgoing-buffer", 64));

  @Test
  void newSessionGetsWelcome() {
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello("alice");
      assertTrue(welcome.get("sessionId").asText().startsWith("s_"));
      assertTrue(welcome.get("resumeToken").asText().length() >= 24, "token carries >= 128 random bits");
      assertFalse(welcome.get("resumed").asBoolean());
      assertEquals("new", welcome.get("reason").asText());
      assertEquals(0, welcome.get("replay").asInt());
      assertEquals(0, welcome.get("lastSeq").asLong());
      assertEquals(0, welcome.get("clientSeq").asLong());
      assertEquals(0, welcome.get("lost").asLong());
      assertEquals(15000, welcome.get("heartbeat").get("interval").asLong());
      assertEquals(45000, welcome.get("heartbeat").get("timeout").asLong());
      assertEquals(120000, welcome.get("grace").asLong());
      assertTrue(welcome.get("rooms").isArray());

      ws.send("{\"type\":\"ping\"}");
      ws.expect("pong");
      assertTrue(ws.protocolPing(new byte[] {7, 7, 7}), "WebSocket-level ping answered with its payload");

      Api.Response state = node.api().get("/api/sessions/" + welcome.get("sessionId").asText());
      assertEquals(200, state.status());
      assertEquals("attached", state.json().get("state").asText());
      assertEquals("alice", state.json().get("userId").asText());
    }
  }

  @Test
  void dropsAndResumesWithinGrace() {
    JsonNode welcome;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello("bob");
      String id = welcome.get("sessionId").asText();
      node.api().publishToSession(id, "{\"n\":1}");
      node.api().publishToSession(id, "{\"n\":2}");
      assertEquals(1, ws.expect("msg").get("seq").asLong());
      assertEquals(2, ws.expect("msg").get("seq").asLong());
      ws.drop();
    }
    String id = welcome.get("sessionId").asText();
    awaitState(id, "detached");
    // Published while nobody is connected: queued for the session.
    assertEquals(3, node.api().publishToSession(id, "{\"n\":3}"));
    assertEquals(4, node.api().publishToSession(id, "{\"n\":4}"));

    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode resumed = ws.resume(welcome, 1); // the client processed seq 1 only
      assertTrue(resumed.get("resumed").asBoolean());
      assertEquals("resumed", resumed.get("reason").asText());
      assertEquals(id, resumed.get("sessionId").asText());
      assertEquals(3, resumed.get("replay").asInt());
      assertEquals(4, resumed.get("lastSeq").asLong());
      assertEquals(0, resumed.get("lost").asLong());
      for (int seq = 2; seq <= 4; seq++) {
        JsonNode msg = ws.expect("msg");
        assertEquals(seq, msg.get("seq").asLong());
        assertEquals(seq, msg.get("data").get("n").asInt());
        assertEquals("backend", msg.get("from").asText());
      }
      node.api().publishToSession(id, "{\"n\":5}");
      assertEquals(5, ws.expect("msg").get("seq").asLong());
      ws.expectNoFrame(Duration.ofMillis(200));
      JsonNode state = node.api().get("/api/sessions/" + id).json();
      assertEquals(1, state.get("resumes").asLong());
      assertEquals(1, state.get("ackedSeq").asLong(), "lastSeq of a resume is an implicit ack");
    }
  }

  @Test
  void wrongTokenCreatesNewSessionAndLeavesTheRealOneUntouched() {
    try (WsClient owner = WsClient.connect(node.port())) {
      JsonNode welcome = owner.hello("carol");
      String id = welcome.get("sessionId").asText();
      node.api().publishToSession(id, "{\"secret\":true}");
      owner.expect("msg");
      JsonNode before = node.api().get("/api/sessions/" + id).json();

      try (WsClient intruder = WsClient.connect(node.port())) {
        JsonNode other = intruder.resume(id, "r_not-the-token", 0);
        assertFalse(other.get("resumed").asBoolean());
        assertEquals("invalid-token", other.get("reason").asText());
        assertNotEquals(id, other.get("sessionId").asText());
        intruder.expectNoFrame(Duration.ofMillis(200));
      }
      // The owner keeps its connection and its session, unchanged.
      owner.send("{\"type\":\"ping\"}");
      owner.expect("pong");
      assertFalse(owner.isClosed());
      JsonNode after = node.api().get("/api/sessions/" + id).json();
      assertEquals(before.get("generation"), after.get("generation"));
      assertEquals(before.get("takeovers"), after.get("takeovers"));
      assertEquals("attached", after.get("state").asText());
    }
  }

  @Test
  void resumeOfUnknownSessionCreatesNewOne() {
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode w = ws.resume("s_doesnotexist00000000", "r_whatever", 5);
      assertFalse(w.get("resumed").asBoolean());
      assertEquals("unknown", w.get("reason").asText());
    }
  }

  @Test
  void framesPipelinedBehindAResumeThatStartsANewSessionGoToTheNewSession() {
    try (WsClient receiver = WsClient.connect(node.port())) {
      String target = "session:" + receiver.hello("pipeline-receiver").get("sessionId").asText();
      try (WsClient ws = WsClient.connect(node.port())) {
        // Meant for an old session the server no longer has: an ack and two sends right behind it.
        ws.send("{\"type\":\"resume\",\"sessionId\":\"s_gone000000000000000\",\"resumeToken\":\"r_x\",\"lastSeq\":40}");
        ws.send("{\"type\":\"ack\",\"seq\":40}");
        ws.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"" + target + "\",\"data\":{\"m\":1}}");
        ws.send("{\"type\":\"send\",\"cseq\":7,\"to\":\"" + target + "\",\"data\":{\"m\":7}}");
        JsonNode welcome = ws.expect("welcome");
        assertFalse(welcome.get("resumed").asBoolean());
        assertEquals("unknown", welcome.get("reason").asText());
        String id = welcome.get("sessionId").asText();

        // The new session takes cseq 1 as its first send, and refuses the gap.
        assertEquals(1, ws.expect("sent").get("cseq").asLong());
        assertEquals(7, ws.expectError("out-of-order").get("cseq").asLong());
        JsonNode delivered = receiver.expect("msg");
        assertEquals(1, delivered.get("data").get("m").asInt());
        assertEquals("user:anonymous", delivered.get("from").asText());
        receiver.expectNoFrame(Duration.ofMillis(200));

        // The ack of seq 40 acknowledged nothing of the new session.
        assertEquals(1, node.api().publishToSession(id, "{\"n\":1}"));
        assertEquals(1, ws.expect("msg").get("seq").asLong());
        JsonNode state = node.api().get("/api/sessions/" + id).json();
        assertEquals(0, state.get("ackedSeq").asLong());
        assertEquals(1, state.get("clientSeq").asLong());
      }
    }
  }

  @Test
  void takeoverKicksOldSocket() {
    try (WsClient first = WsClient.connect(node.port());
        WsClient second = WsClient.connect(node.port())) {
      JsonNode welcome = first.hello("dave");
      JsonNode resumed = second.resume(welcome, 0);
      assertTrue(resumed.get("resumed").asBoolean());
      JsonNode kicked = first.expect("kicked");
      assertEquals("taken-over", kicked.get("reason").asText());
      assertEquals(4002, first.awaitClose());

      // Only the new connection receives messages now.
      String id = welcome.get("sessionId").asText();
      node.api().publishToSession(id, "{\"to\":\"second\"}");
      assertEquals(1, second.expect("msg").get("seq").asLong());
      JsonNode state = node.api().get("/api/sessions/" + id).json();
      assertEquals(1, state.get("takeovers").asLong());
      assertEquals("attached", state.get("state").asText());
    }
  }

  @Test
  void logoutEndsSession() {
    JsonNode welcome;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello("erin");
      ws.send("{\"type\":\"bye\"}");
      ws.expect("bye");
      assertEquals(1000, ws.awaitClose());
    }
    String id = welcome.get("sessionId").asText();
    awaitStatus("/api/sessions/" + id, 404);
    assertEquals(404, node.api().post("/api/sessions/" + id + "/messages", "{\"data\":1}").status());
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode again = ws.resume(welcome, 0);
      assertFalse(again.get("resumed").asBoolean());
      assertEquals("ended", again.get("reason").asText());
    }
  }

  @Test
  void kickClosesWith4004AndEndsSession() {
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello("frank");
      String id = welcome.get("sessionId").asText();
      assertEquals(204, node.api().delete("/api/sessions/" + id).status());
      assertEquals("kicked", ws.expect("kicked").get("reason").asText());
      assertEquals(4004, ws.awaitClose());
      awaitStatus("/api/sessions/" + id, 404);
      assertEquals(404, node.api().delete("/api/sessions/" + id).status());
    }
  }

  @Test
  void upstreamExactlyOnceAcrossDrop() {
    try (WsClient receiver = WsClient.connect(node.port())) {
      JsonNode rw = receiver.hello("grace-receiver");
      String target = "session:" + rw.get("sessionId").asText();
      JsonNode sw;
      try (WsClient sender = WsClient.connect(node.port())) {
        sw = sender.hello("grace-sender");
        sender.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"" + target + "\",\"data\":{\"m\":1}}");
        assertEquals(1, sender.expect("sent").get("cseq").asLong());
        sender.send("{\"type\":\"send\",\"cseq\":2,\"to\":\"" + target + "\",\"data\":{\"m\":2}}");
        sender.expect("sent");
        // A gap is refused and not delivered.
        sender.send("{\"type\":\"send\",\"cseq\":9,\"to\":\"" + target + "\",\"data\":{\"m\":9}}");
        JsonNode err = sender.expectError("out-of-order");
        assertEquals(9, err.get("cseq").asLong());
        sender.drop();
      }
      try (WsClient sender = WsClient.connect(node.port())) {
        JsonNode resumed = sender.resume(sw, 0);
        assertEquals(2, resumed.get("clientSeq").asLong());
        // The client did not see "sent" for 2 (say) and sends it again: confirmed, not redelivered.
        sender.send("{\"type\":\"send\",\"cseq\":2,\"to\":\"" + target + "\",\"data\":{\"m\":2}}");
        assertEquals(2, sender.expect("sent").get("cseq").asLong());
        sender.send("{\"type\":\"send\",\"cseq\":3,\"to\":\"" + target + "\",\"data\":{\"m\":3}}");
        sender.expect("sent");
      }
      List<Integer> received = new ArrayList<>();
      for (int i = 0; i < 3; i++) {
        JsonNode msg = receiver.expect("msg");
        assertEquals("user:grace-sender", msg.get("from").asText());
        received.add(msg.get("data").get("m").asInt());
      }
      assertEquals(List.of(1, 2, 3), received);
      receiver.expectNoFrame(Duration.ofMillis(300));
    }
  }

  @Test
  void roomsRestoredOnResumeAndRoomMessagesReachMembers() {
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port())) {
      JsonNode wa = a.hello("henry");
      b.hello("iris");
      a.send("{\"type\":\"join\",\"room\":\"lobby-1\"}");
      assertEquals("lobby-1", a.expect("joined").get("room").asText());
      b.send("{\"type\":\"join\",\"room\":\"lobby-1\"}");
      b.expect("joined");

      b.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"room:lobby-1\",\"data\":{\"text\":\"hi\"}}");
      b.expect("sent");
      JsonNode atA = a.expect("msg");
      assertEquals("lobby-1", atA.get("room").asText());
      assertEquals("user:iris", atA.get("from").asText());
      assertEquals("msg", b.expect("msg").get("type").asText(), "the sender is a member too (echo)");

      b.send("{\"type\":\"send\",\"cseq\":2,\"to\":\"room:lobby-1\",\"echo\":false,\"data\":{\"text\":\"quiet\"}}");
      b.expect("sent");
      a.expect("msg");
      b.expectNoFrame(Duration.ofMillis(200));

      a.drop();
      try (WsClient again = WsClient.connect(node.port())) {
        JsonNode resumed = again.resume(wa, 2);
        assertEquals(List.of("lobby-1"), List.of(resumed.get("rooms").get(0).asText()));
        Api.Response published = node.api().post("/api/rooms/lobby-1/messages", "{\"data\":{\"text\":\"from backend\"}}");
        assertEquals(202, published.status());
        assertEquals(2, published.json().get("members").asInt());
        assertEquals("from backend", again.expect("msg").get("data").get("text").asText());

        again.send("{\"type\":\"leave\",\"room\":\"lobby-1\"}");
        again.expect("left");
        again.send("{\"type\":\"leave\",\"room\":\"lobby-1\"}");
        again.expectError("not-in-room");
        again.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"room:lobby-1\",\"data\":1}");
        again.expectError("not-in-room");
      }
    }
  }

  @Test
  void publishWithIdempotencyKeyIsQueuedOnce() {
    try (WsClient ws = WsClient.connect(node.port())) {
      String id = ws.hello("pat").get("sessionId").asText();
      Map<String, String> key = Map.of("Idempotency-Key", "order-42");
      Api.Response first = node.api().post("/api/sessions/" + id + "/messages", "{\"data\":{\"order\":42}}", key);
      Api.Response retry = node.api().post("/api/sessions/" + id + "/messages", "{\"data\":{\"order\":42}}", key);
      assertEquals(202, first.status());
      assertEquals(202, retry.status());
      assertEquals(first.json().get("seq"), retry.json().get("seq"));
      assertEquals(42, ws.expect("msg").get("data").get("order").asInt());
      ws.expectNoFrame(Duration.ofMillis(300));
      assertEquals(1, node.api().get("/api/sessions/" + id).json().get("lastSeq").asLong());
    }
  }

  @Test
  void userTargetReachesEverySessionOfTheUser() {
    try (WsClient phone = WsClient.connect(node.port());
        WsClient laptop = WsClient.connect(node.port())) {
      phone.hello("jack");
      laptop.hello("jack");
      Api.Response r = node.api().post("/api/users/jack/messages", "{\"data\":{\"note\":\"both\"}}");
      assertEquals(202, r.status());
      assertEquals(2, r.json().get("sessions").asInt());
      assertEquals("both", phone.expect("msg").get("data").get("note").asText());
      assertEquals("both", laptop.expect("msg").get("data").get("note").asText());
    }
  }

  @Test
  void replayAndLiveRaceHasNoGapNorDuplicate() throws Exception {
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "kate");
    String id = welcome.get("sessionId").asText();
    awaitState(id, "detached");
    for (int i = 0; i < 10; i++) node.api().publishToSession(id, "{\"i\":" + i + "}");

    // Keep publishing while the client resumes, so messages are queued during the replay.
    AtomicBoolean publishing = new AtomicBoolean(true);
    AtomicLong lastPublished = new AtomicLong(10);
    Thread publisher =
        new Thread(
            () -> {
              Api own = new Api(node.port());
              while (publishing.get() && lastPublished.get() < OUTBOX_MAX - 2) {
                lastPublished.set(own.publishToSession(id, "{\"live\":true}"));
              }
            });
    publisher.start();
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode resumed = ws.resume(welcome, 0);
      assertEquals(0, resumed.get("lost").asLong());
      Thread.sleep(300);
      publishing.set(false);
      publisher.join();
      long expected = 1;
      while (expected <= lastPublished.get()) {
        assertEquals(expected, ws.expect("msg").get("seq").asLong(), "seqs arrive contiguous, once each");
        expected++;
      }
      ws.expectNoFrame(Duration.ofMillis(300));
    }
  }

  @Test
  void outboxOverflowIsReportedAsLost() {
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "liam");
    String id = welcome.get("sessionId").asText();
    awaitState(id, "detached");
    int published = OUTBOX_MAX + 5;
    for (int i = 1; i <= published; i++) node.api().publishToSession(id, "{\"i\":" + i + "}");
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode resumed = ws.resume(welcome, 0);
      assertEquals(5, resumed.get("lost").asLong());
      assertEquals(OUTBOX_MAX, resumed.get("replay").asInt());
      assertEquals(6, ws.expect("msg").get("seq").asLong(), "the oldest five were dropped");
    }
    assertEquals(5, node.api().get("/api/sessions/" + id).json().get("lost").asLong());
  }

  @Test
  void badFramesGetErrorsAndNeverCorruptTheSession() {
    try (WsClient early = WsClient.connect(node.port())) {
      // Before the handshake: a bad frame is answered, the socket stays open, and a malformed
      // resume touches no session; a correct handshake still works afterwards.
      early.send("not json");
      early.expectError("bad-frame");
      early.send("{\"type\":\"resume\",\"sessionId\":\"s_x\",\"resumeToken\":\"r_x\",\"lastSeq\":-1}");
      early.expectError("bad-frame");
      early.send("{\"type\":\"ack\",\"seq\":1}");
      early.expectError("bad-frame");
      assertEquals("new", early.hello("mia-early").get("reason").asText());
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello("mia");
      String id = welcome.get("sessionId").asText();
      node.api().publishToSession(id, "{\"n\":1}");
      ws.expect("msg");

      ws.send("[1,2,3]");
      ws.expectError("bad-frame");
      ws.send("{\"no\":\"type\"}");
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"teleport\"}");
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"send\",\"cseq\":\"one\",\"to\":\"room:x\",\"data\":1}");
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"mars:x\",\"data\":1}");
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"hello\",\"user\":\"mia\"}");
      ws.expectError("bad-frame");
      ws.sendBinary(new byte[] {1, 2, 3});
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"ack\",\"seq\":1}{\"type\":\"ack\"}");
      ws.expectError("bad-frame");
      ws.send("{\"type\":\"join\",\"room\":\"" + "x".repeat(200) + "\"}");
      ws.expectError("bad-frame");

      // Still alive, and the session is intact.
      ws.send("{\"type\":\"ping\"}");
      ws.expect("pong");
      JsonNode state = node.api().get("/api/sessions/" + id).json();
      assertEquals(1, state.get("lastSeq").asLong());
      assertEquals("attached", state.get("state").asText());

      // The eleventh bad frame (max-bad-frames = 10) closes the socket with 4003.
      ws.send("{}");
      ws.expectError("bad-frame");
      ws.send("{}");
      ws.expectError("bad-frame");
      assertEquals(4003, ws.awaitClose());
      awaitState(id, "detached");
    }
  }

  @Test
  void helloFloodOnOneSocketOpensOneSessionAndEndsWith4003() {
    double abandonedBefore = node.metrics().registry().get("tether_sessions_abandoned").counter().count();
    try (WsClient ws = WsClient.connect(node.port())) {
      // The server may close (4003 after the eleventh bad frame) before all twenty are sent.
      for (int i = 0; i < 20 && ws.trySend("{\"type\":\"hello\",\"user\":\"flood\"}"); i++) {}
      assertEquals(4003, ws.awaitClose());
      int welcomes = 0;
      int errors = 0;
      while (ws.pending() > 0) {
        String type = ws.next().path("type").asText();
        if (type.equals("welcome")) welcomes++;
        if (type.equals("error")) errors++;
      }
      assertEquals(11, errors, "the eleventh bad frame closes the socket");
      assertTrue(welcomes <= 1);
      // Only the first hello opens a session. Welcomed, it stays (detached) for its grace period;
      // closed before its welcome, nobody holds its token and it is abandoned. Never twenty.
      if (welcomes == 0) {
        Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(abandonedBefore + 1,
            node.metrics().registry().get("tether_sessions_abandoned").counter().count()));
      }
      int expectedSessions = welcomes;
      Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(expectedSessions,
          node.api().post("/api/users/flood/messages", "{\"data\":1}").json().get("sessions").asInt(),
          "one session at most, not twenty"));
    }
  }

  @Test
  void oversizedFrameIsRefusedWith4003() {
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello("noah");
      String big = "{\"type\":\"send\",\"cseq\":1,\"to\":\"room:x\",\"data\":\"" + "a".repeat(5000) + "\"}";
      ws.send(big);
      ws.expectError("frame-too-large");
      assertEquals(4003, ws.awaitClose());
      String id = welcome.get("sessionId").asText();
      awaitState(id, "detached");
      assertEquals(0, node.api().get("/api/sessions/" + id).json().get("clientSeq").asLong());
    }
  }

  @Test
  void apiAnswersErrorsAsJson() {
    Api.Response notJson = node.api().post("/api/sessions/s_x/messages", "{not json");
    assertEquals(400, notJson.status());
    assertEquals("bad-request", notJson.json().get("error").asText());

    Api.Response noData = node.api().post("/api/users/u/messages", "{\"payload\":1}");
    assertEquals(400, noData.status());

    Api.Response unknown = node.api().post("/api/sessions/s_nobody/messages", "{\"data\":1}");
    assertEquals(404, unknown.status());
    assertEquals("not-found", unknown.json().get("error").asText());

    assertEquals(404, node.api().get("/api/sessions/s_nobody").status());
    Api.Response noRoute = node.api().get("/no/such/path");
    assertEquals(404, noRoute.status());
    assertEquals("not-found", noRoute.json().get("error").asText());

    String huge = "{\"data\":\"" + "x".repeat(1_100_000) + "\"}";
    Api.Response tooLarge = node.api().post("/api/users/u/messages", huge);
    assertEquals(413, tooLarge.status());
    assertEquals("too-large", tooLarge.json().get("error").asText());

    assertEquals(200, node.api().get("/health/alive").status());
    assertEquals(200, node.api().get("/health/ready").status());
    Api.Response metrics = node.api().get("/metrics");
    assertEquals(200, metrics.status());
    assertTrue(metrics.body().contains("tether_frames_in_total"));
  }

  @Test
  void slowConsumerIsClosedWith4009AndResumesWithEverything() {
    JsonNode welcome;
    String id;
    try (WsClient reader = WsClient.connect(node.port())) {
      welcome = reader.hello("olga");
      id = welcome.get("sessionId").asText();
    }
    awaitState(id, "detached");
    try (WsClient slow = WsClient.connectWithoutReading(node.port())) {
      slow.read(1);
      slow.resume(welcome, 0);
      // The client reads nothing: kernel buffers fill, then the server's bounded queue overflows.
      String payload = "\"" + "p".repeat(200_000) + "\"";
      long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
      while (System.nanoTime() < deadline) {
        node.api().publishToSession(id, payload);
        if ("detached".equals(node.api().get("/api/sessions/" + id).json().path("state").asText())) break;
      }
      slow.read(Long.MAX_VALUE);
      assertEquals(4009, slow.awaitClose(Duration.ofSeconds(30)));
    }
    awaitState(id, "detached");
    try (WsClient again = WsClient.connect(node.port())) {
      JsonNode resumed = again.resume(welcome, 0);
      assertTrue(resumed.get("resumed").asBoolean());
      assertTrue(resumed.get("replay").asInt() > 0);
    }
  }

  private static void awaitState(String sessionId, String state) {
    node.api().awaitSessionState(sessionId, state, Duration.ofSeconds(10));
  }

  private static void awaitStatus(String path, int status) {
    node.api().awaitStatus(path, status, Duration.ofSeconds(10));
  }
}
