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
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The service stops (actor system gone) and starts again on the same database: nothing is lost. */
class RestartScenarioTest {

  @Test
  void survivesRestart() {
    String dbUrl = TestDatabase.newDatabase();
    JsonNode welcome;
    JsonNode attachedWelcome;
    try (TetherNode first = TestNodes.start(dbUrl, Map.of())) {
      Api api = new Api(first.port());
      try (WsClient ws = WsClient.connect(first.port())) {
        welcome = ws.hello("rita");
        ws.send("{\"type\":\"join\",\"room\":\"ops\"}");
        ws.expect("joined");
        String id = welcome.get("sessionId").asText();
        api.publishToSession(id, "{\"n\":1}");
        api.publishToSession(id, "{\"n\":2}");
        ws.expect("msg");
        ws.expect("msg");
        ws.send("{\"type\":\"ack\",\"seq\":1}");
        ws.send("{\"type\":\"send\",\"cseq\":1,\"to\":\"room:ops\",\"data\":\"self\"}");
        ws.expect("sent");
        assertEquals(3, ws.expect("msg").get("seq").asLong());
        ws.drop();
      }
      awaitState(api, welcome.get("sessionId").asText(), "detached");
      api.publishToSession(welcome.get("sessionId").asText(), "{\"n\":4}");

      // A second session is still attached when the node goes down.
      WsClient stillAttached = WsClient.connect(first.port());
      attachedWelcome = stillAttached.hello("sam");
      api.publishToSession(attachedWelcome.get("sessionId").asText(), "{\"unread\":true}");
      stillAttached.expect("msg");
      stillAttached.close();
    }

    try (TetherNode second = TestNodes.start(dbUrl, Map.of())) {
      Api api = new Api(second.port());
      String id = welcome.get("sessionId").asText();
      JsonNode state = awaitState(api, id, "detached");
      assertEquals(4, state.get("lastSeq").asLong());
      assertEquals(1, state.get("ackedSeq").asLong());
      assertEquals(1, state.get("clientSeq").asLong());
      assertEquals("ops", state.get("rooms").get(0).asText());
      try (WsClient ws = WsClient.connect(second.port())) {
        JsonNode resumed = ws.resume(welcome, 1);
        assertTrue(resumed.get("resumed").asBoolean());
        assertEquals(3, resumed.get("replay").asInt());
        assertEquals(1, resumed.get("clientSeq").asLong());
        for (long seq = 2; seq <= 4; seq++) assertEquals(seq, ws.expect("msg").get("seq").asLong());
        // Room membership survived too: a room publish reaches it.
        assertEquals(202, api.post("/api/rooms/ops/messages", "{\"data\":\"after restart\"}").status());
        assertEquals(5, ws.expect("msg").get("seq").asLong());
      }
      // The session that was attached when the node stopped is detached now and resumable.
      String otherId = attachedWelcome.get("sessionId").asText();
      awaitState(api, otherId, "detached");
      try (WsClient ws = WsClient.connect(second.port())) {
        JsonNode resumed = ws.resume(attachedWelcome, 0);
        assertTrue(resumed.get("resumed").asBoolean());
        assertEquals(1, ws.expect("msg").get("seq").asLong());
      }
    }
  }

  static JsonNode awaitState(Api api, String sessionId, String state) {
    return api.awaitSessionState(sessionId, state, Duration.ofSeconds(20));
  }
}
