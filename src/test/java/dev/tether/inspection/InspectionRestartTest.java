package dev.tether.inspection;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The projection stores its offsets with its writes: after a restart it goes on from where it was,
 * neither missing the events written meanwhile nor applying an event twice (which would show as
 * doubled counters).
 */
class InspectionRestartTest {

  @Test
  void projectionContinuesAfterRestartWithoutCountingTwice() {
    String dbUrl = TestDatabase.newDatabase();
    String user = "rhea";
    JsonNode welcome;
    String id;
    try (TetherNode first = TestNodes.start(dbUrl, Map.of())) {
      Api api = new Api(first.port());
      ReadModel model = new ReadModel(api);
      try (WsClient ws = WsClient.connect(first.port())) {
        welcome = ws.hello(user);
        id = welcome.get("sessionId").asText();
        api.publishToSession(id, "{\"n\":1}");
        api.publishToSession(id, "{\"n\":2}");
        ws.expect("msg");
        ws.expect("msg");
        ws.send("{\"type\":\"ack\",\"seq\":1}");
        ws.drop();
      }
      model.awaitLiveState(id, "detached");
      try (WsClient ws = WsClient.connect(first.port())) {
        ws.resume(welcome, 1);
        assertEquals(2, ws.expect("msg").get("seq").asLong());
        api.publishToSession(id, "{\"n\":3}");
        assertEquals(3, ws.expect("msg").get("seq").asLong());
        model.awaitRow(
            user,
            id,
            "attached",
            row -> {
              assertEquals(1, row.get("resumes").asLong());
              assertEquals(3, row.get("lastSeq").asLong());
              assertEquals(1, row.get("ackedSeq").asLong());
            });
      }
      assertTrue(
          TestDatabase.count(
                  dbUrl,
                  "SELECT count(*) FROM pekko_projection_offset_store WHERE projection_name = ?",
                  InspectionProjection.NAME)
              >= 1,
          "offsets are stored");
    }

    try (TetherNode second = TestNodes.start(dbUrl, Map.of())) {
      Api api = new Api(second.port());
      ReadModel model = new ReadModel(api);
      // The session outlived the node and detached itself on recovery: a new event, projected
      // after the restart.
      model.awaitRow(user, id, "detached");
      try (WsClient ws = WsClient.connect(second.port())) {
        JsonNode resumed = ws.resume(welcome, 3);
        assertTrue(resumed.get("resumed").asBoolean());
        api.publishToSession(id, "{\"n\":4}");
        assertEquals(4, ws.expect("msg").get("seq").asLong());
        // lastSeq 4 comes from the last event written: once it shows, everything before it has been
        // applied, exactly once each (a replay from the start would make resumes 3).
        JsonNode row =
            model.awaitRow(user, id, "attached", r -> assertEquals(4, r.get("lastSeq").asLong()));
        assertEquals(2, row.get("resumes").asLong(), row::toString);
        assertEquals(0, row.get("takeovers").asLong());
        assertEquals(3, row.get("ackedSeq").asLong(), "the resume's lastSeq 3 acknowledged up to 3");
        assertEquals(1, row.get("outboxSize").asInt(), row::toString);
      }
      assertEquals(
          4, TestDatabase.count(dbUrl, "SELECT count(*) FROM message_history WHERE session_id = ?", id));
      assertEquals(
          3,
          TestDatabase.count(
              dbUrl, "SELECT count(*) FROM message_history WHERE session_id = ? AND acked_at IS NOT NULL", id));
    }
  }
}
