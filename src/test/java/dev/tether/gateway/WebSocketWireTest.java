package dev.tether.gateway;

import static dev.tether.testkit.RawWebSocket.BINARY;
import static dev.tether.testkit.RawWebSocket.CLOSE;
import static dev.tether.testkit.RawWebSocket.CONTINUATION;
import static dev.tether.testkit.RawWebSocket.PING;
import static dev.tether.testkit.RawWebSocket.PONG;
import static dev.tether.testkit.RawWebSocket.TEXT;
import static dev.tether.testkit.RawWebSocket.frame;
import static dev.tether.testkit.RawWebSocket.textFrame;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.tether.testkit.OneNode;
import dev.tether.testkit.RawHttp;
import dev.tether.testkit.RawWebSocket;
import dev.tether.testkit.RawWebSocket.End;
import dev.tether.testkit.RawWebSocket.Frame;
import dev.tether.testkit.RawWebSocket.HttpHead;
import dev.tether.testkit.RawWebSocket.Length;
import dev.tether.testkit.WsClient;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The gateway's WebSocket wire behaviour, pinned byte by byte over a raw socket (RFC 6455 by hand,
 * see {@link RawWebSocket}), independently of the implementation underneath ({@link
 * WebSocketStage}). Written against pekko-http's WebSocket stack first, which it replaced: all of
 * it held there but {@link #helloPipelinedWithTheUpgradeInOneWrite} (pekko-http lost bytes pipelined
 * after the upgrade head) and {@link #upgradeWithVersion8NamesTheSupportedVersion} (RFC 6455 4.4: no
 * Sec-WebSocket-Version in the refusal). One node for the whole class, with a short handshake
 * timeout (the 4001 case waits for it); every other case sends its handshake at once.
 */
@Timeout(value = 15, unit = TimeUnit.SECONDS)
class WebSocketWireTest {
  private static final Duration HANDSHAKE_TIMEOUT = Duration.ofSeconds(2);
  /** tether.gateway.limits.max-frame-bytes: the default, 64 KiB. */
  private static final int MAX_FRAME_BYTES = 64 * 1024;

  @RegisterExtension
  static final OneNode node =
      new OneNode(Map.of("tether.gateway.handshake-timeout", HANDSHAKE_TIMEOUT.toMillis() + "ms"));

  private static final ObjectMapper JSON = new ObjectMapper();

  private static String hello(String user) {
    return "{\"type\":\"hello\",\"user\":\"" + user + "\",\"client\":\"test/1\"}";
  }

  private static JsonNode json(String text) {
    try {
      return JSON.readTree(text);
    } catch (Exception e) {
      throw new AssertionError("not JSON: " + text, e);
    }
  }

  /** The next frame must be a text frame holding a JSON object of {@code type}. */
  private static JsonNode expect(RawWebSocket ws, String type) {
    JsonNode frame = json(ws.readText());
    assertEquals(type, frame.path("type").asText(), () -> "expected a " + type + " frame, got " + frame);
    return frame;
  }

  private static void expectError(RawWebSocket ws, String code) {
    JsonNode error = expect(ws, "error");
    assertEquals(code, error.path("code").asText(), () -> "error frame " + error);
  }

  private static void expectWelcome(RawWebSocket ws, String user) {
    JsonNode welcome = expect(ws, "welcome");
    assertTrue(welcome.path("sessionId").asText().startsWith("s_"), () -> "welcome " + welcome);
    assertEquals(user, welcome.path("user").asText(), () -> "welcome " + welcome);
  }

  /** A socket upgraded and welcomed to a new session of {@code user}. */
  private static RawWebSocket openWelcomed(String user) {
    RawWebSocket ws = RawWebSocket.open(node.port());
    try {
      ws.sendText(hello(user));
      expectWelcome(ws, user);
      return ws;
    } catch (RuntimeException | AssertionError failure) {
      ws.close();
      throw failure;
    }
  }

