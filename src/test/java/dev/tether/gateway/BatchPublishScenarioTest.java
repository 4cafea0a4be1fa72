package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** {@code POST /api/messages}: many publishes in one request, each answered in order. */
class BatchPublishScenarioTest {
  private static final int MAX_BATCH = 30;
  private static final int OUTBOX_MAX = 20;
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.gateway.limits.max-batch-messages", MAX_BATCH,
              "tether.session.outbox.max-messages", OUTBOX_MAX));

  @Test
  void oneRequestReachesSessionsUsersAndRoomsWithOneResultPerEntryInOrder() {
    try (WsClient a = WsClient.connect(node.port());
        WsClient b = WsClient.connect(node.port())) {
      String idA = a.hello("batch-alice").get("sessionId").asText();
      String idB = b.hello("batch-bob").get("sessionId").asText();
      b.send("{\"type\":\"join\",\"room\":\"batch-room\"}");
      b.expect("joined");

      Api.Response r =
          node.api().post(
              "/api/messages",
              batch(
                  "{\"sessionId\":\"" + idA + "\",\"data\":{\"n\":1}}",
                  "{\"sessionId\":\"s_no-such-session\",\"data\":{\"n\":2}}",
                  "{\"sessionId\":\"" + idB + "\",\"data\":{\"n\":3}}",
                  "{\"sessionId\":\"" + idA + "\",\"data\":{\"n\":4}}",
                  "{\"userId\":\"batch-alice\",\"data\":{\"n\":5}}",
                  "{\"room\":\"batch-room\",\"data\":{\"n\":6}}",
                  "{\"sessionId\":\"not a session id!\",\"data\":{\"n\":7}}"));

      assertEquals(202, r.status(), r.body());
      JsonNode results = r.json().get("results");
      assertEquals(7, results.size());
      assertEquals("not-found", results.get(1).get("error").asText());
      // Bob's direct entry and the room's entry race each other into his outbox: seq 1 or 2.
      long bobSeq = results.get(2).get("seq").asLong();
      assertTrue(bobSeq == 1 || bobSeq == 2, results.toString());
      assertEquals(
          results.get(0).get("seq").asLong() + 1,
          results.get(3).get("seq").asLong(),
          "a session's entries are queued together, in batch order");
      assertEquals(1, results.get(4).get("sessions").asInt());
      assertEquals(1, results.get(5).get("members").asInt());
      assertEquals("not-found", results.get(6).get("error").asText());

      // Alice: n=1 right before n=4; the user entry (n=5) goes its own way, before or after.
      List<Integer> atA = dataOf(a, 3);
      assertEquals(List.of(1, 4), atA.stream().filter(n -> n != 5).toList(), atA.toString());
      assertTrue(atA.contains(5), atA.toString());
      // Bob: n=3 under the seq its result promised, and the room's n=6 under the other one.
      Map<Long, Integer> atB = dataBySeq(b, 2);
      assertEquals(Map.of(bobSeq, 3, 3 - bobSeq, 6), atB);
      a.expectNoFrame(Duration.ofMillis(200));
    }
  }

  @Test
  void entriesQueuedWhileDetachedAreReplayedOnResume() {
    JsonNode welcome = WsClient.helloThenDrop(node.port(), "batch-carol");
    String id = welcome.get("sessionId").asText();
    node.api().awaitSessionState(id, "detached", Duration.ofSeconds(10));
    String[] list = new String[25];
    for (int n = 1; n <= 25; n++) list[n - 1] = "{\"sessionId\":\"" + id + "\",\"data\":{\"n\":" + n + "}}";

    Api.Response r = node.api().post("/api/messages", batch(list));

    assertEquals(202, r.status(), r.body());
    assertEquals(25, r.json().get("results").get(24).get("seq").asLong());
    // 25 entries into an outbox of 20: the oldest five were dropped by the overflow policy.
    JsonNode state = node.api().get("/api/sessions/" + id).json();
    assertEquals(25, state.get("lastSeq").asLong());
    assertEquals(OUTBOX_MAX, state.get("outbox").get("size").asInt());
    assertEquals(5, state.get("lost").asLong());
    try (WsClient ws = WsClient.connect(node.port())) {
      JsonNode resumed = ws.resume(welcome, 0);
      assertEquals(20, resumed.get("replay").asInt());
      assertEquals(5, resumed.get("lost").asLong());
      for (int seq = 6; seq <= 25; seq++) {
        JsonNode msg = ws.expect("msg");
        assertEquals(seq, msg.get("seq").asLong());
        assertEquals(seq, msg.get("data").get("n").asInt());
      }
    }
  }

  @Test
  void idempotencyKeysMakeARetriedBatchQueueNothingTwice() {
    try (WsClient ws = WsClient.connect(node.port())) {
      String id = ws.hello("batch-dave").get("sessionId").asText();
      String body =
          batch(
              "{\"sessionId\":\"" + id + "\",\"data\":{\"n\":1},\"idempotencyKey\":\"k-1\"}",
              "{\"sessionId\":\"" + id + "\",\"data\":{\"n\":2},\"idempotencyKey\":\"k-2\"}",
              // The same key twice in one batch: the second is the first's retry.
              "{\"sessionId\":\"" + id + "\",\"data\":{\"n\":1},\"idempotencyKey\":\"k-1\"}");

      JsonNode first = node.api().post("/api/messages", body).json().get("results");
      JsonNode retry = node.api().post("/api/messages", body).json().get("results");

      assertEquals(List.of(1L, 2L, 1L), seqs(first));
      assertEquals(List.of(1L, 2L, 1L), seqs(retry), "a retried batch answers the original seqs");
      assertEquals(List.of(1, 2), dataOf(ws, 2));
      ws.expectNoFrame(Duration.ofMillis(300));
      assertEquals(2, node.api().get("/api/sessions/" + id).json().get("lastSeq").asLong());
    }
  }

  @Test
  void aMalformedBatchIsRefusedWholeAndQueuesNothing() {
    try (WsClient ws = WsClient.connect(node.port())) {
      String id = ws.hello("batch-erin").get("sessionId").asText();
      String good = "{\"sessionId\":\"" + id + "\",\"data\":{\"n\":1}}";
      String[] tooMany = new String[MAX_BATCH + 1];
      java.util.Arrays.fill(tooMany, good);
      Map<String, String> refused =
          Map.ofEntries(
              Map.entry("not json", "{\"messages\":["),
              Map.entry("no array", "{\"data\":1}"),
              Map.entry("empty", batch()),
              Map.entry("too many", batch(tooMany)),
              Map.entry("entry not an object", batch(good, "42")),
              Map.entry("no data", batch(good, "{\"sessionId\":\"" + id + "\"}")),
              Map.entry("two targets", batch(good, "{\"sessionId\":\"" + id + "\",\"room\":\"r\",\"data\":1}")),
              Map.entry("no target", batch(good, "{\"data\":1}")),
              Map.entry("target not a string", batch(good, "{\"userId\":7,\"data\":1}")),
              Map.entry("bad room name", batch(good, "{\"room\":\"" + "x".repeat(200) + "\",\"data\":1}")),
              Map.entry("bad key", batch(good, "{\"userId\":\"u\",\"data\":1,\"idempotencyKey\":\"\"}")));

      refused.forEach(
          (why, body) -> {
            Api.Response r = node.api().post("/api/messages", body);
            assertEquals(400, r.status(), why + ": " + r.body());
            assertEquals("bad-request", r.json().get("error").asText(), why);
            assertTrue(r.json().get("message").asText().length() > 5, why);
          });
      Api.Response withHeader = node.api().post("/api/messages", batch(good), Map.of("Idempotency-Key", "k"));
      assertEquals(400, withHeader.status());

      ws.expectNoFrame(Duration.ofMillis(300));
      assertEquals(0, node.api().get("/api/sessions/" + id).json().get("lastSeq").asLong(), "nothing was queued");
      // The session is intact: a good batch still goes through.
      assertEquals(202, node.api().post("/api/messages", batch(good)).status());
      assertEquals(List.of(1), dataOf(ws, 1));
    }
  }

  private static String batch(String... entries) {
    return "{\"messages\":[" + String.join(",", entries) + "]}";
  }

  private static List<Integer> dataOf(WsClient ws, int count) {
    java.util.ArrayList<Integer> data = new java.util.ArrayList<>();
    for (int i = 0; i < count; i++) data.add(ws.expect("msg").get("data").get("n").asInt());
    return data;
  }

  private static Map<Long, Integer> dataBySeq(WsClient ws, int count) {
    java.util.HashMap<Long, Integer> data = new java.util.HashMap<>();
    for (int i = 0; i < count; i++) {
      JsonNode msg = ws.expect("msg");
      data.put(msg.get("seq").asLong(), msg.get("data").get("n").asInt());
    }
    return data;
  }

  private static List<Long> seqs(JsonNode results) {
    java.util.ArrayList<Long> seqs = new java.util.ArrayList<>();
    results.forEach(r -> seqs.add(r.get("seq").asLong()));
    return seqs;
  }
}
