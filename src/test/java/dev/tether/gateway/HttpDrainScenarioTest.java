package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.JournalLock;
import dev.tether.testkit.RawHttp;
import dev.tether.testkit.RawWebSocket;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.Done;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.junit.jupiter.api.Test;

/**
 * A graceful stop lets the API requests already in progress finish: a backend's publish that is
 * being worked on when SIGTERM arrives is answered (and was accepted), idle kept-alive connections
 * are closed at once, and a request that never finishes cannot hold the stop beyond the drain
 * timeout. The publish is held in progress by locking the journal table, so its session's persist
 * waits.
 */
class HttpDrainScenarioTest {
  private static final Duration AWAIT = Duration.ofSeconds(10);

  @Test
  void aPublishInProgressIsAnsweredAndDeliveredAndIdleConnectionsCloseAtOnce() throws Exception {
    String dbUrl = TestDatabase.newDatabase();
    JsonNode welcome;
    try (TetherNode node = TestNodes.start(dbUrl, Map.of())) {
      welcome = sessionThatLeft(node);
      CompletionStage<Done> stopped;
      try (RawWebSocket idle = RawWebSocket.connect(node.port());
          RawWebSocket busy = RawWebSocket.connect(node.port())) {
        idle.write(RawHttp.get(node.port(), "/health/alive"));
        assertEquals(200, RawHttp.read(idle, AWAIT).status()); // kept alive, and now idle
        CompletableFuture<RawWebSocket.HttpHead> answer;
        try (JournalLock lock = new JournalLock(dbUrl)) {
          busy.write(RawHttp.post(node.port(), publishPath(welcome), "{\"data\":\"sent during the stop\"}"));
          answer = CompletableFuture.supplyAsync(() -> RawHttp.read(busy, AWAIT).head());
          lock.awaitAWriteWaiting(AWAIT);
          assertFalse(answer.isDone(), "the publish waits for the locked journal");

          stopped = CoordinatedShutdown.get(node.system()).runAll(CoordinatedShutdown.unknownReason());
          assertEquals(RawWebSocket.End.EOF, idle.awaitEnd(AWAIT), "an idle kept-alive connection closes at once");
          assertFalse(answer.isDone(), "the publish in progress is not cut off");
        }
        RawWebSocket.HttpHead head = answer.get(AWAIT.toMillis(), TimeUnit.MILLISECONDS);
        assertEquals(202, head.status(), () -> "the publish is answered: " + head);
        assertTrue(head.headerHasToken("Connection", "close"), () -> "and its connection closes: " + head);
        assertEquals(RawWebSocket.End.EOF, busy.awaitEnd(AWAIT));
      }
      stopped.toCompletableFuture().get(30, TimeUnit.SECONDS);
    }

    // The answered publish was accepted for good: the session replays it after a restart.
    try (TetherNode again = TestNodes.start(dbUrl, Map.of());
        WsClient ws = WsClient.connect(again.port())) {
      JsonNode resumed = ws.resume(welcome, 0);
      assertTrue(resumed.get("resumed").asBoolean(), () -> "resumed: " + resumed);
      assertEquals(1, resumed.get("replay").asInt());
      assertEquals("sent during the stop", ws.expect("msg").get("data").asText());
    }
  }

  @Test
  void aRequestThatDoesNotFinishWithinTheDrainTimeoutDoesNotHoldTheStop() throws Exception {
    String dbUrl = TestDatabase.newDatabase();
    Duration drainTimeout = Duration.ofSeconds(1);
    try (TetherNode node = TestNodes.start(dbUrl, Map.of("tether.http.drain-timeout", drainTimeout.toMillis() + "ms"))) {
      JsonNode welcome = sessionThatLeft(node);
      try (RawWebSocket busy = RawWebSocket.connect(node.port());
          JournalLock lock = new JournalLock(dbUrl)) {
        busy.write(RawHttp.post(node.port(), publishPath(welcome), "{\"data\":\"stuck\"}"));
        lock.awaitAWriteWaiting(AWAIT);
        long start = System.nanoTime();
        CoordinatedShutdown.get(node.system()).runAll(CoordinatedShutdown.unknownReason());
        RawWebSocket.End end = busy.awaitEnd(AWAIT);
        long waitedMillis = (System.nanoTime() - start) / 1_000_000;
        assertNotEquals(RawWebSocket.End.TIMEOUT, end, "the stuck connection is ended");
        assertTrue(
            waitedMillis >= drainTimeout.toMillis() - 100 && waitedMillis < drainTimeout.toMillis() + 3_000,
            "ended at the drain timeout, after " + waitedMillis + " ms");
      }
    }
  }

  /**
   * A session whose client has gone, its detach persisted (so that the only write waiting on the
   * journal lock later is the publish): a publish to it is persisted.
   */
  private static JsonNode sessionThatLeft(TetherNode node) {
    JsonNode welcome;
    try (WsClient ws = WsClient.connect(node.port())) {
      welcome = ws.hello("drain-user");
      ws.drop();
    }
    new Api(node.port()).awaitSessionState(welcome.get("sessionId").asText(), "detached", AWAIT);
    return welcome;
  }

  private static String publishPath(JsonNode welcome) {
    return "/api/sessions/" + welcome.get("sessionId").asText() + "/messages";
  }
}