  /** A protocol-level ping is answered with a pong carrying its payload. */
  private static void expectProtocolPong(RawWebSocket ws, String payload) {
    byte[] bytes = payload.getBytes(StandardCharsets.UTF_8);
    ws.write(frame(PING, bytes));
    Frame pong = ws.readFrame();
    assertEquals(PONG, pong.opcode(), () -> "expected a pong, got " + pong);
    assertTrue(pong.fin(), "a control frame is never fragmented");
    assertEquals(0, pong.rsv());
    assertArrayEquals(bytes, pong.payload(), () -> "pong payload " + pong);
  }

  /**
   * The server fails the connection for a protocol error: a close frame with {@code code}, then the
   * end of the TCP connection; or, as RFC 6455 (section 7.1.7) also allows, the end of the TCP
   * connection at once. Nothing else may come first.
   */
  private static void expectFailed(RawWebSocket ws, int code) {
    Frame frame = ws.readFrameOrNull();
    if (frame != null) {
      assertEquals(CLOSE, frame.opcode(), () -> "expected a close " + code + " (or a TCP close), got " + frame);
      assertEquals(code, frame.closeCode(), () -> "close frame " + frame);
      ws.tryWrite(frame(CLOSE, RawWebSocket.closePayload(code, ""))); // the server may be gone already
    }
    assertNotEquals(End.TIMEOUT, ws.awaitEnd(Duration.ofSeconds(5)), "the server must close the connection");
  }

  /** The server closes with {@code code}: a close frame, answered by ours, then the end of the connection. */
  private static Frame expectClose(RawWebSocket ws, int code) {
    Frame close = ws.readClose();
    assertEquals(code, close.closeCode(), () -> "close frame " + close);
    ws.write(frame(CLOSE, RawWebSocket.closePayload(code, "")));
    assertEquals(End.EOF, ws.awaitEnd(Duration.ofSeconds(5)), "the server closes TCP after the close handshake");
    return close;
  }

  // -------------------------------------------------------------------------------------------
  // 1-4: the upgrade and the framing of what the client sends

  /** 1. A valid upgrade: 101 with the right accept key, then hello → welcome. */
  @Test
  void validUpgradeThenHelloGetsWelcome() {
    // RFC 6455, section 1.3: the worked example, to check the test's own arithmetic.
    assertEquals("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", RawWebSocket.acceptFor("dGhlIHNhbXBsZSBub25jZQ=="));

    try (RawWebSocket ws = RawWebSocket.connect(node.port())) {
      String key = RawWebSocket.newKey();
      Map<String, String> headers = RawWebSocket.upgradeHeaders(node.port(), key);
      // An extension offer the server does not take: it must not answer one (its frames then
      // never carry RSV bits, which readText checks).
      headers.put("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");
      ws.write(RawWebSocket.request("GET", "/ws", headers));
      HttpHead head = ws.readHead();
      RawWebSocket.assertUpgraded(head, key);
      assertNull(head.header("Sec-WebSocket-Extensions"), () -> "no extension was negotiated: " + head);

      ws.sendText(hello("wire-1"));
      expectWelcome(ws, "wire-1");
    }
  }

  /**
   * 2. The upgrade and the first frame in one write: the frame's bytes right after the head.
   *
   * <p>pekko-http's stack failed this one: it fed the bytes after the request head to its HTTP
   * parser, the hello was lost, and the handshake timeout closed the socket with 4001. RFC 6455
   * (section 4.1) tells clients to wait for the 101 before sending, so this is a robustness
   * requirement of ours, not the RFC's.
   */
  @Test
  void helloPipelinedWithTheUpgradeInOneWrite() {
    try (RawWebSocket ws = RawWebSocket.connect(node.port())) {
      String key = RawWebSocket.newKey();
      // Padded past 125 bytes: its length goes in the 16-bit form.
      String hello =
          "{\"type\":\"hello\",\"user\":\"wire-2\",\"client\":\"test/1\",\"pad\":\"" + "p".repeat(200) + "\"}";
      byte[] helloFrame = textFrame(hello);
      assertEquals(126, helloFrame[1] & 0x7F);
      ws.write(RawWebSocket.request("GET", "/ws", RawWebSocket.upgradeHeaders(node.port(), key)), helloFrame);
      RawWebSocket.assertUpgraded(ws.readHead(), key);
      expectWelcome(ws, "wire-2");
    }
  }

