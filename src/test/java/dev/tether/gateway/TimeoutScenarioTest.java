package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The deadlines: handshake timeout, heartbeat timeout, grace expiry (shortened for the test). */
class TimeoutScenarioTest {
  private static String dbUrl;
  private static TetherNode node;
  private static Api api;

  @BeforeAll
  static void startNode() {
    dbUrl = TestDatabase.newDatabase();
    node =
        TestNodes.start(
            dbUrl,
            Map.of(
                "tether.gateway.handshake-timeout", "1s",
                "tether.gateway.heartbeat.interval", "500ms",
                "tether.gateway.heartbeat.timeout", "3s",
                "tether.session.grace", "2s"));
    api = new Api(node.port());
  }

  @AfterAll
  static void stopNode() {
    if (node != null) node.close();
  }

  @Test
  void handshakeTimeoutClosesWith4001() {
    double before = timedOutHandshakes();
    try (WsClient ws = WsClient.connect(node.port())) {
      long start = System.nanoTime();
      assertEquals(4001, ws.awaitClose(Duration.ofSeconds(5)));
      assertTrue(System.nanoTime() - start >= Duration.ofMillis(900).toNanos());
    }
    assertEquals(before + 1, timedOutHandshakes());
  }

  @Test
  void heartbeatTimeoutClosesWith4008AndDetaches() {
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode welcome = ws.hello("quiet");
      String id = welcome.get("sessionId").asText();
      // A client that pings stays connected past the timeout (3 s)...
      for (int i = 0; i < 8; i++) {
        Eventually.pause(Duration.ofMillis(500));
        ws.send("{\"type\":\"ping\"}");
        ws.expect("pong");
      }
      assertFalse(ws.isClosed());
      // ...and one that goes silent is closed.
      assertEquals(4008, ws.awaitClose(Duration.ofSeconds(10)));
      JsonNode state = api.get("/api/sessions/" + id).json();
      assertEquals("detached", state.get("state").asText());
      assertTrue(state.get("graceDeadline").asLong() > 0);
    }
  }

  /** A client that keeps its link alive with WebSocket-level pings only (OkHttp's pingInterval). */
  @Test
  void protocolPingsCountAsHearingFromTheClient() {
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.hello("protocol-pinger");
      // Twice the heartbeat timeout (3 s) of protocol pings, answered by the server's stack...
      for (int i = 0; i < 12; i++) {
        Eventually.pause(Duration.ofMillis(500));
        assertTrue(ws.protocolPing(new byte[] {(byte) i}), "ping " + i + " answered");
      }
      assertFalse(ws.isClosed(), "a pinging client is alive");
      // ...then nothing at all: closed.
      assertEquals(4008, ws.awaitClose(Duration.ofSeconds(10)));
    }
  }

  @Test
  void expiresAfterGrace() {
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "late");
    String id = welcome.get("sessionId").asText();
    api.awaitStatus("/api/sessions/" + id, 404, Duration.ofSeconds(10));
    assertEquals(0, TestDatabase.count(dbUrl, "SELECT count(*) FROM event_journal WHERE persistence_id = ?", "ClientProxy|" + id));
    assertEquals(0, TestDatabase.count(dbUrl, "SELECT count(*) FROM snapshot WHERE persistence_id = ?", "ClientProxy|" + id));
    try (WsClient ws = WsClient.connect(node.port())) {
      // The resume names its user (an addition to the contract), so the new session is hers.
      ws.send(
          "{\"type\":\"resume\",\"sessionId\":\"" + id + "\",\"resumeToken\":\""
              + welcome.get("resumeToken").asText() + "\",\"lastSeq\":0,\"user\":\"late\"}");
      JsonNode again = ws.expect("welcome");
      assertFalse(again.get("resumed").asBoolean());
      assertEquals("expired", again.get("reason").asText());
      assertEquals("late", again.get("user").asText());
    }
  }

  private static double timedOutHandshakes() {
    return node.metrics().registry().get("tether_handshake_failures").tag("reason", "timeout").counter().count();
  }
}
