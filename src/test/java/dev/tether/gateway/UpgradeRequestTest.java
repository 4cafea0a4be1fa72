package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.pekko.util.ByteString;
import org.junit.jupiter.api.Test;

/** The upgrade request's parsing and answers, and how the listener tells a WebSocket from HTTP. */
class UpgradeRequestTest {
  private static final String VALID =
      "GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
          + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";

  @Test
  void answersAValidUpgradeWithTheAcceptKeyOfRfc6455() {
    UpgradeRequest.Outcome outcome = UpgradeRequest.answer(VALID);
    assertTrue(outcome.upgraded());
    assertTrue(outcome.response().startsWith("HTTP/1.1 101 Switching Protocols\r\n"));
    // The example of RFC 6455 section 1.3.
    assertTrue(outcome.response().contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assertTrue(outcome.response().endsWith("\r\n\r\n"));
  }

  @Test
  void headerNamesAndTokensAreCaseInsensitive() {
    String shouting = VALID.replace("Upgrade: websocket", "UPGRADE: WebSocket").replace("Connection:", "connection:");
    assertTrue(UpgradeRequest.answer(shouting).upgraded());
  }

  @Test
  void refusesWhatIsNotAWebSocketUpgrade() {
    assertStatus(405, VALID.replace("GET /ws", "POST /ws"));
    assertStatus(400, VALID.replace("Upgrade: websocket\r\n", ""));
    assertStatus(400, VALID.replace("Connection: keep-alive, Upgrade", "Connection: keep-alive"));
    assertStatus(426, VALID.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"));
    assertStatus(400, VALID.replace("dGhlIHNhbXBsZSBub25jZQ==", "too-short"));
    assertStatus(400, VALID.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""));
    assertStatus(400, "GET /ws\r\nHost: x");
    assertStatus(400, VALID + "\r\nno colon here");
  }

  @Test
  void readsTheProxyHeadersWithoutTrustingNames() {
    UpgradeRequest.Outcome outcome =
        UpgradeRequest.answer(VALID + "\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Real-IP: 198.51.100.2");
    assertEquals("203.0.113.7", outcome.forwardedFor());
    assertEquals("198.51.100.2", outcome.realIp());
    assertEquals("203.0.113.7", WebSocketStage.ipLiteral("203.0.113.7"));
    assertEquals("0:0:0:0:0:0:0:1", WebSocketStage.ipLiteral("::1"));
    // Names are never looked up: a forged header must not make the gateway query DNS.
    assertNull(WebSocketStage.ipLiteral("cafe"));
    assertNull(WebSocketStage.ipLiteral("example.com"));
    assertNull(WebSocketStage.ipLiteral("unknown"));
    // Only literals: anything InetAddress would look up in DNS is refused before it gets there.
    assertEquals("10.0.0.1", WebSocketStage.ipLiteral("010.000.0.01"));
    assertNull(WebSocketStage.ipLiteral("999.1.1.1"));
    assertNull(WebSocketStage.ipLiteral("1.2.3"));
    assertNull(WebSocketStage.ipLiteral("1.2.3.4.5"));
    assertNull(WebSocketStage.ipLiteral("1..3.4"));
    assertNull(WebSocketStage.ipLiteral("0x7f.0.0.1"));
    assertNull(WebSocketStage.ipLiteral("evil.example:80"));
    assertNull(WebSocketStage.ipLiteral("zz::1"));
    assertNull(WebSocketStage.ipLiteral("fe80::1%eth0"));
    assertNull(WebSocketStage.ipLiteral("[::1]"));
    assertEquals("2001:db8:0:0:0:0:0:1", WebSocketStage.ipLiteral("2001:DB8::1"));
  }

  @Test
  void theListenerSendsOnlyRequestsForTheWebSocketPathToTheWebSocketStage() {
    assertTrue(WebSocketStage.isWebSocketRequest(ByteString.fromString("GET /ws HTTP/1.1\r\nHost: x\r\n")));
    assertTrue(WebSocketStage.isWebSocketRequest(ByteString.fromString("GET /ws?v=1 HTTP/1.1\r\n")));
    assertTrue(WebSocketStage.isWebSocketRequest(ByteString.fromString("POST /ws HTTP/1.1\r\n")));
    assertFalse(WebSocketStage.isWebSocketRequest(ByteString.fromString("GET /wsx HTTP/1.1\r\n")));
    assertFalse(WebSocketStage.isWebSocketRequest(ByteString.fromString("GET /api/sessions HTTP/1.1\r\n")));
    assertFalse(WebSocketStage.isWebSocketRequest(ByteString.fromString("GET /health/ready HTTP/1.1\r\n")));
    assertFalse(WebSocketStage.isWebSocketRequest(ByteString.fromString("garbage")));
  }

  private static void assertStatus(int status, String head) {
    UpgradeRequest.Outcome outcome = UpgradeRequest.answer(head);
    assertFalse(outcome.upgraded(), head);
    assertTrue(outcome.response().startsWith("HTTP/1.1 " + status + " "), outcome.response());
    assertTrue(outcome.response().contains("Connection: close\r\n"));
  }

  @Test
  void serverFramesCarryTheirLengthInTheShortestFormOfRfc6455() {
    for (int length : new int[] {0, 1, 125, 126, 127, 65_535, 65_536, 200_000}) {
      byte[] payload = new byte[length + 6];
      for (int i = 0; i < payload.length; i++) payload[i] = (byte) (i * 31 + 7);
      ByteString frame = WebSocketStage.frame(0x1, payload, 3, length); // a slice of the array
      int header = length < 126 ? 2 : length <= 0xFFFF ? 4 : 10;
      assertEquals(header + length, frame.length(), "length " + length);
      assertEquals((byte) 0x81, frame.apply(0), "FIN + text, length " + length);
      long encoded;
      if (header == 2) {
        encoded = frame.apply(1);
      } else if (header == 4) {
        assertEquals(126, frame.apply(1) & 0xFF);
        encoded = ((frame.apply(2) & 0xFF) << 8) | (frame.apply(3) & 0xFF);
      } else {
        assertEquals(127, frame.apply(1) & 0xFF);
        encoded = 0;
        for (int i = 2; i < 10; i++) encoded = (encoded << 8) | (frame.apply(i) & 0xFF);
      }
      assertEquals(length, encoded, "the unmasked length field (no mask bit), length " + length);
      for (int i = 0; i < length; i++) assertEquals(payload[3 + i], frame.apply(header + i), "payload byte " + i);
    }
  }
}
