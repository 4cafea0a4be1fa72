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
import java.util.List;
import java.util.Map;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.Test;

/**
 * Two gateway nodes in one cluster on one database: a session moves between nodes with its
 * missed messages, and when a node dies abruptly its sessions resume on the survivor.
 */
class TwoNodeScenarioTest {

  @Test
  void sessionsResumeAcrossNodesAndSurviveNodeLoss() {
    String dbUrl = TestDatabase.newDatabase();
    // "Abrupt": the node does not leave the cluster, it just disappears.
    Map<String, Object> clusterSettings =
        Map.of(
            "pekko.coordinated-shutdown.run-by-actor-system-terminate", "off",
            "pekko.cluster.jmx.multi-mbeans-in-same-jvm", "on",
            "pekko.cluster.failure-detector.acceptable-heartbeat-pause", "2s");
    TetherNode a = TestNodes.start(dbUrl, clusterSettings);
    String seed = Cluster.get(a.system()).selfMember().address().toString();
    Map<String, Object> joinA = new java.util.HashMap<>(clusterSettings);
    joinA.put("tether.cluster.seed-nodes", seed);
    TetherNode b = TestNodes.start(dbUrl, joinA);
    try {
      awaitUp(a, 2);
      awaitUp(b, 2);
      Api apiA = new Api(a.port());
      Api apiB = new Api(b.port());

      // A session created through A resumes through B with what it missed.
      JsonNode welcome = WsClient.helloThenDrop(a.port(), "uma");
      String id = welcome.get("sessionId").asText();
      RestartScenarioTest.awaitState(apiA, id, "detached");
      apiA.publishToSession(id, "{\"via\":\"A\"}");
      apiB.publishToSession(id, "{\"via\":\"B\"}");
      try (WsClient ws = WsClient.connect(b.port())) {
        JsonNode resumed = ws.resume(welcome, 0);
        assertTrue(resumed.get("resumed").asBoolean());
        assertEquals("A", ws.expect("msg").get("data").get("via").asText());
        assertEquals("B", ws.expect("msg").get("data").get("via").asText());
      }

      // A batch bigger than one cluster message (Artery's 256 KiB frame), posted through both
      // nodes: whichever node the session lives on, one of the two posts crosses the cluster.
      JsonNode big = WsClient.helloThenDrop(a.port(), "vic");
      String bigId = big.get("sessionId").asText();
      RestartScenarioTest.awaitState(apiA, bigId, "detached");
      String blob = "x".repeat(40_000);
      List<String> entries = new ArrayList<>();
      for (int n = 0; n < 7; n++) entries.add("{\"sessionId\":\"" + bigId + "\",\"data\":{\"n\":" + n + ",\"blob\":\"" + blob + "\"}}");
      String body = "{\"messages\":[" + String.join(",", entries) + "]}";
      for (Api via : List.of(apiA, apiB)) {
        Api.Response r = via.post("/api/messages", body);
        assertEquals(202, r.status(), r.body());
        assertEquals(7, r.json().get("results").size());
        r.json().get("results").forEach(result -> assertTrue(result.has("seq"), () -> "queued: " + r.body()));
      }
      try (WsClient ws = WsClient.connect(b.port())) {
        assertEquals(14, ws.resume(big, 0).get("replay").asInt());
        for (int seq = 1; seq <= 14; seq++) {
          JsonNode msg = ws.expect("msg");
          assertEquals(seq, msg.get("seq").asLong());
          assertEquals((seq - 1) % 7, msg.get("data").get("n").asInt(), "each batch arrives in its order");
        }
      }

      // One message larger than Pekko's default 256 KiB cluster frame, published through both
      // nodes and replayed through both: it crosses the cluster on the way in (to the session)
      // and on the way out (to the connection), whichever node the session lives on.
      JsonNode large = WsClient.helloThenDrop(a.port(), "wes");
      String largeId = large.get("sessionId").asText();
      RestartScenarioTest.awaitState(apiA, largeId, "detached");
      String largeBlob = "y".repeat(400_000);
      for (Api via : List.of(apiA, apiB)) {
        Api.Response r = via.post("/api/sessions/" + largeId + "/messages", "{\"data\":{\"blob\":\"" + largeBlob + "\"}}");
        assertEquals(202, r.status(), r.body());
      }
      for (int port : List.of(a.port(), b.port())) {
        try (WsClient ws = WsClient.connect(port)) {
          assertEquals(2, ws.resume(large, 0).get("replay").asInt());
          for (int seq = 1; seq <= 2; seq++) {
            JsonNode msg = ws.expect("msg");
            assertEquals(seq, msg.get("seq").asLong());
            assertEquals(largeBlob.length(), msg.get("data").get("blob").asText().length());
          }
        }
        RestartScenarioTest.awaitState(apiA, largeId, "detached");
      }

      // Many sessions, connected through A, spread over both nodes' shards.
      List<JsonNode> welcomes = new ArrayList<>();
      List<WsClient> clients = new ArrayList<>();
      for (int i = 0; i < 12; i++) {
        WsClient ws = WsClient.connect(a.port());
        welcomes.add(ws.hello("crowd-" + i));
        clients.add(ws);
      }
      for (JsonNode w : welcomes) apiB.publishToSession(w.get("sessionId").asText(), "{\"before\":true}");
      for (WsClient ws : clients) ws.expect("msg");

      // A dies abruptly. Its sockets die with it. With two nodes there is no majority for the
      // split brain resolver to act on (the three-node test in the reliability suite covers
      // that), so the survivor is told to down the dead node, as an operator would.
      var aAddress = Cluster.get(a.system()).selfMember().address();
      a.system().terminate();
      for (WsClient ws : clients) ws.close();
      Cluster.get(b.system()).manager().tell(org.apache.pekko.cluster.typed.Down.apply(aAddress));

      // Messages published meanwhile through B are kept for every session.
      for (JsonNode w : welcomes) {
        long seq = publishWithRetry(apiB, w.get("sessionId").asText(), "{\"during\":true}");
        assertEquals(2, seq);
      }
      // Each of those sessions is detached now, its grace period running: those A's shards held
      // (recovered on B), and those that lived on B all along with their socket on A. (Here A's
      // actors stop as its system terminates, so their Detach may still reach B; a node killed
      // outright sends nothing, and NodeLossIT checks that B then hears it from the cluster.)
      for (JsonNode w : welcomes) RestartScenarioTest.awaitState(apiB, w.get("sessionId").asText(), "detached");
      long start = System.nanoTime();
      for (JsonNode w : welcomes) {
        try (WsClient ws = WsClient.connect(b.port())) {
          JsonNode resumed = ws.resume(w, 1);
          assertTrue(resumed.get("resumed").asBoolean(), () -> "resumed on B: " + resumed);
          assertEquals(1, resumed.get("replay").asInt());
          JsonNode msg = ws.expect("msg");
          assertEquals(2, msg.get("seq").asLong());
          assertTrue(msg.get("data").get("during").asBoolean());
        }
      }
      assertTrue(Duration.ofNanos(System.nanoTime() - start).toSeconds() < 30);
    } finally {
      b.close();
      a.close();
    }
  }

  /**
   * While the dead node is being downed, the API may answer 503; a backend retries, with an
   * idempotency key so that an attempt that did get through is not queued twice.
   */
  private static long publishWithRetry(Api api, String sessionId, String data) {
    long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
    String key = java.util.UUID.randomUUID().toString();
    while (true) {
      Api.Response r =
          api.post("/api/sessions/" + sessionId + "/messages", "{\"data\":" + data + "}", Map.of("Idempotency-Key", key));
      if (r.status() == 202) return r.json().get("seq").asLong();
      if (System.nanoTime() > deadline) throw new AssertionError("publish kept failing: " + r);
      try {
        Thread.sleep(200);
      } catch (InterruptedException e) {
        throw new IllegalStateException(e);
      }
    }
  }

  private static void awaitUp(TetherNode node, int members) {
    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
    while (System.nanoTime() < deadline) {
      long up = 0;
      for (var m : Cluster.get(node.system()).state().getMembers()) if (m.status() == MemberStatus.up()) up++;
      if (up == members) return;
      try {
        Thread.sleep(100);
      } catch (InterruptedException e) {
        throw new IllegalStateException(e);
      }
    }
    throw new AssertionError("cluster did not reach " + members + " members");
  }
}
