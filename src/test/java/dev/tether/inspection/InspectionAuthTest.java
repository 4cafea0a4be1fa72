package dev.tether.inspection;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** In hmac mode the inspection endpoints need the API's bearer token like the rest of /api. */
class InspectionAuthTest {
  private static final String API_TOKEN = "inspection-token";

  @Test
  void inspectionNeedsTheBearerToken() {
    try (TetherNode node =
        TestNodes.start(
            TestDatabase.newDatabase(),
            Map.of(
                "tether.gateway.auth.mode", "hmac",
                "tether.gateway.auth.jwt-secret", "test-secret-of-sufficient-length-0123456789",
                "tether.gateway.api.token", API_TOKEN))) {
      Api anonymous = new Api(node.port());
      Api wrong = new Api(node.port(), "nope");
      Api operator = new Api(node.port(), API_TOKEN);
      for (String path :
          new String[] {"/api/sessions", "/api/sessions/s_x/messages/1", "/api/sessions/s_x/history", "/api/cluster"}) {
        assertEquals(401, anonymous.get(path).status(), path);
        assertEquals(401, wrong.get(path).status(), path);
        Api.Response ok = operator.get(path);
        assertEquals(200, ok.status(), () -> path + " " + ok.body());
      }
      assertEquals("unauthorized", anonymous.get("/api/sessions").json().get("error").asText());
    }
  }
}
