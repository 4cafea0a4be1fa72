package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.Test;

/**
 * Messages between nodes are at most once: pekko drops them when a link's send queue is full.
 * Here the queue holds 32, and a session on node B is sent 300 messages at once for a client
 * connected through node A, so most of the session's deliveries never reach the connection. The
 * connection notices the first missing seq and closes 1012; the client resumes and the session
 * replays from its outbox. The client sees every seq once, in order, with no gap.
 */
class DroppedDeliveryScenarioTest {
  private static final int MESSAGES = 300;

  @Test
  void aDeliveryDroppedBetweenNodesMakesTheClientResumeInsteadOfSeeingAGap() throws Exception {
    String dbUrl = TestDatabase.newDatabase();
    Map<String, Object> settings = new HashMap<>();
    settings.put("pekko.cluster.jmx.multi-mbeans-in-same-jvm", "on");
    settings.put("pekko.remote.artery.advanced.outbound-message-queue-size", "32");
    // The last messages of a burst have no later one to reveal their loss: the session asks.
    settings.put("tether.session.check-written-after", "2s");
    TetherNode a = TestNodes.start(dbUrl, settings);
    settings.put("tether.cluster.seed-nodes", Cluster.get(a.system()).selfMember().address().toString());
    TetherNode b = TestNodes.start(dbUrl, settings);
    try {
      awaitUp(a);
      awaitUp(b);
      Api apiB = new Api(b.port());

      // A client through A whose session lives on B (sharding spreads sessions over both).
      WsClient ws = null;
      JsonNode welcome = null;
      List<WsClient> others = new ArrayList<>();
      for (int i = 0; i < 30 && welcome == null; i++) {
        double onB = attachedSessions(b);
        WsClient candidate = WsClient.connect(a.port());
        JsonNode w = candidate.hello("far-" + i);
        if (attachedSessions(b) > onB) {
          ws = candidate;
          welcome = w;
        } else {
          others.add(candidate);
        }
      }
      assertTrue(welcome != null, "no session landed on B");
      others.forEach(WsClient::close);
      String sessionId = welcome.get("sessionId").asText();

      List<String> entries = new ArrayList<>();
      for (int n = 1; n <= MESSAGES; n++) entries.add("{\"sessionId\":\"" + sessionId + "\",\"data\":{\"n\":" + n + "}}");
      Api.Response published = apiB.post("/api/messages", "{\"messages\":[" + String.join(",", entries) + "]}");
      assertEquals(202, published.status(), published.body());

      long lastSeq = 0;
      int resumes = 0;
      long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
      while (lastSeq < MESSAGES) {
        assertTrue(System.nanoTime() < deadline, "received up to seq " + lastSeq + " after " + resumes + " resumes");
        if (ws.pending() > 0) {
          JsonNode frame = ws.next();
          if (!frame.path("type").asText().equals("msg")) continue;
          long seq = frame.get("seq").asLong();
          assertEquals(lastSeq + 1, seq, "the client saw a gap or a duplicate");
          assertEquals(seq, frame.get("data").get("n").asLong());
          lastSeq = seq;
        } else if (ws.isClosed()) {
          assertEquals(1012, ws.awaitClose());
          resumes++;
          ws = WsClient.connect(a.port());
          assertTrue(ws.resume(welcome, lastSeq).get("resumed").asBoolean());
        } else {
          Thread.sleep(5);
        }
      }
      ws.close();
      // The queue of 32 cannot have carried 300 messages in one go: the path above was taken.
      assertTrue(resumes >= 1, "no delivery was dropped: the test did not exercise the gap");
      assertTrue(a.metrics().registry().get("tether_delivery_gaps").counter().count() >= 1);
    } finally {
      b.close();
      a.close();
    }
  }

  private static double attachedSessions(TetherNode node) {
    return node.metrics().registry().get("tether_sessions").tag("state", "attached").gauge().value();
  }

  private static void awaitUp(TetherNode node) throws InterruptedException {
    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
    while (System.nanoTime() < deadline) {
      long up = 0;
      for (var m : Cluster.get(node.system()).state().getMembers()) if (m.status() == MemberStatus.up()) up++;
      if (up == 2) return;
      Thread.sleep(100);
    }
    throw new AssertionError("cluster did not reach 2 members");
  }
}
