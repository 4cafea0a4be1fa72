package dev.tether.security;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import dev.tether.TetherNode;
import dev.tether.testkit.Api;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.RawHttp;
import dev.tether.testkit.RawWebSocket;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import dev.tether.testkit.WsClient;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** Hostile clients: token guessing, garbage frames, garbage API calls, slow requests, stalled readers. */
class SecurityScenarioTest {
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.gateway.limits.failed-resume-burst", 10_000,
              "tether.gateway.limits.outgoing-buffer", 64,
              "tether.gateway.limits.max-frame-bytes", 16384));

  @Test
  void failedResumesAreRateLimitedAndNeverTouchTheRealSession() {
    // Its own node: every test here connects from 127.0.0.1, and the budget is per address.
    try (TetherNode limited =
            TestNodes.start(
                TestDatabase.newDatabase(),
                Map.of(
                    "tether.gateway.limits.failed-resume-burst", 3,
                    "tether.gateway.limits.failed-resumes-per-minute", 1))) {
      failedResumesAreRateLimited(limited, new Api(limited.port()));
    }
  }

  private static void failedResumesAreRateLimited(TetherNode node, Api api) {
    try (WsClient owner = WsClient.connect(node.port())) {
      JsonNode welcome = owner.hello("target");
      String id = welcome.get("sessionId").asText();
      JsonNode before = api.get("/api/sessions/" + id).json();
      // Resumes of sessions that do not exist (or expired, or ended) are what honest clients get
      // after an outage, many behind one address: they do not use up the budget.
      for (int i = 0; i < 5; i++) {
        try (WsClient returning = WsClient.connect(node.port())) {
          JsonNode answer = returning.resume("s_gone" + i, "r_whatever", 0);
          assertEquals("unknown", answer.get("reason").asText());
        }
      }
      for (int i = 0; i < 3; i++) {
        try (WsClient guesser = WsClient.connect(node.port())) {
          JsonNode answer = guesser.resume(id, "r_guess" + i, 0);
          assertEquals("invalid-token", answer.get("reason").asText());
          assertNotEquals(id, answer.get("sessionId").asText());
        }
      }
      try (WsClient guesser = WsClient.connect(node.port())) {
        guesser.send("{\"type\":\"resume\",\"sessionId\":\"" + id + "\",\"resumeToken\":\"r_guess9\",\"lastSeq\":0}");
        guesser.expectError("rate-limited");
        guesser.expectNoFrame(Duration.ofMillis(300));
      }
      // The owner never noticed: same connection, same generation, no takeover.
      owner.send("{\"type\":\"ping\"}");
      owner.expect("pong");
      JsonNode after = api.get("/api/sessions/" + id).json();
      assertEquals(before.get("generation"), after.get("generation"));
      assertEquals(0, after.get("takeovers").asLong());
      assertEquals("attached", after.get("state").asText());
    }
  }

  @Test
  void garbageOnLiveSocketsNeverCorruptsASession() {
    Random random = new Random(42);
    try (WsClient victim = WsClient.connect(node.port())) {
      JsonNode welcome = victim.hello("victim");
      String id = welcome.get("sessionId").asText();
      node.api().publishToSession(id, "{\"n\":1}");
      victim.expect("msg");

      for (int c = 0; c < 60; c++) {
        try (WsClient attacker = WsClient.connect(node.port())) {
          if (c % 2 == 0) attacker.hello("attacker-" + c);
          for (int f = 0; f < 15 && !attacker.isClosed(); f++) attacker.send(garbage(random, id));
          // Whatever it sent, the server answered with frames or closed it with a contract code.
          if (attacker.isClosed()) {
            int code = attacker.awaitClose();
            assertTrue(code == 4003 || code == 4005 || code == 1000, "close code " + code);
          }
        } catch (Exception e) {
          // a socket the server closed mid-send: fine
        }
        victim.send("{\"type\":\"ping\"}");
        victim.expect("pong");
      }
      JsonNode state = node.api().get("/api/sessions/" + id).json();
      assertEquals("attached", state.get("state").asText());
      assertEquals(1, state.get("lastSeq").asLong());
      assertEquals(0, state.get("takeovers").asLong());
      node.api().publishToSession(id, "{\"n\":2}");
      assertEquals(2, victim.expect("msg").get("seq").asLong());
    }
  }

  private static String garbage(Random random, String knownSessionId) {
    return switch (random.nextInt(9)) {
      case 0 -> "{\"type\":\"resume\",\"sessionId\":\"" + knownSessionId + "\",\"resumeToken\":\"r_" + random.nextInt() + "\",\"lastSeq\":" + random.nextInt(100) + "}";
      case 1 -> "{\"type\":\"send\",\"cseq\":" + random.nextInt(5) + ",\"to\":\"session:s_elsewhere\",\"data\":" + random.nextInt() + "}";
      case 2 -> "{\"type\":\"ack\",\"seq\":" + (random.nextBoolean() ? "-1" : "99999999999999999999999") + "}";
      case 3 -> "[".repeat(random.nextInt(3000));
      case 4 -> new String(randomBytes(random, 200), StandardCharsets.ISO_8859_1);
      case 5 -> "{\"type\":\"join\",\"room\":\"" + "r".repeat(random.nextInt(300)) + "\"}";
      case 6 -> "{\"type\":\"bye\"}";
      case 7 -> "{\"type\":\"hello\",\"user\":" + random.nextInt() + "}";
      default -> "{\"type\":\"send\",\"cseq\":1,\"to\":\"room:x\",\"data\":\"" + "z".repeat(20000) + "\"}";
    };
  }

  private static byte[] randomBytes(Random random, int n) {
    byte[] bytes = new byte[n];
    random.nextBytes(bytes);
    return bytes;
  }

  @Test
  void garbageApiCallsGetClientErrorsNeverServerErrors() {
    Random random = new Random(7);
    String[] paths = {
      "/api/sessions/%s/messages", "/api/users/%s/messages", "/api/rooms/%s/messages", "/api/sessions/%s",
      "/api/sessions/%s/messages/%s", "/api/%s", "/%s", "/api/messages"
    };
    String[] bodies = {
      "", "{", "null", "[]", "{\"data\":", "{\"data\":1}", "{\"nodata\":1}", "\u0000\u0001", "{\"data\":" + "[".repeat(5000) + "}",
      "{\"data\":\"" + "\\ud800" + "\"}", "9".repeat(500),
      // batch publish shapes
      "{\"messages\":", "{\"messages\":\"x\"}", "{\"messages\":[{}]}", "{\"messages\":[null]}",
      "{\"messages\":[{\"sessionId\":\"s_1\",\"data\":1}]}", "{\"messages\":[{\"room\":[],\"data\":1}]}",
      "{\"messages\":[" + "{\"userId\":\"u\",\"data\":1},".repeat(2000) + "{}]}",
      "{\"messages\":[{\"userId\":\"u\",\"data\":" + "[".repeat(5000) + "}]}"
    };
    for (int i = 0; i < 600; i++) {
      String segment = switch (random.nextInt(4)) {
        case 0 -> "s_" + random.nextInt(1000);
        case 1 -> "%2e%2e";
        case 2 -> "x".repeat(random.nextInt(300) + 1);
        default -> "..%00";
      };
      String path = String.format(paths[random.nextInt(paths.length)], segment, random.nextInt());
      long t0 = System.nanoTime();
      int method = random.nextInt(3);
      int body = method == 0 ? random.nextInt(bodies.length) : -1;
      Api.Response r;
      try {
        r = switch (method) {
          case 0 -> node.api().post(path, bodies[body]);
          case 1 -> node.api().get(path);
          default -> node.api().delete(path);
        };
      } catch (RuntimeException e) {
        throw new AssertionError("request " + i + " (method " + method + ", body " + body + ") to " + path + " failed", e);
      }
      long ms = (System.nanoTime() - t0) / 1_000_000;
      if (ms > 300) System.out.println("SLOW " + ms + " ms method " + method + " " + path + " -> " + r.status());
      assertTrue(r.status() < 500 || r.status() == 503, () -> path + " answered " + r.status() + " " + r.body());
      // (/api/%2e%2e is /, the demo page: that one is HTML by right.)
      if (path.startsWith("/api") && !path.contains("%2e") && r.status() != 204) {
        assertTrue(r.body().startsWith("{"), () -> path + " gave a non-JSON answer: " + r.status() + " " + r.body().substring(0, Math.min(80, r.body().length())));
      }
    }
    assertEquals(200, node.api().get("/health/alive").status());
  }

  /**
   * Every connection starts in one stage that reads the request line and hands HTTP connections
   * to pekko-http with the bytes read so far. Requests cut at random points (the cut may fall
   * inside the request line, between head and body, or inside a WebSocket frame), several of them
   * pipelined on one connection, sometimes followed by a half-close: every request is answered,
   * in order, the connection goes on serving, and every upgrade is welcomed.
   */
  @Test
  void requestsCutAtRandomPointsAndPipelinedAreAllAnsweredInOrder() throws Exception {
    Random random = new Random(11);
    int port = node.port();
    for (int round = 0; round < 120; round++) {
      try (RawWebSocket connection = RawWebSocket.connect(port)) {
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        if (random.nextInt(4) == 0) {
          bytes.write(RawWebSocket.request("GET", "/ws", RawWebSocket.upgradeHeaders(port, RawWebSocket.newKey())));
          bytes.write(RawWebSocket.frame(RawWebSocket.TEXT, "{\"type\":\"hello\",\"user\":\"cut-%d\"}".formatted(round).getBytes(StandardCharsets.UTF_8)));
          writeInRandomPieces(connection, bytes.toByteArray(), random);
          RawWebSocket.HttpHead upgraded = connection.readHead();
          assertEquals(101, upgraded.status(), () -> "upgrade: " + upgraded);
          String welcome = connection.readText();
          assertTrue(welcome.contains("\"welcome\""), welcome);
          continue;
        }
        int requests = 1 + random.nextInt(4);
        int[] expected = new int[requests];
        for (int i = 0; i < requests; i++) {
          switch (random.nextInt(4)) {
            case 0 -> {
              bytes.write(RawHttp.get(port, "/health/alive"));
              expected[i] = 200;
            }
            case 1 -> {
              bytes.write(RawHttp.post(port, "/api/sessions/s_nobody/messages", "{\"data\":" + random.nextInt() + "}"));
              expected[i] = 404;
            }
            case 2 -> {
              bytes.write(RawHttp.post(port, "/api/users/" + "u".repeat(200) + "/messages", "{\"data\":\"" + "y".repeat(random.nextInt(20_000)) + "\"}"));
              expected[i] = 400;
            }
            default -> {
              bytes.write(RawHttp.get(port, "/api/sessions/s_nobody"));
              expected[i] = 404;
            }
          }
        }
        writeInRandomPieces(connection, bytes.toByteArray(), random);
        boolean halfClose = random.nextBoolean();
        if (halfClose) connection.shutdownOutput();
        for (int i = 0; i < requests; i++) {
          RawHttp.Response answer = RawHttp.read(connection, Duration.ofSeconds(10));
          int index = i;
          assertEquals(expected[i], answer.status(), () -> "request " + index + " of " + requests + ": " + answer.head() + " " + answer.body());
        }
        // After a half-close only the answers are checked: a half-closed connection does not end
        // the exchange (RFC 9112, 9.6), and pekko-http closes it at once or at its idle timeout.
        if (!halfClose) RawHttp.assertStillServes(connection, port);
      }
    }
  }

  private static void writeInRandomPieces(RawWebSocket connection, byte[] bytes, Random random) throws InterruptedException {
    int at = 0;
    while (at < bytes.length) {
      int piece = Math.min(bytes.length - at, 1 + random.nextInt(random.nextBoolean() ? 8 : 4096));
      connection.write(java.util.Arrays.copyOfRange(bytes, at, at + piece));
      at += piece;
      // A pause lets the node read what came so far: small pieces then arrive as small reads.
      if (piece <= 8 ? random.nextBoolean() : random.nextInt(8) == 0) Thread.sleep(1 + random.nextInt(2));
    }
  }

  /**
   * The contract: a body over max-body-bytes gets 413, "answered, not a reset connection", also
   * while the client is still sending it (a close with the client's bytes unread would be a reset,
   * which can destroy the answer before the client reads it).
   */
  @Test
  void anOversizedBodyIsAnswered413WhileTheClientIsStillSendingIt() throws Exception {
    int declared = 4 * 1024 * 1024; // over the 1 MiB limit
    byte[] piece = new byte[64 * 1024];
    java.util.Arrays.fill(piece, (byte) 'x');
    for (int attempt = 0; attempt < 3; attempt++) {
      try (RawWebSocket connection = RawWebSocket.connect(node.port())) {
        connection.write(RawHttp.postHead(node.port(), "/api/users/u/messages", declared, Map.of()));
        // The whole body goes out from another thread while the answer is read here, as an HTTP
        // client library does; a write failing on a reset connection just ends that thread.
        Thread writer =
            new Thread(
                () -> {
                  try {
                    for (int sent = 0; sent < declared; sent += piece.length) connection.write(piece);
                  } catch (RuntimeException resetOrClosed) {
                    // what the assertions below are about
                  }
                });
        writer.setDaemon(true);
        writer.start();
        RawHttp.Response tooLarge = RawHttp.read(connection, Duration.ofSeconds(10));
        assertEquals(413, tooLarge.status(), () -> tooLarge.head() + " " + tooLarge.body());
        writer.join(10_000);
        assertEquals(RawWebSocket.End.EOF, connection.awaitEnd(Duration.ofSeconds(10)), "closed, not reset");
      }
    }
  }

  /**
   * pekko-http closes a connection whose response went out before its request's body was read: a
   * backend still writing a large body would see a reset instead of the answer.
   */
  @Test
  void anAnswerDecidedBeforeTheBodyArrivesWaitsForItAndTheConnectionStaysOpen() throws Exception {
    String largeBody = "{\"data\":\"" + "x".repeat(200_000) + "\"}";
    try (RawWebSocket connection = RawWebSocket.connect(node.port())) {
      // A user id longer than 128 characters is refused from the path alone.
      String path = "/api/users/" + "u".repeat(200) + "/messages";
      RawHttp.Response refused =
          RawHttp.postHeadThenBody(connection, node.port(), path, Map.of(), largeBody, Duration.ofMillis(300));
      assertEquals(400, refused.status(), () -> refused.head() + " " + refused.body());
      assertTrue(refused.body().contains("\"bad-request\""), refused::body);
      assertFalse(refused.head().headerHasToken("Connection", "close"), () -> "closed: " + refused.head());
      RawHttp.assertStillServes(connection, node.port());
    }
  }

  @Test
  void slowRequestsAreCutByTheIdleTimeout() throws Exception {
    try (TetherNode strict =
            TestNodes.start(
                TestDatabase.newDatabase(),
                Map.of("tether.http.idle-timeout", "2s", "tether.gateway.heartbeat.timeout", "1s"))) {
      // The WebSocket's upgrade request (its own deadline: the handshake timeout) and an HTTP
      // request (pekko-http's pipeline, the idle timeout) take different paths through the listener.
      slowRequestIsCut(strict.port(), "/ws");
      slowRequestIsCut(strict.port(), "/health/ready");
    }
  }

  private static void slowRequestIsCut(int port, String path) throws Exception {
    try (Socket socket = new Socket(InetAddress.getLoopbackAddress(), port)) {
      socket.setSoTimeout(10_000);
      OutputStream out = socket.getOutputStream();
      out.write(("GET " + path + " HTTP/1.1\r\nHost: localhost\r\n").getBytes(StandardCharsets.US_ASCII));
      out.flush();
      long start = System.nanoTime();
      InputStream in = socket.getInputStream();
      // The server gives up on the unfinished request and closes (or answers 408) within the timeout.
      try {
        while (in.read() >= 0) {
          // drain whatever it says
        }
      } catch (java.net.SocketException reset) {
        // closed with a reset: cut all the same
      }
      long waited = Duration.ofNanos(System.nanoTime() - start).toMillis();
      assertTrue(waited < 8000, path + ": closed after " + waited + " ms");
    }
  }

  @Test
  void heapStaysBoundedWhileAClientStopsReading() throws Exception {
    JsonNode welcome;
    try (WsClient setup = WsClient.connect(node.port())) {
      welcome = setup.hello("stalled");
    }
    String id = welcome.get("sessionId").asText();
    String payload = "\"" + "m".repeat(16000) + "\"";
    try (WsClient stalled = WsClient.connectWithoutReading(node.port())) {
      stalled.read(1);
      stalled.resume(welcome, 0);
      long before = usedHeapAfterGc();
      // 3000 x 16 kB = 48 MB sent to a client that reads nothing (it also stops pinging, so
      // the heartbeat or the slow-consumer rule will close it; the session keeps a bounded outbox).
      for (int i = 0; i < 3000; i++) {
        Api.Response r = node.api().post("/api/sessions/" + id + "/messages", "{\"data\":" + payload + "}");
        assertEquals(202, r.status());
      }
      long after = usedHeapAfterGc();
      long grewMb = (after - before) / (1024 * 1024);
      assertTrue(grewMb < 24, "heap grew by " + grewMb + " MB for 48 MB sent to a stalled reader");
      JsonNode state = node.api().get("/api/sessions/" + id).json();
      assertTrue(state.get("outbox").get("bytes").asLong() <= 1024 * 1024 + 64 * 1000, "outbox bounded by max-bytes");
      assertFalse(state.get("lost").asLong() == 0, "overflow dropped the oldest");
    }
  }

  private static long usedHeapAfterGc() throws InterruptedException {
    for (int i = 0; i < 3; i++) {
      System.gc();
      Thread.sleep(200);
    }
    return ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
  }
}
