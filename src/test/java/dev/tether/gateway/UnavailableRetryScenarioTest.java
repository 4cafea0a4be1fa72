package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.JournalLock;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.WsClient;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * A session that cannot persist in time: the publish answers {@code unavailable} (it may or may
 * not have been queued), and the backend's retry with the same idempotency keys queues each
 * message exactly once, in order. The journal is made slow for real, by locking its table.
 */
class UnavailableRetryScenarioTest {
  private static final Duration ASK_TIMEOUT = Duration.ofSeconds(1);

  @RegisterExtension
  static final OneNode node = new OneNode(Map.of("tether.session.ask-timeout", ASK_TIMEOUT.toMillis() + "ms"));

  @Test
  void aBatchThatTimedOutIsRetriedWithItsKeysAndQueuedOnceInOrder() throws Exception {
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "slow-journal-fay");
    String id = welcome.get("sessionId").asText();
    node.api().awaitSessionState(id, "detached", Duration.ofSeconds(10));

    // Five entries of ~40 KB: pieces of three and two (at most 128 KiB each).
    String blob = "z".repeat(40_000);
    List<String> entries = new ArrayList<>();
    for (int n = 0; n < 5; n++) {
      entries.add(
          "{\"sessionId\":\"" + id + "\",\"idempotencyKey\":\"fay-" + n + "\",\"data\":{\"n\":" + n + ",\"blob\":\"" + blob + "\"}}");
    }
    String body = "{\"messages\":[" + String.join(",", entries) + "]}";
    String single = "{\"data\":{\"n\":5}}";
    Map<String, String> singleKey = Map.of("Idempotency-Key", "fay-5");

    try (Connection lock = node.database().dataSource().getConnection()) {
      lock.setAutoCommit(false);
      try (Statement st = lock.createStatement()) {
        // Reads go on (recovery, the read model); every journal write waits for the lock.
        st.execute("LOCK TABLE event_journal IN EXCLUSIVE MODE");
      }
      Api.Response batch = node.api().post("/api/messages", body);
      assertEquals(202, batch.status(), batch.body());
      // The first piece did not answer in time; the second was not sent, so that a retry
      // cannot queue it ahead of the first.
      for (JsonNode result : batch.json().get("results")) {
        assertEquals("unavailable", result.path("error").asText(), batch.body());
      }
      Api.Response one = node.api().post("/api/sessions/" + id + "/messages", single, singleKey);
      assertEquals(503, one.status(), one.body());
      assertEquals("unavailable", one.json().get("error").asText());
      lock.rollback();
    }

    // The backend retries the same requests. What the session persisted once the lock was
    // released keeps its seq: the batch's first piece (1-3) and the single publish (4), which
    // waited behind it; so "unavailable" meant "maybe queued". The piece that was not sent is
    // queued now, after them.
    Api.Response batch = node.api().post("/api/messages", body);
    assertEquals(202, batch.status(), batch.body());
    List<Long> seqs = new ArrayList<>();
    batch.json().get("results").forEach(result -> seqs.add(result.path("seq").asLong()));
    assertEquals(List.of(1L, 2L, 3L, 5L, 6L), seqs, batch.body());
    Api.Response one = node.api().post("/api/sessions/" + id + "/messages", single, singleKey);
    assertEquals(202, one.status(), one.body());
    assertEquals(4, one.json().get("seq").asLong());