  /** 3. An upgrade request that trickles in one byte at a time. */
  @Test
  void upgradeWrittenOneByteAtATime() {
    try (RawWebSocket ws = RawWebSocket.connect(node.port())) {
      String key = RawWebSocket.newKey();
      byte[] request = RawWebSocket.request("GET", "/ws", RawWebSocket.upgradeHeaders(node.port(), key));
      assertTrue(request.length < 400);
      long start = System.nanoTime();
      ws.writeByteByByte(request, Duration.ofMillis(2));
      assertTrue(System.nanoTime() - start < Duration.ofSeconds(2).toNanos(), "the trickle takes under 2 s");
      RawWebSocket.assertUpgraded(ws.readHead(), key);
      ws.sendText(hello("wire-3"));
      expectWelcome(ws, "wire-3");
    }
  }

  /** 4. A text message in three fragments is one frame of the protocol. */
  @Test
  void fragmentedTextMessageIsOneFrame() {
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      byte[] hello = hello("wire-4").getBytes(StandardCharsets.UTF_8);
      int a = 10;
      int b = 25;
      ws.write(frame(false, TEXT, Arrays.copyOfRange(hello, 0, a), true, Length.MINIMAL));
      ws.write(frame(false, CONTINUATION, Arrays.copyOfRange(hello, a, b), true, Length.MINIMAL));
      ws.write(frame(true, CONTINUATION, Arrays.copyOfRange(hello, b, hello.length), true, Length.MINIMAL));
      expectWelcome(ws, "wire-4");
    }
  }

  /**
   * RFC 6455, section 5.4: control frames may come between the fragments of a message, and are
   * handled at once; the message is still assembled.
   */
  @Test
  void pingBetweenFragmentsIsAnsweredAndTheMessageStillAssembled() {
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      byte[] hello = hello("wire-4b").getBytes(StandardCharsets.UTF_8);
      int a = 12;
      ws.write(frame(false, TEXT, Arrays.copyOfRange(hello, 0, a), true, Length.MINIMAL));
      expectProtocolPong(ws, "between");
      ws.write(frame(true, CONTINUATION, Arrays.copyOfRange(hello, a, hello.length), true, Length.MINIMAL));
      expectWelcome(ws, "wire-4b");
    }
  }

  // -------------------------------------------------------------------------------------------
  // 5-6: control frames and binary frames on an open session

  /** 5. A protocol ping is answered with a pong carrying the same payload. */
  @Test
  void pingIsAnsweredWithPongCarryingItsPayload() {
    try (RawWebSocket ws = openWelcomed("wire-5")) {
      expectProtocolPong(ws, "abc");
      expectProtocolPong(ws, "");
      // The session goes on: the protocol's own ping.
      ws.sendText("{\"type\":\"ping\"}");
      expect(ws, "pong");
    }
  }

  /** 6. A binary frame gets `bad-frame`, and the session stays usable. */
  @Test
  void binaryFrameGetsBadFrameAndTheSessionGoesOn() {
    try (RawWebSocket ws = openWelcomed("wire-6")) {
      ws.write(frame(BINARY, new byte[] {1, 2, 3}));
      expectError(ws, "bad-frame");
      expectProtocolPong(ws, "still-here");
      ws.sendText("{\"type\":\"ping\"}");
      expect(ws, "pong");
    }
  }

  // -------------------------------------------------------------------------------------------
  // 7-9: protocol errors

  /** 7. RFC 6455, section 5.1: a server must fail the connection on an unmasked client frame. */
  @Test
  void unmaskedClientFrameFailsTheConnectionWith1002() {
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      ws.write(frame(true, TEXT, hello("wire-7").getBytes(StandardCharsets.UTF_8), false, Length.MINIMAL));
      expectFailed(ws, 1002);
    }
  }

  /** 8. A frame of max-frame-bytes is taken; one byte more gets `frame-too-large` and close 4003. */
  @Test
  void frameOverTheLimitGetsFrameTooLargeAndClose4003() {
    try (RawWebSocket ws = openWelcomed("wire-8")) {

      String prefix = "{\"type\":\"ping\",\"pad\":\"";
      String suffix = "\"}";
      String atLimit = prefix + "x".repeat(MAX_FRAME_BYTES - prefix.length() - suffix.length()) + suffix;
      assertEquals(MAX_FRAME_BYTES, atLimit.getBytes(StandardCharsets.UTF_8).length);
      ws.sendText(atLimit);
      expect(ws, "pong");

      String overLimit = prefix + "x".repeat(MAX_FRAME_BYTES + 1 - prefix.length() - suffix.length()) + suffix;
      byte[] tooLarge = textFrame(overLimit);
      assertEquals(127, tooLarge[1] & 0x7F, "over 65535 bytes: the 64-bit length form");
      ws.write(tooLarge);
      expectError(ws, "frame-too-large");
      expectClose(ws, 4003);
    }
  }

  /**
   * 8'. A continuation claiming 2^63 - 1 bytes (the largest length the 64-bit form allows) is a
   * message over the limit like any other: the length arithmetic must not overflow into a
   * negative size that passes the check.
   */
  @Test
  void aContinuationClaimingA63BitLengthIsTooLarge() {
    try (RawWebSocket ws = openWelcomed("wire-8b")) {
      byte[] start = frame(false, TEXT, "{\"type\":".getBytes(StandardCharsets.UTF_8), true, Length.MINIMAL);
      byte[] hugeContinuation = {
        (byte) 0x80, // FIN, continuation
        (byte) (0x80 | 127), // masked, 64-bit length
        0x7F, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF, (byte) 0xFF,
        1, 2, 3, 4 // the mask; no payload follows
      };
      ws.write(start, hugeContinuation);
      expectError(ws, "frame-too-large");
      Frame close = ws.readClose();
      assertEquals(4003, close.closeCode(), () -> "close frame " + close);
      // The server skips the claimed payload, so our close frame cannot reach it: it ends the
      // connection at its close timeout (a reset is allowed: the client never took part).
      ws.tryWrite(frame(CLOSE, RawWebSocket.closePayload(4003, "")));
      assertNotEquals(End.TIMEOUT, ws.awaitEnd(Duration.ofSeconds(8)), "the server must end the connection");
    }
  }

  /** 8''. A ping flood from a client that never reads stops being read: pongs do not pile up in memory. */
  @Test
  void pingsFromAClientThatNeverReadsAreNotReadWithoutBound() throws Exception {
    try (RawWebSocket ws = openWelcomed("wire-flood")) {
      long limit = 1L << 30; // 1 GiB: what a server buffering every pong would read in seconds
      AtomicLong written = floodInBackground(ws, frame(PING, new byte[125]), limit);
      // TCP's buffers fill both ways, then the server stops reading and our writes block.
      long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
      long before = -1;
      while (System.nanoTime() < deadline) {
        Thread.sleep(1000);
        long now = written.get();
        if (now == before) break;
        before = now;
      }
      long stalledAt = written.get();
      Thread.sleep(1000);
      assertEquals(stalledAt, written.get(), "the server must stop reading pings whose pongs cannot be written");
      assertTrue(stalledAt < limit, () -> "the writer never blocked: " + stalledAt + " bytes of pings read");
    }
    // The gateway is unharmed: another client still gets its welcome.
    try (RawWebSocket other = RawWebSocket.open(node.port())) {
      other.sendText(hello("wire-after-flood"));
      expectWelcome(other, "wire-after-flood");
    }
  }

  /**
   * Writes {@code frame} in bursts of 500 from a daemon thread until {@code limit} bytes are
   * written or a write fails; returns the count of bytes written so far, updated as it goes.
   */
  private static AtomicLong floodInBackground(RawWebSocket ws, byte[] frame, long limit) {
    byte[] burst = new byte[frame.length * 500];
    for (int i = 0; i < 500; i++) System.arraycopy(frame, 0, burst, i * frame.length, frame.length);
    AtomicLong written = new AtomicLong();
    Thread writer =
        new Thread(
            () -> {
              while (written.get() < limit && ws.tryWrite(burst)) written.addAndGet(burst.length);
            });
    writer.setDaemon(true);
    writer.start();
    return written;
  }

  /**
   * 8'''. The same flood of the SDKs' {@code {"type":"ping"}}, which the stage answers without its
   * actor: once the pongs fill the outgoing buffer the actor gets the ping, closes the slow
   * consumer with 4009 and releases its session, which resumes.
   */
  @Test
  void appPingsFromAClientThatNeverReadsCloseItWith4009AndKeepTheSession() throws Exception {
    JsonNode welcome;
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      ws.sendText(hello("wire-app-flood"));
      welcome = expect(ws, "welcome");
      long limit = 1L << 28;
      AtomicLong written = floodInBackground(ws, RawWebSocket.textFrame("{\"type\":\"ping\"}"), limit);
      // Only now read: every pong the kernel held, then the close.
      Frame frame;
      long pongs = 0;
      do {
        frame = ws.readFrame();
        if (frame.opcode() == TEXT) {
          assertEquals("pong", JSON.readTree(frame.text()).path("type").asText(), frame::toString);
          pongs++;
        }
      } while (frame.opcode() != CLOSE);
      assertEquals(4009, frame.closeCode(), frame.toString());
      assertTrue(pongs > 0, "the pings were answered until the buffer was full");
      assertTrue(written.get() < limit, "the flood was not read without bound");
    }
    node.api().awaitSessionState(welcome.path("sessionId").asText(), "detached", Duration.ofSeconds(10));
    try (WsClient again = WsClient.connect(node.port())) {
      assertTrue(again.resume(welcome, 0).get("resumed").asBoolean());
    }
  }

  /**
   * 9. RFC 6455, section 8.1: a text frame that is not valid UTF-8 fails the connection with 1007
   * (invalid frame payload data).
   */
  @Test
  void invalidUtf8FailsTheConnectionWith1007() {
    try (RawWebSocket ws = openWelcomed("wire-9")) {
      byte[] prefix = "{\"type\":\"ping\",\"x\":\"".getBytes(StandardCharsets.US_ASCII);
      byte[] invalid = {(byte) 0xC3, (byte) 0x28}; // a 2-byte lead byte, then no continuation byte
      byte[] suffix = "\"}".getBytes(StandardCharsets.US_ASCII);
      byte[] payload = new byte[prefix.length + invalid.length + suffix.length];
      System.arraycopy(prefix, 0, payload, 0, prefix.length);
      System.arraycopy(invalid, 0, payload, prefix.length, invalid.length);
      System.arraycopy(suffix, 0, payload, prefix.length + invalid.length, suffix.length);
      ws.write(frame(TEXT, payload));
      expectClose(ws, 1007);
    }
  }

  /**
   * More of RFC 6455's "fail the WebSocket connection" cases (sections 5.2, 5.4, 5.5, 7.4): each
   * gets close 1002 (protocol error), or the TCP connection closed at once, and nothing else.
   */
  @ParameterizedTest(name = "{0}")
  @MethodSource("protocolErrors")
  void protocolErrorFailsTheConnectionWith1002(String what, byte[] bytes) {
    try (RawWebSocket ws = openWelcomed("wire-proto")) {
      ws.write(bytes);
      expectFailed(ws, 1002);
    }
  }

  /** 9'. RFC 6455, section 5.5.1: a close reason that is not valid UTF-8 fails the connection with 1007. */
  @Test
  void closeWithAnInvalidUtf8ReasonFailsTheConnectionWith1007() {
    try (RawWebSocket ws = openWelcomed("wire-9b")) {
      ws.write(frame(CLOSE, new byte[] {0x03, (byte) 0xE8, (byte) 0xC3, 0x28}));
      expectFailed(ws, 1007);
    }
  }

  /** 9''. After a protocol error the server still reads: the client's close ends the connection at once. */
  @Test
  void afterAProtocolErrorTheClientsCloseEndsTheConnectionAtOnce() {
    try (RawWebSocket ws = openWelcomed("wire-9c")) {
      ws.write(frame(0x3, new byte[] {1})); // reserved opcode
      Frame close = ws.readClose();
      assertEquals(1002, close.closeCode(), () -> "close frame " + close);
      long start = System.nanoTime();
      ws.write(frame(CLOSE, RawWebSocket.closePayload(1002, "")));
      assertEquals(End.EOF, ws.awaitEnd(Duration.ofSeconds(5)), "the server closes TCP after the close handshake");
      long waited = System.nanoTime() - start;
      assertTrue(waited < Duration.ofSeconds(2).toNanos(), () -> "closed only after " + waited / 1_000_000 + " ms: the close was not read");
    }
  }

  static Stream<Arguments> protocolErrors() {
    byte[] ping = "{\"type\":\"ping\"}".getBytes(StandardCharsets.UTF_8);
    byte[] rsv1 = frame(TEXT, ping);
    rsv1[0] |= 0x40; // RSV1 without a negotiated extension
    return Stream.of(
        Arguments.of("reserved data opcode 0x3", frame(0x3, ping)),
        Arguments.of("reserved control opcode 0xB", frame(0xB, new byte[0])),
        Arguments.of("RSV1 set without an extension", rsv1),
        Arguments.of("continuation with no message started", frame(CONTINUATION, ping)),
        Arguments.of(
            "new text frame while a fragmented message is open",
            concat(frame(false, TEXT, ping, true, Length.MINIMAL), frame(TEXT, ping))),
        Arguments.of("fragmented ping", frame(false, PING, new byte[] {1}, true, Length.MINIMAL)),
        Arguments.of("ping with a 126-byte payload", frame(PING, new byte[126])),
        Arguments.of("close with a 1-byte payload", frame(CLOSE, new byte[] {3})),
        Arguments.of("close with code 1005 (never sent on the wire)", frame(CLOSE, RawWebSocket.closePayload(1005, ""))));
  }

  private static byte[] concat(byte[] a, byte[] b) {
    byte[] both = Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, both, a.length, b.length);
    return both;
  }

  // -------------------------------------------------------------------------------------------
  // 10-11: the close handshake, both ways

  /** 10. The client closes: the server answers with a close frame, then closes TCP. */
  @Test
  void clientCloseIsAnsweredThenTcpClosed() {
    try (RawWebSocket ws = openWelcomed("wire-10")) {
      ws.write(frame(CLOSE, RawWebSocket.closePayload(1000, "done")));
      Frame close = ws.readClose();
      assertEquals(1000, close.closeCode(), () -> "the server echoes the code: " + close);
      assertEquals(End.EOF, ws.awaitEnd(Duration.ofSeconds(5)), "then the server closes TCP");
    }
  }

  /** 11. A close the server starts carries Tether's code: the handshake timeout's 4001. */
  @Test
  void handshakeTimeoutClosesWith4001() {
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      long start = System.nanoTime();
      Frame close = expectClose(ws, 4001);
      long waited = System.nanoTime() - start;
      assertTrue(waited >= HANDSHAKE_TIMEOUT.dividedBy(2).toNanos(), "not long before the timeout: " + waited);
      assertEquals("handshake timeout", close.closeReason());
    }
  }

  // -------------------------------------------------------------------------------------------
  // 12: requests that are not WebSocket upgrades

  private static HttpHead answer(String method, String path, Map<String, String> headers) {
    try (RawWebSocket http = RawWebSocket.connect(node.port())) {
      http.write(RawWebSocket.request(method, path, headers));
      HttpHead head = http.readHead();
      assertNotEquals(101, head.status(), () -> method + " " + path + " must not switch protocols: " + head);
      assertNull(head.header("Sec-WebSocket-Accept"), () -> "no accept key in " + head);
      return head;
    }
  }

  private static void assertClientError(HttpHead head) {
    assertTrue(head.status() >= 400 && head.status() < 500, () -> "expected a 4xx, got " + head);
  }

  /** 12a. An upgrade without Sec-WebSocket-Key is a bad request. */
  @Test
  void upgradeWithoutKeyIs400() {
    Map<String, String> headers = RawWebSocket.upgradeHeaders(node.port(), "unused");
    headers.remove("Sec-WebSocket-Key");
    assertEquals(400, answer("GET", "/ws", headers).status());
  }

  /** 12b. RFC 6455, section 4.2.2: a version the server does not speak gets a 4xx (426 or 400). */
  @Test
  void upgradeWithVersion8IsRefused() {
    Map<String, String> headers = RawWebSocket.upgradeHeaders(node.port(), RawWebSocket.newKey());
    headers.put("Sec-WebSocket-Version", "8");
    assertClientError(answer("GET", "/ws", headers));
  }

  /**
   * 12b'. RFC 6455, sections 4.2.2 and 4.4: the refusal of an unsupported version MUST carry a
   * Sec-WebSocket-Version header naming the versions the server speaks (13).
   *
   * <p>pekko-http's stack failed this one: the version-8 request was no upgrade to it, so it
   * answered 400 "Expected WebSocket Upgrade request" without the header.
   */
  @Test
  void upgradeWithVersion8NamesTheSupportedVersion() {
    Map<String, String> headers = RawWebSocket.upgradeHeaders(node.port(), RawWebSocket.newKey());
    headers.put("Sec-WebSocket-Version", "8");
    HttpHead head = answer("GET", "/ws", headers);
    assertTrue(head.headerHasToken("Sec-WebSocket-Version", "13"), () -> "Sec-WebSocket-Version: 13 missing in " + head);
  }

  /**
   * 13. Server frames of every length form (RFC 6455 section 5.2): a welcome (7- or 16-bit), then
   * messages of 200 bytes (16-bit) and of 100 KB (64-bit), each whole and in order.
   */
  @Test
  void messagesOfEveryLengthFormArriveWhole() {
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      ws.sendText(hello("wire-sizes"));
      String sessionId = expect(ws, "welcome").path("sessionId").asText();
      for (int size : new int[] {10, 200, 100_000}) {
        String data = "\"" + "x".repeat(size) + "\"";
        long seq = node.api().publishToSession(sessionId, data);
        JsonNode message = expect(ws, "msg");
        assertEquals(seq, message.path("seq").asLong());
        assertEquals(size, message.path("data").asText().length(), "data of " + size + " characters");
      }
    }
  }

  /** 13b. Text beyond ASCII (2-, 3- and 4-byte UTF-8) arrives intact both ways. */
  @Test
  void multiByteUtf8ArrivesIntactBothWays() {
    String user = "zoë-日本-\uD83D\uDE00";
    try (RawWebSocket ws = RawWebSocket.open(node.port())) {
      ws.sendText(hello(user));
      JsonNode welcome = expect(ws, "welcome");
      assertEquals(user, welcome.path("user").asText(), () -> "welcome " + welcome);
      String sessionId = welcome.path("sessionId").asText();
      ws.sendText("{\"type\":\"ping\",\"note\":\"" + user + "\"}");
      expect(ws, "pong");
      long seq = node.api().publishToSession(sessionId, "\"" + user + "\"");
      JsonNode message = expect(ws, "msg");
      assertEquals(seq, message.path("seq").asLong());
      assertEquals(user, message.path("data").asText());
    }
  }

  /** 12c. GET /ws without the upgrade headers, and POST /ws, are client errors. */
  @Test
  void plainGetAndPostOnWsAreClientErrors() {
    Map<String, String> plain = Map.of("Host", "127.0.0.1:" + node.port());
    assertClientError(answer("GET", "/ws", plain));
    Map<String, String> post = new java.util.LinkedHashMap<>(RawWebSocket.upgradeHeaders(node.port(), RawWebSocket.newKey()));
    post.put("Content-Length", "0");
    assertClientError(answer("POST", "/ws", post));
  }

  /** 12e. A connection that never completes its request line is answered 408 and closed (by the handshake timeout). */
  @Test
  void aConnectionWithoutARequestLineIsClosed() {
    try (RawWebSocket silent = RawWebSocket.connect(node.port())) {
      silent.write("GET /w".getBytes(StandardCharsets.US_ASCII)); // and never the rest of the line
      silent.setReadTimeout(HANDSHAKE_TIMEOUT.plusSeconds(4));
      HttpHead timedOut = silent.readHead();
      assertEquals(408, timedOut.status(), () -> "no request line in time: " + timedOut);
      silent.readBody(timedOut);
      assertNotEquals(End.TIMEOUT, silent.awaitEnd(Duration.ofSeconds(4)), "the gateway must close it");
    }
  }

  /**
   * 12g. An HTTP request whose first line arrives byte by byte is handed to the HTTP pipeline with
   * every byte read while the gateway was still deciding, and the connection then serves more.
   */
  @Test
  void anHttpRequestTricklingInIsServedWhole() {
    try (RawWebSocket http = RawWebSocket.connect(node.port())) {
      http.writeByteByByte(RawHttp.get(node.port(), "/health/alive"), Duration.ofMillis(1));
      RawHttp.Response alive = RawHttp.read(http, Duration.ofSeconds(10));
      assertEquals(200, alive.status(), () -> "trickled request: " + alive.head());
      assertTrue(alive.body().contains("alive"), alive::body);
      RawHttp.assertStillServes(http, node.port());
    }
  }

  /**
   * 12f. The gateway chooses between WebSocket and HTTP once per connection, at its first request:
   * an upgrade sent after an HTTP request on a kept-alive connection gets a 400 naming the rule,
   * and the connection is closed so that a retry opens a new one.
   */
  @Test
  void anUpgradeAfterAnHttpRequestOnTheSameConnectionIsRefused() {
    try (RawWebSocket http = RawWebSocket.connect(node.port())) {
      http.write(RawWebSocket.request("GET", "/health/alive", Map.of("Host", "127.0.0.1:" + node.port())));
      HttpHead health = http.readHead();
      assertEquals(200, health.status(), () -> "/health/alive: " + health);
      http.readBody(health);
      http.write(RawWebSocket.request("GET", "/ws", RawWebSocket.upgradeHeaders(node.port(), RawWebSocket.newKey())));
      HttpHead refused = http.readHead();
      assertEquals(400, refused.status(), () -> "upgrade on a reused connection: " + refused);
      assertTrue(refused.headerHasToken("Connection", "close"), () -> "Connection: close missing in " + refused);
      JsonNode body = json(new String(http.readBody(refused), StandardCharsets.UTF_8));
      assertEquals("upgrade-not-first", body.path("error").asText(), () -> "body " + body);
      assertEquals(End.EOF, http.awaitEnd(Duration.ofSeconds(5)), "the gateway closes the connection");
    }
  }

  /**
   * 12g. A connection's end costs no thread. The listener frees a connection slot when the
   * connection ends; done through pekko's CompletionStage, that continuation ran on the JDK's
   * async executor, which on a 2-core machine (as CI's) starts a new thread per task: one per
   * closed socket, 180,000 in a storm of 15,000 (docs/BENCHMARKS.md, eighth session). (On a
   * machine with more cores the JDK uses its common pool instead, and this cannot fail there.)
   */
  @Test
  void closedConnectionsStartNoThreads() {
    java.lang.management.ThreadMXBean threads = java.lang.management.ManagementFactory.getThreadMXBean();
    int connections = 100;
    Map<String, String> headers = Map.of("Host", "127.0.0.1:" + node.port(), "Connection", "close");
    long startedBefore = threads.getTotalStartedThreadCount();
    for (int i = 0; i < connections; i++) {
      try (RawWebSocket http = RawWebSocket.connect(node.port())) {
        http.write(RawWebSocket.request("GET", "/health/alive", headers));
        HttpHead head = http.readHead();
        assertEquals(200, head.status());
        http.readBody(head);
        assertEquals(End.EOF, http.awaitEnd(Duration.ofSeconds(5)));
      }
    }
    long started = threads.getTotalStartedThreadCount() - startedBefore;
    assertTrue(started < connections / 2, () -> started + " threads started for " + connections + " closed connections");
  }

  /** 12d. The same port still serves plain HTTP: health and the API. */
  @Test
  void healthAndApiStillAnswerOnTheSamePort() {
    Map<String, String> headers = Map.of("Host", "127.0.0.1:" + node.port(), "Connection", "close");
    try (RawWebSocket http = RawWebSocket.connect(node.port())) {
      http.write(RawWebSocket.request("GET", "/health/ready", headers));
      HttpHead head = http.readHead();
      assertEquals(200, head.status(), () -> "/health/ready: " + head);
      http.readBody(head);
    }
    try (RawWebSocket http = RawWebSocket.connect(node.port())) {
      http.write(RawWebSocket.request("GET", "/api/sessions?limit=1", headers));
      HttpHead head = http.readHead();
      assertEquals(200, head.status(), () -> "/api/sessions: " + head);
      JsonNode body = json(new String(http.readBody(head), StandardCharsets.UTF_8));
      assertTrue(body.path("sessions").isArray(), () -> "/api/sessions: " + body);
    }
  }
}
