package dev.tether.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.testkit.FaultProxy;
import dev.tether.testkit.OneNode;
import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** The Java client against a real gateway, through a proxy that cuts and stalls the link. */
class TetherClientTest {
  @RegisterExtension
  static final OneNode node =
      new OneNode(
          Map.of(
              "tether.gateway.heartbeat.interval", "300ms",
              "tether.gateway.heartbeat.timeout", "1500ms"));

  /** Records what a client tells its application. */
  static class Recorder implements TetherClient.Listener {
    final List<TetherClient.Message> messages = new CopyOnWriteArrayList<>();
    final List<TetherClient.State> states = new CopyOnWriteArrayList<>();
    final List<String> events = new CopyOnWriteArrayList<>();

    @Override
    public void onState(TetherClient.State from, TetherClient.State to) {
      states.add(to);
    }

    @Override
    public void onMessage(TetherClient.Message message) {
      messages.add(message);
    }

    @Override
    public void onResumed(int replay, long lost) {
      events.add("resumed");
    }

    @Override
    public void onSessionLost(String reason, long lost, String newSessionId) {
      events.add("session-lost:" + reason);
    }

    @Override
    public void onKicked(String reason) {
      events.add("kicked:" + reason);
    }

    List<Long> seqs() {
      List<Long> seqs = new ArrayList<>();
      for (TetherClient.Message m : messages) seqs.add(m.seq());
      return seqs;
    }
  }

  private static TetherClient client(int port, String user, Recorder recorder) {
    return TetherClient.builder(URI.create("ws://127.0.0.1:" + port + "/ws"))
        .user(user)
        .backoff(new TetherClient.Backoff(Duration.ofMillis(50), Duration.ofMillis(300), 2.0, 100))
        .ackEvery(5, Duration.ofMillis(200))
        .listener(recorder)
        .build();
  }

