package dev.tether.gateway;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.session.ClientProxy;
import dev.tether.testkit.JournalLock;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.RawWebSocket;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Handshake admission on a real node: one handshake worked on at a time. A handshake is held in
 * progress by locking the journal table (the session's first persist waits on the lock), which is
 * what a slow journal does in a reconnect storm.
 */
class AdmissionScenarioTest {
  private static final Duration QUEUE_TIMEOUT = Duration.ofSeconds(4);
  private static final Duration AWAIT = Duration.ofSeconds(10);

  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.gateway.admission.max-in-progress", 1,
              "tether.gateway.admission.queue-timeout", QUEUE_TIMEOUT.toMillis() + "ms"));

  @AfterEach
  void everyPlaceIsGivenBack() {
    awaitAssert(
        AWAIT,
        () -> {
          assertEquals(0, handshakes("in-progress"));
          assertEquals(0, handshakes("waiting"));
        });
  }

  @Test
  void handshakesBeyondTheLimitWaitAndAreWorkedOnInArrivalOrder() throws Exception {
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port());
        WsClient c = WsClient.connect(node.port())) {
      JsonNode welcomeA, welcomeB, welcomeC;
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "admission-a");
        sendHello(b, "admission-b");
        awaitAssert(AWAIT, () -> assertEquals(1, handshakes("waiting")));
        sendHello(c, "admission-c");
        awaitAssert(AWAIT, () -> assertEquals(2, handshakes("waiting")));
        b.expectNoFrame(Duration.ofMillis(300)); // b waits (and c, by the gauge): no welcome, no close
      }
      welcomeA = a.expect("welcome");
      welcomeB = b.expect("welcome");
      welcomeC = c.expect("welcome");
      // One at a time, first come first served: the sessions reached the journal in that order.
      long firstA = firstJournalRow(welcomeA);
      long firstB = firstJournalRow(welcomeB);
      long firstC = firstJournalRow(welcomeC);
      assertTrue(firstA < firstB && firstB < firstC, "journal order a=" + firstA + " b=" + firstB + " c=" + firstC);
    }
  }

  @Test
  void aHandshakeThatWaitsLongerThanTheQueueTimeoutIsClosedWith1013AndCanRetry() throws Exception {
    double busyBefore = busyFailures();
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port())) {
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "busy-a");
        long start = System.nanoTime();
        sendHello(b, "busy-b");
        assertEquals(1013, b.awaitClose(Duration.ofSeconds(10)));
        assertTrue(System.nanoTime() - start >= QUEUE_TIMEOUT.minusMillis(100).toNanos());
        assertEquals(busyBefore + 1, busyFailures());
      }
      a.expect("welcome"); // the one in progress was not disturbed
    }
    try (WsClient retry = WsClient.connect(node.port())) {
      retry.hello("busy-b"); // the node is free again: the retry is welcomed
    }
  }

  @Test
  void aWaitingClientThatGoesAwayGivesUpItsPlace() throws Exception {
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port())) {
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "leaver-a");
        sendHello(b, "leaver-b");
        awaitAssert(AWAIT, () -> assertEquals(1, handshakes("waiting")));
        b.drop();
        awaitAssert(AWAIT, () -> assertEquals(0, handshakes("waiting")));
      }
      a.expect("welcome");
    }
  }

  /**
   * An upgrade takes a turn too (from its complete request to the 101): while every place is
   * taken it waits, then is answered 503 with Retry-After; it is upgraded once a place is free.
   */
  @Test
  void anUpgradeWaitsForItsTurnAndIsAnswered503WhenItWaitsTooLong() throws Exception {
    double busyBefore = busyFailures();
    try (WsClient a = WsClient.connect(node.port())) {
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "upgrade-a");
        long start = System.nanoTime();
        try (RawWebSocket refused = upgradeThatWaits(RawWebSocket.newKey())) {
          RawWebSocket.HttpHead head = refused.readHead();
          assertEquals(503, head.status());
          assertEquals("1", head.header("Retry-After"));
          assertTrue(System.nanoTime() - start >= QUEUE_TIMEOUT.minusMillis(100).toNanos());
          assertEquals(busyBefore + 1, busyFailures());
        }
        String key = RawWebSocket.newKey();
        try (RawWebSocket waiting = upgradeThatWaits(key)) {
          lock.close(); // a's handshake completes and gives its place to the waiting upgrade
          RawWebSocket.assertUpgraded(waiting.readHead(), key);
          waiting.sendText("{\"type\":\"hello\",\"user\":\"upgrade-b\"}");
          assertTrue(waiting.readText().contains("\"welcome\""));
        }
      }
      a.expect("welcome");
    }
  }

  /** An upgrade waiting for its turn whose client goes away leaves the line. */
  @Test
  void aWaitingUpgradeWhoseClientGoesAwayLeavesTheLine() throws Exception {
    try (WsClient a = WsClient.connect(node.port())) {
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "upgrade-leaver-a");
        upgradeThatWaits(RawWebSocket.newKey()).close();
        // Well before its turn timeout (4 s) would have taken it out of the line.
        awaitAssert(QUEUE_TIMEOUT.dividedBy(2), () -> assertEquals(0, handshakes("waiting")));
      }
      a.expect("welcome");
    }
  }

  /** Only an accepted upgrade needs a turn: a refused one is answered at once, even on a full node. */
  @Test
  void aRefusedUpgradeIsAnsweredAtOnceWhenEveryPlaceIsTaken() throws Exception {
    try (WsClient a = WsClient.connect(node.port())) {
      try (JournalLock lock = new JournalLock(node.database().url())) {
        takeTheOnlyPlace(a, "refusal-a");
        try (RawWebSocket refused = RawWebSocket.connect(node.port())) {
          Map<String, String> headers = RawWebSocket.upgradeHeaders(node.port(), RawWebSocket.newKey());
          headers.put("Sec-WebSocket-Version", "8");
          long start = System.nanoTime();
          refused.write(RawWebSocket.request("GET", "/ws", headers));
          assertEquals(426, refused.readHead().status()); // not 503 after waiting in line
          assertTrue(System.nanoTime() - start < QUEUE_TIMEOUT.toNanos());
        }
      }
      a.expect("welcome");
    }
  }

  /** Places are for the server's work: a client that is slow to send its hello holds none. */
  @Test
  void aClientSlowToSendItsHelloHoldsNoPlace() {
    try (WsClient silent = WsClient.connect(node.port());
        WsClient prompt = WsClient.connect(node.port())) {
      prompt.hello("prompt"); // welcomed while the silent socket sits upgraded, with a limit of 1
      assertEquals(0, handshakes("in-progress"));
      silent.hello("silent-after-all");
    }
  }

  /** Sends {@code ws}'s hello and waits until its handshake holds the node's only place. */
  private static void takeTheOnlyPlace(WsClient ws, String user) {
    sendHello(ws, user);
    awaitAssert(AWAIT, () -> assertEquals(1, handshakes("in-progress")));
  }

  /** A raw socket whose upgrade request (with {@code key}) is waiting in line for a turn. */
  private static RawWebSocket upgradeThatWaits(String key) {
    RawWebSocket socket = RawWebSocket.connect(node.port());
    socket.write(RawWebSocket.request("GET", "/ws", RawWebSocket.upgradeHeaders(node.port(), key)));
    awaitAssert(AWAIT, () -> assertEquals(1, handshakes("waiting")));
    return socket;
  }

  private static void sendHello(WsClient ws, String user) {
    ws.send("{\"type\":\"hello\",\"user\":\"" + user + "\"}");
  }

  private static double handshakes(String state) {
    return node.metrics().registry().get("tether_handshakes").tag("state", state).gauge().value();
  }

  private static double busyFailures() {
    return node.metrics().registry().get("tether_handshake_failures").tag("reason", "busy").functionCounter().count();
  }

  private static long firstJournalRow(JsonNode welcome) {
    String persistenceId = ClientProxy.persistenceIdOf(welcome.get("sessionId").asText());
    return TestDatabase.queryLong(node.database().url(), "SELECT min(ordering) FROM event_journal WHERE persistence_id = ?", persistenceId);
  }
}
