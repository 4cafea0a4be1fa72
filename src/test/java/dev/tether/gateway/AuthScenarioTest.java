package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.auth0.jwt.JWT;
import com.auth0.jwt.algorithms.Algorithm;
import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.RawHttp;
import dev.tether.testkit.RawWebSocket;
import dev.tether.testkit.WsClient;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** hmac mode: JWT handshakes and a bearer-protected backend API. */
class AuthScenarioTest {
  private static final String SECRET = "test-secret-of-sufficient-length-0123456789";
  private static final String API_TOKEN = "api-token-xyz";
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.gateway.auth.mode", "hmac",
              "tether.gateway.auth.jwt-secret", SECRET,
              "tether.gateway.api.token", API_TOKEN));

  private static String jwt(String subject, String secret) {
    return JWT.create()
        .withSubject(subject)
        .withExpiresAt(Instant.now().plusSeconds(300))
        .sign(Algorithm.HMAC256(secret));
  }

  @Test
  void helloWithValidTokenStartsSessionForTheTokensSubject() {
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send("{\"type\":\"hello\",\"user\":\"ignored\",\"token\":\"" + jwt("victor", SECRET) + "\"}");
      JsonNode welcome = ws.expect("welcome");
      assertEquals("victor", welcome.get("user").asText());
    }
  }

  /** The 401 is decided from the head alone, yet it waits for the body: the backend gets it whole. */
  @Test
  void aWrongApiTokenOnALargePublishIsAnswered401AndTheConnectionStaysOpen() throws Exception {
    String largeBody = "{\"data\":\"" + "x".repeat(200_000) + "\"}";
    try (RawWebSocket connection = RawWebSocket.connect(node.port())) {
      RawHttp.Response refused =
          RawHttp.postHeadThenBody(
              connection,
              node.port(),
              "/api/users/victor/messages",
              Map.of("Authorization", "Bearer wrong-" + API_TOKEN),
              largeBody,
              Duration.ofMillis(300));
      assertEquals(401, refused.status(), () -> refused.head() + " " + refused.body());
      assertFalse(refused.head().headerHasToken("Connection", "close"), () -> "closed: " + refused.head());
      RawHttp.assertStillServes(connection, node.port());
    }
  }

  @Test
  void badOrMissingTokenIsRefusedWith4005() {
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send("{\"type\":\"hello\",\"token\":\"" + jwt("victor", "another-secret-another-secret-0000") + "\"}");
      ws.expectError("auth-failed");
      assertEquals(4005, ws.awaitClose());
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send("{\"type\":\"hello\",\"user\":\"victor\"}");
      ws.expectError("auth-failed");
      assertEquals(4005, ws.awaitClose());
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send("{\"type\":\"hello\",\"token\":\"not.a.jwt\"}");
      ws.expectError("auth-failed");
      assertEquals(4005, ws.awaitClose());
    }
  }

  @Test
  void resumeMustBelongToTheSameUser() {
    JsonNode welcome;
    try (WsClient ws = WsClient.connect(node.port())) {
      ws.send("{\"type\":\"hello\",\"token\":\"" + jwt("wendy", SECRET) + "\"}");
      welcome = ws.expect("welcome");
      ws.drop();
    }
    String id = welcome.get("sessionId").asText();
    String token = welcome.get("resumeToken").asText();
    try (WsClient ws = WsClient.connect(node.port())) {
      // Right resume token, but the credentials are another user's: not her session.
      ws.send(
          "{\"type\":\"resume\",\"sessionId\":\"" + id + "\",\"resumeToken\":\"" + token
              + "\",\"lastSeq\":0,\"token\":\"" + jwt("xavier", SECRET) + "\"}");
      JsonNode other = ws.expect("welcome");
      assertFalse(other.get("resumed").asBoolean());
      assertEquals("invalid-token", other.get("reason").asText());
      assertEquals("xavier", other.get("user").asText());
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      // The resume token alone is enough to continue her own session.
      JsonNode resumed = ws.resume(id, token, 0);
      assertTrue(resumed.get("resumed").asBoolean());
      assertEquals("wendy", resumed.get("user").asText());
    }
    try (WsClient ws = WsClient.connect(node.port())) {
      // A failed resume without credentials cannot create a session in hmac mode.
      ws.send("{\"type\":\"resume\",\"sessionId\":\"s_unknown\",\"resumeToken\":\"r_x\",\"lastSeq\":0}");
      ws.expectError("auth-failed");
      assertEquals(4005, ws.awaitClose());
    }
  }

  @Test
  void apiNeedsTheBearerToken() {
    assertEquals(401, new Api(node.port()).get("/api/sessions/s_x").status());
    Api.Response wrong = new Api(node.port(), "wrong").post("/api/users/u/messages", "{\"data\":1}");
    assertEquals(401, wrong.status());
    assertEquals("unauthorized", wrong.json().get("error").asText());
    Api.Response right = new Api(node.port(), API_TOKEN).post("/api/users/u/messages", "{\"data\":1}");
    assertEquals(202, right.status());
    assertEquals(0, right.json().get("sessions").asInt());
    // Operational endpoints stay open for probes and scrapers.
    assertEquals(200, new Api(node.port()).get("/health/ready").status());
  }
}
