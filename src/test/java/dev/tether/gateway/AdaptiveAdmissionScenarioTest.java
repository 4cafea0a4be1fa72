package dev.tether.gateway;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.testkit.JournalLock;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * The handshake limit follows the node's pace on a real node: handshakes made slow for real (the
 * journal table locked, so a new session cannot persist) cut it, quick ones afterwards raise it
 * back to the maximum. HandshakeAdmissionTest has the arithmetic; this checks the wiring and the
 * gauge operators read.
 */
class AdaptiveAdmissionScenarioTest {
  private static final int MAX_IN_PROGRESS = 4;
  private static final Duration AWAIT = Duration.ofSeconds(15);

  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.session.ask-timeout", "1s", // a stuck handshake ends with 1011 after 2 s
              "tether.gateway.admission.max-in-progress", MAX_IN_PROGRESS,
              "tether.gateway.admission.min-in-progress", 1,
              "tether.gateway.admission.target-turn-time", "300ms"));

  @Test
  void slowHandshakesLowerTheLimitAndQuickOnesRaiseItBack() throws Exception {
    assertEquals(MAX_IN_PROGRESS, limit());
    List<WsClient> stuck = new ArrayList<>();
    try (JournalLock lock = new JournalLock(node.database().url())) {
      for (int i = 0; i < MAX_IN_PROGRESS; i++) {
        WsClient ws = WsClient.connect(node.port());
        ws.send("{\"type\":\"hello\",\"user\":\"adaptive-" + i + "\"}");
        stuck.add(ws);
      }
      awaitAssert(AWAIT, () -> assertEquals(MAX_IN_PROGRESS, handshakesInProgress()));
      // Each turn lasts until the session's answer is given up on (1011, 2 x ask-timeout).
      for (WsClient ws : stuck) assertEquals(1011, ws.awaitClose(AWAIT));
    } finally {
      for (WsClient ws : stuck) ws.close();
    }
    int lowered = limit();
    assertTrue(lowered < MAX_IN_PROGRESS, "turns of 2 s against a target of 300 ms cut the limit, it is " + lowered);

    // The journal is back: handshakes are quick again, and each one raises the limit a little.
    int hellos = 0;
    while (limit() < MAX_IN_PROGRESS && hellos < 100) {
      try (WsClient ws = WsClient.connect(node.port())) {
        assertEquals("new", ws.hello("adaptive-quick-" + hellos).get("reason").asText());
      }
      hellos++;
    }
    assertEquals(MAX_IN_PROGRESS, limit(), "back at the maximum after " + hellos + " quick handshakes");
  }

  private static int limit() {
    return (int) node.metrics().registry().get("tether_handshakes_limit").gauge().value();
  }

  private static int handshakesInProgress() {
    return (int) node.metrics().registry().get("tether_handshakes").tag("state", "in-progress").gauge().value();
  }
}