    try (WsClient ws = WsClient.connect(node.port())) {
      assertEquals(6, ws.resume(welcome, 0).get("replay").asInt());
      List<Integer> publishedAs = List.of(0, 1, 2, 5, 3, 4);
      for (int seq = 1; seq <= 6; seq++) {
        JsonNode msg = ws.expect("msg");
        assertEquals(seq, msg.get("seq").asLong());
        assertEquals(publishedAs.get(seq - 1), msg.get("data").get("n").asInt(), "each message once, under its seq");
      }
      ws.expectNoFrame(Duration.ofMillis(300));
    }
  }

  @Test
  void aHandshakeTheSessionCannotAnswerInTimeClosesWith1011AndIsCounted() throws Exception {
    double before = handshakeFailures("session-unavailable");
    try (Connection lock = node.database().dataSource().getConnection()) {
      lock.setAutoCommit(false);
      try (Statement st = lock.createStatement()) {
        st.execute("LOCK TABLE event_journal IN EXCLUSIVE MODE"); // the new session cannot persist
      }
      try (WsClient ws = WsClient.connect(node.port())) {
        ws.send("{\"type\":\"hello\",\"user\":\"stuck-gil\"}");
        // 2 x ask-timeout (1 s), with room for a slow machine.
        assertEquals(1011, ws.awaitClose(Duration.ofSeconds(10)));
      }
      lock.rollback();
    }
    assertEquals(before + 1, handshakeFailures("session-unavailable"));
    // The client's retry, once the journal is back, gets its session.
    try (WsClient ws = WsClient.connect(node.port())) {
      assertEquals("new", ws.hello("stuck-gil").get("reason").asText());
      // The session the first hello opened once the lock was gone was never welcomed: nobody
      // holds its token, so it ended at once instead of waiting out a grace period.
      awaitUserSessionStates("stuck-gil", List.of("attached", "ended"));
    }
  }

  @Test
  void aNewSessionWhoseClientLeftBeforeItsWelcomeEndsAtOnce() throws Exception {
    double abandonedBefore = abandoned();
    // The other tests' sockets may still be closing on the node: counted from none open.
    Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(0.0, openConnections()));
    double openBefore = 0.0;
    try (JournalLock lock = new JournalLock(node.database().url())) {
      WsClient ws = WsClient.connect(node.port());
      ws.send("{\"type\":\"hello\",\"user\":\"gone-hal\"}");
      // The hello is being handled: its connection is in the handshake, the session waits to
      // persist Opened.
      Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(1.0, handshakesInProgress()));
      lock.awaitAWriteWaiting(Duration.ofSeconds(10));
      ws.drop(); // the client gives up: it never sees the session's id or token
      // The node saw the socket close before the session could answer.
      Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(openBefore, openConnections()));
    }
    // Once its Opened is written the session learns its opener is gone before the welcome.
    Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(abandonedBefore + 1, abandoned()));
    awaitUserSessionStates("gone-hal", List.of("ended")); // not detached for a grace period

    // A resume that gives up abandons nothing: that client holds its token and comes back.
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "gone-ian");
    node.api().awaitSessionState(welcome.get("sessionId").asText(), "detached", Duration.ofSeconds(10));
    try (JournalLock lock = new JournalLock(node.database().url())) {
      WsClient ws = WsClient.connect(node.port());
      ws.send(
          "{\"type\":\"resume\",\"sessionId\":\"" + welcome.get("sessionId").asText()
              + "\",\"resumeToken\":\"" + welcome.get("resumeToken").asText() + "\",\"lastSeq\":0}");
      Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(1.0, handshakesInProgress()));
      lock.awaitAWriteWaiting(Duration.ofSeconds(10)); // the resume waits to persist Attached
      ws.drop();
      Eventually.awaitAssert(Duration.ofSeconds(10), () -> assertEquals(openBefore, openConnections()));
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      assertTrue(ws.resume(welcome, 0).get("resumed").asBoolean(), "the session is still there to resume");
    }
    assertEquals(abandonedBefore + 1, abandoned(), "a resume that gave up abandons nothing");
  }

  /** Waits until the read model lists exactly these states (sorted) for {@code user}'s sessions. */
  private static void awaitUserSessionStates(String user, List<String> expected) {
    Eventually.awaitAssert(
        Duration.ofSeconds(10),
        () -> {
          Api.Response listing = node.api().get("/api/sessions?user=" + user);
          assertEquals(200, listing.status(), listing.body());
          List<String> states = new ArrayList<>();
          listing.json().get("sessions").forEach(s -> states.add(s.get("state").asText()));
          java.util.Collections.sort(states);
          assertEquals(expected, states, listing.body());
        });
  }

  private static double openConnections() {
    return node.metrics().registry().get("tether_connections_open").gauge().value();
  }

  private static double handshakesInProgress() {
    return node.metrics().registry().get("tether_handshakes").tag("state", "in-progress").gauge().value();
  }

  private static double abandoned() {
    return node.metrics().registry().get("tether_sessions_abandoned").counter().count();
  }

  private static double handshakeFailures(String reason) {
    return node.metrics().registry().get("tether_handshake_failures").tag("reason", reason).counter().count();
  }
}