  @Test
  void dropAndResumeWithoutLoss() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      Recorder recorder = new Recorder();
      TetherClient client = client(proxy.port(), "java-alice", recorder);
      client.connect().get(10, TimeUnit.SECONDS);
      String id = client.sessionId();
      for (int i = 1; i <= 10; i++) {
        node.api().publishToSession(id, "{\"i\":" + i + "}");
        if (i == 4) proxy.cut();
      }
      await(() -> recorder.messages.size() >= 10, "all ten messages");
      assertEquals(List.of(1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L, 10L), recorder.seqs());
      assertTrue(recorder.events.contains("resumed"));
      assertEquals(id, client.sessionId());
      await(() -> client.ackedSeq() == 10, "lazy ack of everything");
      client.close();
    }
  }

  @Test
  void halfOpenLinkIsDetectedByTheReadDeadline() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      Recorder recorder = new Recorder();
      TetherClient client = client(proxy.port(), "java-bob", recorder);
      client.connect().get(10, TimeUnit.SECONDS);
      int connectionsBefore = proxy.accepted();
      proxy.stall();
      await(() -> client.state() == TetherClient.State.RECONNECTING, "the dead link noticed");
      proxy.restore();
      await(() -> client.state() == TetherClient.State.CONNECTED && recorder.events.contains("resumed"), "resumed");
      assertTrue(proxy.accepted() > connectionsBefore);
      node.api().publishToSession(client.sessionId(), "{\"after\":\"stall\"}");
      await(() -> recorder.messages.size() == 1, "a message after the resume");
      client.close();
    }
  }

  @Test
  void upstreamSendsSurviveADropExactlyOnce() throws Exception {
    Recorder receiverRecorder = new Recorder();
    TetherClient receiver = client(node.port(), "java-receiver", receiverRecorder);
    receiver.connect().get(10, TimeUnit.SECONDS);
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      Recorder recorder = new Recorder();
      TetherClient sender = client(proxy.port(), "java-sender", recorder);
      sender.connect().get(10, TimeUnit.SECONDS);
      String to = "session:" + receiver.sessionId();
      assertEquals(1L, sender.send(to, "{\"n\":1}").get(10, TimeUnit.SECONDS));
      proxy.refuse(true);
      proxy.cut();
      var second = sender.send(to, "{\"n\":2}");
      var third = sender.send(to, "{\"n\":3}");
      Thread.sleep(300);
      proxy.refuse(false);
      assertEquals(2L, second.get(10, TimeUnit.SECONDS));
      assertEquals(3L, third.get(10, TimeUnit.SECONDS));
      await(() -> receiverRecorder.messages.size() >= 3, "three messages at the receiver");
      Thread.sleep(300);
      List<String> data = new ArrayList<>();
      for (TetherClient.Message m : receiverRecorder.messages) data.add(m.data());
      assertEquals(List.of("{\"n\":1}", "{\"n\":2}", "{\"n\":3}"), data);
      sender.close();
    }
    receiver.close();
  }

  @Test
  void logoutNeverReconnects() throws Exception {
    Recorder recorder = new Recorder();
    TetherClient client = client(node.port(), "java-carol", recorder);
    client.connect().get(10, TimeUnit.SECONDS);
    String id = client.sessionId();
    client.logout().get(10, TimeUnit.SECONDS);
    assertEquals(TetherClient.State.CLOSED, client.state());
    Thread.sleep(500);
    assertEquals(TetherClient.State.CLOSED, client.state());
    assertTrue(!recorder.states.contains(TetherClient.State.RECONNECTING));
    await(() -> node.api().get("/api/sessions/" + id).status() == 404, "session gone");
  }

  @Test
  void kickedClientStaysClosed() throws Exception {
    Recorder recorder = new Recorder();
    TetherClient client = client(node.port(), "java-dan", recorder);
    client.connect().get(10, TimeUnit.SECONDS);
    assertEquals(204, node.api().delete("/api/sessions/" + client.sessionId()).status());
    await(() -> client.state() == TetherClient.State.CLOSED, "closed");
    assertEquals(List.of("kicked:kicked"), recorder.events);
    Thread.sleep(500);
    assertTrue(!recorder.states.contains(TetherClient.State.RECONNECTING));
  }

  @Test
  void sessionEndedWhileAwayIsReportedAsLostAndANewOneBegins() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      Recorder recorder = new Recorder();
      TetherClient client = client(proxy.port(), "java-erin", recorder);
      client.connect().get(10, TimeUnit.SECONDS);
      String first = client.sessionId();
      proxy.refuse(true);
      proxy.cut();
      await(() -> "detached".equals(node.api().get("/api/sessions/" + first).json().path("state").asText()), "detached");
      var unconfirmed = client.send("user:nobody", "{\"lost\":true}");
      assertEquals(204, node.api().delete("/api/sessions/" + first).status());
      proxy.refuse(false);
      await(() -> recorder.events.contains("session-lost:ended"), "session-lost");
      await(() -> client.state() == TetherClient.State.CONNECTED, "connected again");
      assertTrue(!first.equals(client.sessionId()), "a new session");
      assertThrows(Exception.class, () -> unconfirmed.get(5, TimeUnit.SECONDS), "sends of the lost session fail");
      assertEquals(1L, client.send("user:nobody", "{\"fresh\":true}").get(10, TimeUnit.SECONDS), "cseq restarts");
      client.close();
    }
  }

  @Test
  void aSendOrRoomTheServerCouldNotDecodeIsRefusedWithoutUsingACseq() throws Exception {
    Recorder recorder = new Recorder();
    TetherClient client = client(node.port(), "java-gil", recorder);
    client.connect().get(10, TimeUnit.SECONDS);
    for (var refused :
        List.of(
            client.send("nowhere", "{}"),
            client.send("room:" + "r".repeat(200), "{}"),
            client.send("user:nobody", "{not json"),
            client.send("user:nobody", "{} {}"),
            client.send("user:nobody", "[".repeat(100) + "]".repeat(100)), // nested deeper than the server takes
            client.send("user:nobody", "1".repeat(101)), // a number longer than the server takes
            client.send("user:nobody", "\"" + "x".repeat(70_000) + "\""), // over max-frame-bytes (64 KiB)
            client.join("bad\u0001room"))) {
      ExecutionException e = assertThrows(ExecutionException.class, () -> refused.get(5, TimeUnit.SECONDS));
      assertTrue(e.getCause() instanceof IllegalArgumentException, e.toString());
    }
    assertEquals(1L, client.send("user:nobody", "{\"ok\":true}").get(10, TimeUnit.SECONDS), "the first cseq is still 1");
    client.close();
  }

  @Test
  void closeFailsTheSendsAndRoomRequestsStillPending() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      TetherClient client = client(proxy.port(), "java-hal", new Recorder());
      client.connect().get(10, TimeUnit.SECONDS);
      proxy.refuse(true);
      proxy.cut();
      await(() -> client.state() == TetherClient.State.RECONNECTING, "reconnecting");
      var send = client.send("user:nobody", "{}");
      var join = client.join("lobby");
      client.close();
      assertThrows(ExecutionException.class, () -> send.get(5, TimeUnit.SECONDS));
      assertThrows(ExecutionException.class, () -> join.get(5, TimeUnit.SECONDS));
    }
  }

  @Test
  void logoutWhileTheLinkIsDownResumesToSayByeWithoutWaitingOutTheBackoff() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      TetherClient client =
          TetherClient.builder(URI.create("ws://127.0.0.1:" + proxy.port() + "/ws"))
              .user("java-ida")
              .backoff(new TetherClient.Backoff(Duration.ofSeconds(20), Duration.ofSeconds(20), 2.0, 100))
              .random(() -> 1.0) // the next attempt is 20 s away
              .listener(new Recorder())
              .build();
      client.connect().get(10, TimeUnit.SECONDS);
      String id = client.sessionId();
      proxy.refuse(true);
      proxy.cut();
      await(() -> client.state() == TetherClient.State.RECONNECTING, "reconnecting");
      proxy.refuse(false);
      var loggedOut = client.logout();
      loggedOut.get(8, TimeUnit.SECONDS);
      assertEquals(TetherClient.State.CLOSED, client.state());
      await(() -> node.api().get("/api/sessions/" + id).status() == 404, "the session ended on the server");
    }
  }

  @Test
  void logoutCompletesWhenTheLinkDiesBeforeTheServerAnswers() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      TetherClient client = client(proxy.port(), "java-jo", new Recorder());
      client.connect().get(10, TimeUnit.SECONDS);
      proxy.stall(); // the bye goes nowhere
      var loggedOut = client.logout();
      Thread.sleep(200);
      proxy.cut();
      loggedOut.get(5, TimeUnit.SECONDS);
      assertEquals(TetherClient.State.CLOSED, client.state());
    }
  }

  /** A server that upgrades the socket and then says nothing: the client must not wait forever for its welcome. */
  @Test
  void aWelcomeThatNeverComesCountsAsADeadLink() throws Exception {
    try (ScriptedServer silent = new ScriptedServer()) {
      TetherClient client =
          TetherClient.builder(URI.create("ws://127.0.0.1:" + silent.port() + "/ws"))
              .user("java-kit")
              .connectTimeout(Duration.ofMillis(400))
              .backoff(new TetherClient.Backoff(Duration.ofMillis(20), Duration.ofMillis(50), 2.0, 100))
              .listener(new Recorder())
              .build();
      client.connect();
      await(() -> silent.connections.size() >= 3, "new attempts after each silent handshake");
      client.close();
    }
  }

  /**
   * A send the server refused while the link was down (its error frame lost with it) is covered
   * by welcome.clientSeq; the welcome's refused list keeps it from passing for accepted.
   */
  @Test
  void aSendRefusedWhileTheLinkWasDownFailsInsteadOfPassingForSent() throws Exception {
    try (ScriptedServer server = new ScriptedServer()) {
      TetherClient client = client(server.port(), "java-lou", new Recorder());
      ScriptedServer.Link first = server.welcomeFirst(client);

      var refused = client.send("room:r", "{}");
      // The server refused it (not in the room), but the error never left.
      ScriptedServer.Link second = dropBeforeTheAnswer(server, first);
      second.sendText(welcome(true, 1, ",\"refused\":[{\"cseq\":1,\"code\":\"not-in-room\"}]"));
      ExecutionException e = assertThrows(ExecutionException.class, () -> refused.get(5, TimeUnit.SECONDS));
      assertTrue(e.getCause().getMessage().contains("not-in-room"), e.toString());
      client.close();
    }
  }

  /** Logging out while reconnecting: what the resumed welcome says the server has is confirmed, not failed. */
  @Test
  void aLogoutThatResumesConfirmsTheSendsTheServerAlreadyHad() throws Exception {
    try (ScriptedServer server = new ScriptedServer()) {
      TetherClient client = client(server.port(), "java-max", new Recorder());
      ScriptedServer.Link first = server.welcomeFirst(client);
      var accepted = client.send("user:bob", "{}");
      // Accepted, but its "sent" is lost with the link.
      ScriptedServer.Link second = dropBeforeTheAnswer(server, first);
      var loggedOut = client.logout();
      second.sendText(welcome(true, 1, ""));
      assertEquals(1L, accepted.get(5, TimeUnit.SECONDS), "the server had it");
      assertTrue(second.readText().contains("\"bye\""));
      second.closeNormally(); // as the gateway answers a bye
      loggedOut.get(5, TimeUnit.SECONDS);
      assertEquals(TetherClient.State.CLOSED, client.state());
    }
  }

  /** The server reads send 1 from the first link, which then dies unanswered; returns the resume's link. */
  private static ScriptedServer.Link dropBeforeTheAnswer(ScriptedServer server, ScriptedServer.Link first) throws Exception {
    assertTrue(first.readText().contains("\"cseq\":1"));
    first.socket.close();
    ScriptedServer.Link second = server.link(1);
    assertTrue(second.readText().contains("\"resume\""));
    return second;
  }

  /**
   * A scripted welcome. Its read deadline is short (2 s, with no pings) on purpose: the JDK's
   * WebSocket (17 through 25) sometimes loses a peer's TCP close that arrives while a frame is
   * being handed to the listener (its debug log shows "read: EOF" and then neither onClose nor
   * onError). The client then finds the dead link by its read deadline, as it would in production,
   * instead of within the two minutes this welcome used to give.
   */
  private static String welcome(boolean resumed, long clientSeq, String extra) {
    return "{\"type\":\"welcome\",\"sessionId\":\"s_scripted\",\"resumeToken\":\"r_scripted\",\"resumed\":" + resumed
        + ",\"reason\":\"" + (resumed ? "resumed" : "new") + "\",\"replay\":0,\"lastSeq\":0,\"clientSeq\":" + clientSeq
        + ",\"lost\":0,\"heartbeat\":{\"interval\":60000,\"timeout\":2000},\"grace\":120000,\"rooms\":[],\"user\":\"u\""
        + extra + "}";
  }

  /**
   * A WebSocket server the test scripts by hand: it accepts upgrades (RFC 6455 handshake), reads
   * the client's text frames (small, masked) and sends text frames.
   */
  private static final class ScriptedServer implements AutoCloseable {
    private final java.net.ServerSocket server = new java.net.ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress());
    final List<Link> connections = new CopyOnWriteArrayList<>();

    ScriptedServer() throws java.io.IOException {
      Thread acceptor =
          new Thread(
              () -> {
                while (!server.isClosed()) {
                  try {
                    java.net.Socket socket = server.accept();
                    connections.add(new Link(socket));
                  } catch (Exception e) {
                    // closed
                  }
                }
              },
              "scripted-ws");
      acceptor.setDaemon(true);
      acceptor.start();
    }

    int port() {
      return server.getLocalPort();
    }

    /** Connects {@code client} (this server's first connection) and answers its hello with a new session's welcome. */
    Link welcomeFirst(TetherClient client) throws Exception {
      var connected = client.connect();
      Link first = link(0);
      assertTrue(first.readText().contains("\"hello\""));
      first.sendText(welcome(false, 0, ""));
      connected.get(5, TimeUnit.SECONDS);
      return first;
    }

    Link link(int index) throws InterruptedException {
      await(() -> connections.size() > index, "connection #" + (index + 1));
      return connections.get(index);
    }

    @Override
    public void close() throws java.io.IOException {
      server.close();
      for (Link link : connections) link.socket.close();
    }

    static final class Link {
      final java.net.Socket socket;
      private final java.io.DataInputStream in;

      Link(java.net.Socket socket) throws Exception {
        this.socket = socket;
        this.in = new java.io.DataInputStream(socket.getInputStream());
        String key = null;
        for (String line = readLine(); !line.isEmpty(); line = readLine()) {
          if (line.toLowerCase(java.util.Locale.ROOT).startsWith("sec-websocket-key:")) key = line.substring(18).trim();
        }
        byte[] sha1 =
            java.security.MessageDigest.getInstance("SHA-1")
                .digest((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        write(
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
                    + java.util.Base64.getEncoder().encodeToString(sha1)
                    + "\r\n\r\n")
                .getBytes(java.nio.charset.StandardCharsets.US_ASCII));
      }

      private String readLine() throws java.io.IOException {
        StringBuilder line = new StringBuilder();
        for (int b = in.read(); b != '\n'; b = in.read()) {
          if (b < 0) throw new java.io.EOFException();
          if (b != '\r') line.append((char) b);
        }
        return line.toString();
      }

      /** The next text frame from the client (unfragmented; pings are skipped). */
      String readText() throws java.io.IOException {
        while (true) {
          int opcode = in.readUnsignedByte() & 0x0F;
          int length = in.readUnsignedByte() & 0x7F;
          if (length == 126) length = in.readUnsignedShort();
          else if (length == 127) length = (int) in.readLong();
          byte[] mask = in.readNBytes(4);
          byte[] payload = in.readNBytes(length);
          for (int i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
          if (opcode == 0x1) return new String(payload, java.nio.charset.StandardCharsets.UTF_8);
        }
      }

      void sendText(String text) throws java.io.IOException {
        byte[] payload = text.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        java.io.ByteArrayOutputStream frame = new java.io.ByteArrayOutputStream();
        frame.write(0x81);
        if (payload.length < 126) {
          frame.write(payload.length);
        } else {
          frame.write(126);
          frame.write(payload.length >> 8);
          frame.write(payload.length & 0xFF);
        }
        frame.write(payload);
        write(frame.toByteArray());
      }

      /** A close frame with status 1000, then the TCP close. */
      void closeNormally() throws java.io.IOException {
        write(new byte[] {(byte) 0x88, 2, 0x03, (byte) 0xE8});
        socket.close();
      }

      private void write(byte[] bytes) throws java.io.IOException {
        socket.getOutputStream().write(bytes);
        socket.getOutputStream().flush();
      }
    }
  }

  @Test
  void backoffUsesFullJitterUpToTheCap() {
    TetherClient.Backoff backoff = new TetherClient.Backoff(Duration.ofMillis(100), Duration.ofSeconds(2), 2.0, 10);
    assertEquals(Duration.ofMillis(50), backoff.delay(0, 0.5));
    assertEquals(Duration.ofMillis(200), backoff.delay(1, 1.0));
    assertEquals(Duration.ofMillis(400), backoff.delay(2, 1.0));
    assertEquals(Duration.ofSeconds(2), backoff.delay(10, 1.0), "capped at max");
    assertEquals(Duration.ZERO, backoff.delay(5, 0.0), "full jitter reaches zero");
  }

  @Test
  void reconnectAttemptsFollowTheBackoffWhileTheServerIsUnreachable() throws Exception {
    try (FaultProxy proxy = new FaultProxy(node.port())) {
      List<Duration> delays = Collections.synchronizedList(new ArrayList<>());
      Recorder recorder =
          new Recorder() {
            @Override
            public void onReconnecting(int attempt, Duration delay) {
              delays.add(delay);
            }
          };
      TetherClient client =
          TetherClient.builder(URI.create("ws://127.0.0.1:" + proxy.port() + "/ws"))
              .user("java-frank")
              .backoff(new TetherClient.Backoff(Duration.ofMillis(40), Duration.ofMillis(200), 2.0, 100))
              .random(() -> 1.0)
              .listener(recorder)
              .build();
      client.connect().get(10, TimeUnit.SECONDS);
      proxy.refuse(true);
      proxy.cut();
      await(() -> delays.size() >= 4, "four attempts");
      proxy.refuse(false);
      await(() -> client.state() == TetherClient.State.CONNECTED, "back");
      assertEquals(
          List.of(Duration.ofMillis(40), Duration.ofMillis(80), Duration.ofMillis(160), Duration.ofMillis(200)),
          List.copyOf(delays.subList(0, 4)));
      assertEquals(0, client.reconnectAttempts(), "reset once connected");
      client.close();
    }
  }

  private static void await(BooleanSupplier condition, String what) throws InterruptedException {
    long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() > deadline) throw new AssertionError("timed out waiting for " + what);
      Thread.sleep(20);
    }
  }
}
