package dev.tether.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.tether.gateway.FrameCodec;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.DoubleSupplier;

/**
 * Tether's Java client, on the JDK's {@code java.net.http.WebSocket}: the same semantics as the
 * TypeScript SDK. It keeps one session across drops: heartbeat and read deadline, reconnect with
 * exponential backoff and full jitter (exactly one attempt in flight), resume with the last seq
 * delivered, lazy cumulative acks, de-duplication by seq, and upstream sends that are re-sent
 * after a resume until the server confirms them.
 *
 * <p>All state changes run on one private thread, so listeners are called one at a time, in
 * order; they must not block.
 *
 * <pre>{@code
 * TetherClient client = TetherClient.builder(URI.create("ws://localhost:8080/ws"))
 *     .user("alice")
 *     .listener(new TetherClient.Listener() {
 *       public void onMessage(Message m) { System.out.println(m.seq() + " " + m.data()); }
 *     })
 *     .build();
 * client.connect().join();
 * client.send("room:lobby", "{\"text\":\"hi\"}").join();
 * }</pre>
 */
public final class TetherClient implements AutoCloseable {

  public enum State {
    INIT,
    CONNECTING,
    CONNECTED,
    RECONNECTING,
    CLOSING,
    CLOSED
  }

  /** A downstream message; {@code data} is its JSON text. */
  public record Message(long seq, String data, String from, String room, long ts) {}

  /** Callbacks, all optional, all on the client's thread. */
  public interface Listener {
    default void onState(State from, State to) {}

    default void onMessage(Message message) {}

    /** The same session continued after a reconnect. */
    default void onResumed(int replay, long lost) {}

    /** The resume failed ({@code unknown}, {@code invalid-token}, {@code expired}, {@code ended}); a new session began. */
    default void onSessionLost(String reason, long lost, String newSessionId) {}

    /** Taken over or kicked by the backend: the client is closed and will not reconnect. */
    default void onKicked(String reason) {}

    default void onError(String code, String message) {}

    default void onReconnecting(int attempt, Duration delay) {}
  }

  /** Reconnect policy: exponential backoff with full jitter. */
  public record Backoff(Duration initial, Duration max, double multiplier, int maxAttempts) {
    public static Backoff defaults() {
      return new Backoff(Duration.ofMillis(500), Duration.ofSeconds(30), 2.0, Integer.MAX_VALUE);
    }

    /** The delay before attempt {@code attempt} (0-based): uniform in [0, min(max, initial * multiplier^attempt)). */
    public Duration delay(int attempt, double random) {
      double cap = Math.min(max.toMillis(), initial.toMillis() * Math.pow(multiplier, attempt));
      return Duration.ofMillis((long) (random * cap));
    }
  }

  public static Builder builder(URI url) {
    return new Builder(url);
  }

  public static final class Builder {
    private final URI url;
    private String user;
    private String token;
    private Backoff backoff = Backoff.defaults();
    private int ackEveryMessages = 20;
    private Duration ackEvery = Duration.ofSeconds(1);
    private Duration connectTimeout = Duration.ofSeconds(10);
    private int maxFrameBytes = 64 * 1024;
    private Listener listener = new Listener() {};
    private DoubleSupplier random = () -> ThreadLocalRandom.current().nextDouble();

    private Builder(URI url) {
      this.url = url;
    }

    public Builder user(String user) {
      this.user = user;
      return this;
    }

    public Builder token(String token) {
      this.token = token;
      return this;
    }

    public Builder backoff(Backoff backoff) {
      this.backoff = backoff;
      return this;
    }

    public Builder ackEvery(int messages, Duration time) {
      this.ackEveryMessages = messages;
      this.ackEvery = time;
      return this;
    }

    /** The gateway's {@code tether.gateway.limits.max-frame-bytes} (default 64 KiB): larger sends fail at once. */
    public Builder maxFrameBytes(int bytes) {
      this.maxFrameBytes = bytes;
      return this;
    }

    public Builder connectTimeout(Duration timeout) {
      this.connectTimeout = timeout;
      return this;
    }

    public Builder listener(Listener listener) {
      this.listener = listener;
      return this;
    }

    public Builder random(DoubleSupplier random) {
      this.random = random;
      return this;
    }

    public TetherClient build() {
      return new TetherClient(this);
    }
  }

  private static final ObjectMapper JSON = new ObjectMapper();

  private final Builder config;
  private final Listener listener;
  private final HttpClient http = HttpClient.newHttpClient();
  private final ScheduledExecutorService loop =
      Executors.newSingleThreadScheduledExecutor(
          r -> {
            Thread t = new Thread(r, "tether-client");
            t.setDaemon(true);
            return t;
          });

  // Everything below is touched on the loop thread only.
  private State state = State.INIT;
  private WebSocket socket;
  private CompletableFuture<WebSocket> sending = new CompletableFuture<>();
  private int connectionId; // which socket's events are current; older ones are ignored
  private String sessionId;
  private String resumeToken;
  private String userId;
  private long lastSeq;
  private long ackedSeq;
  private long nextCseq = 1;
  private long heartbeatInterval = 15_000;
  private long heartbeatTimeout = 45_000;
  private long lastHeardNanos;
  private long lastPingNanos;
  private int reconnectAttempts;
  private boolean reconnectScheduled;
  private final TreeMap<Long, PendingSend> pendingSends = new TreeMap<>();
  private CompletableFuture<Void> firstConnect = new CompletableFuture<>();
  private CompletableFuture<Void> loggedOut;
  private ScheduledFuture<?> heartbeatTask;
  private ScheduledFuture<?> ackTask;
  /** The connection the last welcome came on (see the handshake deadline in open()). */
  private int welcomedConnection;
  /** logout() was called while the link was down: the next welcome is answered with bye. */
  private boolean byeOnWelcome;
  private ScheduledFuture<?> reconnectTask;

  private record PendingSend(long cseq, String frame, CompletableFuture<Long> result) {}

  private record PendingRoom(String type, String frame, CompletableFuture<Void> result) {}

  private final Map<String, PendingRoom> pendingRooms = new java.util.HashMap<>();

  private TetherClient(Builder config) {
    this.config = config;
    this.listener = config.listener;
  }

  // -------------------------------------------------------------------------------------------
  // Public API (thread-safe: each call hops onto the loop thread)

  /** Opens the connection and completes once the welcome arrives. */
  public CompletableFuture<Void> connect() {
    loop.execute(
        () -> {
          if (state != State.INIT) return;
          open();
        });
    return firstConnect.orTimeout(config.connectTimeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  /**
   * Sends {@code dataJson} to {@code to}; completes with its cseq once the server confirms it,
   * across reconnects. Fails at once (without using a cseq) when {@code to} is not a valid target
   * or {@code dataJson} is not one JSON value, and when the client is closing or closed; fails
   * later on an error for its cseq, or when the session is lost or the client closes first.
   */
  public CompletableFuture<Long> send(String to, String dataJson) {
    CompletableFuture<Long> result = new CompletableFuture<>();
    // Checked before a cseq is used: the server answers a frame it cannot decode with an error
    // that carries no cseq, so the send would never settle and every later one would be out of order.
    String problem = sendProblem(to, dataJson);
    if (problem != null) {
      result.completeExceptionally(new IllegalArgumentException(problem));
      return result;
    }
    loop.execute(
        () -> {
          if (state == State.CLOSING || state == State.CLOSED) {
            result.completeExceptionally(new IllegalStateException("not connected: the client is " + state));
            return;
          }
          long cseq = nextCseq++;
          String frame = sendFrame(cseq, to, dataJson);
          pendingSends.put(cseq, new PendingSend(cseq, frame, result));
          if (state == State.CONNECTED) write(frame);
        });
    return result;
  }

  /**
   * Joins a room; completes once the server confirms. A join in flight when the link drops is sent
   * again after the resume (the server restores the rooms it had already recorded).
   */
  public CompletableFuture<Void> join(String room) {
    return roomRequest("join", room);
  }

  public CompletableFuture<Void> leave(String room) {
    return roomRequest("leave", room);
  }

  private CompletableFuture<Void> roomRequest(String type, String room) {
    CompletableFuture<Void> result = new CompletableFuture<>();
    if (!FrameCodec.validName(room)) {
      result.completeExceptionally(new IllegalArgumentException(type + ": room must be 1-128 characters without control characters"));
      return result;
    }
    loop.execute(
        () -> {
          if (state == State.CLOSING || state == State.CLOSED) {
            result.completeExceptionally(new IllegalStateException("not connected: the client is " + state));
            return;
          }
          String frame = "{\"type\":\"" + type + "\",\"room\":" + quote(room) + "}";
          PendingRoom previous = pendingRooms.put(room, new PendingRoom(type, frame, result));
          if (previous != null) previous.result().completeExceptionally(new IllegalStateException("superseded by " + type));
          sendIfConnected(frame);
        });
    return result;
  }

  /**
   * Ends the session ({@code bye}); the client never reconnects afterwards. While the link is
   * down the client first resumes, only to say bye (the session would otherwise live on for its
   * grace period). Completes once closed; if the server does not answer within the connect
   * timeout, the client closes anyway.
   */
  public CompletableFuture<Void> logout() {
    CompletableFuture<Void> done = new CompletableFuture<>();
    loop.execute(
        () -> {
          if (loggedOut != null) {
            loggedOut.whenComplete((v, e) -> done.complete(null));
            return;
          }
          loggedOut = done;
          switch (state) {
            case CONNECTED -> sayBye();
            case CONNECTING, RECONNECTING -> {
              byeOnWelcome = true; // the handshake in progress (or the next one) ends the session
              if (reconnectScheduled) {
                // Waiting out a backoff: go now, the logout has a deadline of its own.
                reconnectTask.cancel(false);
                reconnectScheduled = false;
                open();
              }
              loop.schedule(this::finishIfStillClosing, config.connectTimeout.toMillis() * 2, TimeUnit.MILLISECONDS);
            }
            default -> finish();
          }
        });
    return done;
  }

  private void sayBye() {
    flushAck();
    write("{\"type\":\"bye\"}");
    transition(State.CLOSING);
    loop.schedule(this::finishIfStillClosing, config.connectTimeout.toMillis(), TimeUnit.MILLISECONDS);
  }

  /** A logout the server did not answer (or a link that never came back) still ends in CLOSED. */
  private void finishIfStillClosing() {
    if (state != State.CLOSED) finish();
  }

  /** Pulls the plug as a dead network would: the client notices and reconnects. */
  public void dropConnection() {
    loop.execute(
        () -> {
          if (socket != null) socket.abort();
        });
  }

  /** Closes locally, without logging out: the session waits for its grace period. */
  @Override
  public void close() {
    loop.execute(
        () -> {
          if (socket != null) socket.abort();
          finish();
        });
    loop.shutdown();
  }

  public State state() {
    return onLoop(() -> state);
  }

  public String sessionId() {
    return onLoop(() -> sessionId);
  }

  public String resumeToken() {
    return onLoop(() -> resumeToken);
  }

  public long lastSeq() {
    return onLoop(() -> lastSeq);
  }

  public long ackedSeq() {
    return onLoop(() -> ackedSeq);
  }

  public int reconnectAttempts() {
    return onLoop(() -> reconnectAttempts);
  }

  /** Sends not yet confirmed by the server. */
  public int pendingCount() {
    return onLoop(pendingSends::size);
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle (loop thread)

  private void open() {
    transition(sessionId == null ? State.CONNECTING : State.RECONNECTING);
    int id = ++connectionId;
    http.newWebSocketBuilder()
        .connectTimeout(config.connectTimeout)
        .buildAsync(config.url, new SocketListener(id))
        .whenComplete(
            (ws, failure) ->
                loop.execute(
                    () -> {
                      if (id != connectionId) {
                        if (ws != null) ws.abort();
                        return;
                      }
                      if (failure != null) {
                        linkLost(id);
                        return;
                      }
                      socket = ws;
                      sending = CompletableFuture.completedFuture(ws);
                      lastHeardNanos = System.nanoTime();
                      write(handshakeFrame());
                      // The read deadline starts with the welcome; until then this one guards
                      // the handshake (a link that went half-open right after the upgrade).
                      loop.schedule(
                          () -> {
                            if (welcomedConnection != id) linkLost(id);
                          },
                          config.connectTimeout.toMillis(),
                          TimeUnit.MILLISECONDS);
                    }));
  }

  private String handshakeFrame() {
    ObjectNode frame = JSON.createObjectNode();
    if (sessionId == null) {
      frame.put("type", "hello");
      frame.put("client", "tether-java/0.1");
    } else {
      frame.put("type", "resume");
      frame.put("sessionId", sessionId);
      frame.put("resumeToken", resumeToken);
      frame.put("lastSeq", lastSeq);
    }
    if (config.user != null) frame.put("user", config.user);
    if (config.token != null) frame.put("token", config.token);
    return frame.toString();
  }

  /** The one way into a reconnect: whatever reports the link dead, only one attempt is scheduled. */
  private void linkLost(int id) {
    if (id != connectionId || reconnectScheduled) return;
    if (state == State.CLOSING) {
      finish(); // a logout whose link died: the bye may not have arrived; nothing more to do
      return;
    }
    if (state == State.CLOSED || state == State.INIT) return;
    stopTimers();
    if (socket != null) socket.abort();
    socket = null;
    if (reconnectAttempts >= config.backoff.maxAttempts()) {
      listener.onError("reconnect-failed", "gave up after " + reconnectAttempts + " attempts");
      finish();
      return;
    }
    Duration delay = config.backoff.delay(reconnectAttempts, config.random.getAsDouble());
    reconnectAttempts++;
    reconnectScheduled = true;
    transition(State.RECONNECTING);
    listener.onReconnecting(reconnectAttempts, delay);
    reconnectTask = loop.schedule(
        () -> {
          reconnectScheduled = false;
          if (state == State.RECONNECTING) open();
        },
        delay.toMillis(),
        TimeUnit.MILLISECONDS);
  }

  private void onFrame(int id, JsonNode frame) {
    if (id != connectionId) return;
    lastHeardNanos = System.nanoTime();
    switch (frame.path("type").asText()) {
      case "welcome" -> onWelcome(frame);
      case "msg" -> onMsg(frame);
      case "sent" -> settle(frame.path("cseq").asLong(), null);
      case "error" -> onErrorFrame(frame);
      case "joined", "left" -> settleRoom(frame.path("room").asText(), null);
      case "kicked" -> {
        String reason = frame.path("reason").asText();
        stopTimers();
        finish();
        listener.onKicked(reason);
      }
      default -> {} // pong, bye: nothing to do
    }
  }

  private void onWelcome(JsonNode w) {
    welcomedConnection = connectionId;
    boolean wasResume = sessionId != null;
    boolean resumed = w.path("resumed").asBoolean();
    if (resumed) settleWhatTheServerHas(w);
    if (byeOnWelcome) {
      // Logging out: this handshake was only to say bye. What the server had accepted is
      // confirmed above; the rest fails when the client closes.
      sessionId = w.path("sessionId").asText();
      transition(State.CONNECTED);
      sayBye();
      return;
    }
    if (wasResume && !resumed) {
      // A new session: the old seqs and unconfirmed sends belong to the lost one.
      lastSeq = 0;
      ackedSeq = 0;
      nextCseq = 1;
      for (PendingSend p : pendingSends.values()) {
        p.result().completeExceptionally(new IllegalStateException("session lost: " + w.path("reason").asText()));
      }
      pendingSends.clear();
    }
    sessionId = w.path("sessionId").asText();
    resumeToken = w.path("resumeToken").asText();
    userId = w.path("user").asText(null);
    heartbeatInterval = w.path("heartbeat").path("interval").asLong(heartbeatInterval);
    heartbeatTimeout = w.path("heartbeat").path("timeout").asLong(heartbeatTimeout);
    reconnectAttempts = 0;
    transition(State.CONNECTED);
    startTimers();
    // The server has everything up to clientSeq (settled above); the rest is sent again, in order.
    for (PendingSend p : pendingSends.values()) write(p.frame());
    // Room requests the old connection may not have delivered: the welcome says where we are.
    List<String> rooms = new ArrayList<>();
    w.path("rooms").forEach(r -> rooms.add(r.asText()));
    for (Map.Entry<String, PendingRoom> entry : new ArrayList<>(pendingRooms.entrySet())) {
      boolean inRoom = rooms.contains(entry.getKey());
      boolean done = entry.getValue().type().equals("join") ? inRoom : !inRoom;
      if (done && resumed) settleRoom(entry.getKey(), null);
      else write(entry.getValue().frame());
    }
    if (resumed) listener.onResumed(w.path("replay").asInt(), w.path("lost").asLong());
    else if (wasResume) listener.onSessionLost(w.path("reason").asText(), w.path("lost").asLong(), sessionId);
    firstConnect.complete(null);
  }

  /**
   * A resumed welcome settles the sends the server already has: those it refused while their
   * error frame was lost with the link (clientSeq covers them, so without this they would pass
   * for accepted), then every other one up to clientSeq, accepted.
   */
  private void settleWhatTheServerHas(JsonNode w) {
    for (JsonNode refusal : w.path("refused")) {
      String code = refusal.path("code").asText("refused");
      settle(refusal.path("cseq").asLong(), code + ": the server refused this send");
    }
    long clientSeq = w.path("clientSeq").asLong();
    for (PendingSend p : new ArrayList<>(pendingSends.values())) {
      if (p.cseq() <= clientSeq) settle(p.cseq(), null);
    }
  }

  private void onMsg(JsonNode m) {
    long seq = m.path("seq").asLong();
    if (seq <= lastSeq) return; // already delivered to the application
    lastSeq = seq;
    listener.onMessage(
        new Message(seq, m.path("data").toString(), m.path("from").asText(null), m.path("room").asText(null), m.path("ts").asLong()));
    if (lastSeq - ackedSeq >= config.ackEveryMessages) flushAck();
  }

  private void onErrorFrame(JsonNode e) {
    String code = e.path("code").asText();
    String message = e.path("message").asText();
    if (e.has("cseq")) settle(e.path("cseq").asLong(), code + ": " + message);
    if (e.has("room")) settleRoom(e.path("room").asText(), code + ": " + message);
    listener.onError(code, message);
  }

  private void settleRoom(String room, String error) {
    PendingRoom p = pendingRooms.remove(room);
    if (p == null) return;
    if (error == null) p.result().complete(null);
    else p.result().completeExceptionally(new IllegalStateException(error));
  }

  private void settle(long cseq, String error) {
    PendingSend p = pendingSends.remove(cseq);
    if (p == null) return;
    if (error == null) p.result().complete(cseq);
    else p.result().completeExceptionally(new IllegalStateException(error));
  }

  private void onClosed(int id, int code) {
    if (id != connectionId) return;
    if (state == State.CLOSING) {
      // Logging out: whatever closed the link (the server's 1000 after bye, or a drop), it is over.
      finish();
      return;
    }
    switch (code) {
      case 1000, 4002, 4004 -> {
        stopTimers();
        finish();
      }
      case 4005 -> {
        stopTimers();
        firstConnect.completeExceptionally(new IllegalStateException("authentication failed"));
        finish();
      }
      default -> linkLost(id);
    }
  }

  /** Goes CLOSED: no socket, no timers, every pending send and room request failed, waiters settled. */
  private void finish() {
    stopTimers();
    if (socket != null) socket.abort();
    socket = null;
    transition(State.CLOSED);
    connectionId++;
    IllegalStateException closed = new IllegalStateException("closed before the server confirmed it");
    for (PendingSend p : pendingSends.values()) p.result().completeExceptionally(closed);
    pendingSends.clear();
    for (PendingRoom p : pendingRooms.values()) p.result().completeExceptionally(closed);
    pendingRooms.clear();
    if (loggedOut != null) loggedOut.complete(null);
    firstConnect.completeExceptionally(new IllegalStateException("closed"));
  }

  // -------------------------------------------------------------------------------------------
  // Heartbeat, read deadline, lazy acks

  private void startTimers() {
    stopTimers();
    int id = connectionId;
    lastPingNanos = System.nanoTime();
    // One tick checks the read deadline (ten times per timeout) and sends the pings.
    long tick = Math.max(50, Math.min(heartbeatInterval, heartbeatTimeout / 10));
    heartbeatTask = loop.scheduleAtFixedRate(() -> heartbeatTick(id), tick, tick, TimeUnit.MILLISECONDS);
    ackTask =
        loop.scheduleAtFixedRate(this::flushAck, config.ackEvery.toMillis(), config.ackEvery.toMillis(), TimeUnit.MILLISECONDS);
  }

  private void heartbeatTick(int id) {
    if (id != connectionId || state != State.CONNECTED) return;
    long now = System.nanoTime();
    if (now - lastHeardNanos >= TimeUnit.MILLISECONDS.toNanos(heartbeatTimeout)) {
      linkLost(id); // half-open: nothing arrives, not even pongs
      return;
    }
    if (now - lastPingNanos >= TimeUnit.MILLISECONDS.toNanos(heartbeatInterval)) {
      lastPingNanos = now;
      write("{\"type\":\"ping\"}");
    }
  }

  private void stopTimers() {
    if (heartbeatTask != null) heartbeatTask.cancel(false);
    if (ackTask != null) ackTask.cancel(false);
  }

  private void flushAck() {
    if (state == State.CONNECTED && lastSeq > ackedSeq) {
      ackedSeq = lastSeq;
      write("{\"type\":\"ack\",\"seq\":" + ackedSeq + "}");
    }
  }

  /**
   * Queues a frame on the current socket. The JDK's WebSocket allows one send at a time (a second
   * one while the first is pending fails), so sends are chained.
   */
  private void write(String frame) {
    WebSocket target = socket;
    if (target == null) return;
    sending = sending.exceptionally(failure -> target).thenCompose(ws -> target.sendText(frame, true));
  }

  private void sendIfConnected(String frame) {
    if (state == State.CONNECTED) write(frame);
  }

  private void transition(State to) {
    if (state == to) return;
    State from = state;
    state = to;
    listener.onState(from, to);
  }

  private <T> T onLoop(java.util.concurrent.Callable<T> read) {
    try {
      return loop.submit(read).get(5, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }

  /**
   * Why the server could not take this send, or null: the frame is decoded by the server's own
   * decoder (target, JSON, nesting and number limits) and its size checked against {@code
   * maxFrameBytes} (the gateway's {@code max-frame-bytes}, 64 KiB by default; a larger frame closes
   * the socket with 4003, and being re-sent after each resume, would close every new one).
   */
  private String sendProblem(String to, String dataJson) {
    if (to == null) return "send: to must be session:<id>, user:<id> or room:<name>";
    if (dataJson == null || dataJson.isBlank()) return "send: dataJson must be one JSON value";
    // The widest cseq, so that the size holds for whichever this send gets.
    String frame = sendFrame(Long.MAX_VALUE, to, dataJson);
    long bytes = frame.getBytes(java.nio.charset.StandardCharsets.UTF_8).length;
    if (bytes > config.maxFrameBytes) return "send: the frame (" + bytes + " bytes) exceeds maxFrameBytes " + config.maxFrameBytes;
    return FrameCodec.sendFrameProblem(frame);
  }

  private static String sendFrame(long cseq, String to, String dataJson) {
    return "{\"type\":\"send\",\"cseq\":" + cseq + ",\"to\":" + quote(to) + ",\"data\":" + dataJson + "}";
  }

  private static String quote(String s) {
    return JSON.getNodeFactory().textNode(s).toString();
  }

  /** Relays the JDK's socket callbacks onto the loop thread, tagged with their connection. */
  private final class SocketListener implements WebSocket.Listener {
    private final int id;
    private final StringBuilder partial = new StringBuilder();

    SocketListener(int id) {
      this.id = id;
    }

    @Override
    public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
      partial.append(data);
      if (last) {
        String text = partial.toString();
        partial.setLength(0);
        try {
          JsonNode frame = JSON.readTree(text);
          loop.execute(() -> onFrame(id, frame));
        } catch (Exception e) {
          loop.execute(() -> listener.onError("bad-frame", "unparseable frame from server"));
        }
      }
      ws.request(1);
      return null;
    }

    @Override
    public CompletionStage<?> onClose(WebSocket ws, int statusCode, String reason) {
      loop.execute(() -> onClosed(id, statusCode));
      return null;
    }

    @Override
    public void onError(WebSocket ws, Throwable error) {
      loop.execute(() -> linkLost(id));
    }
  }

  /** For tests: the pending (unconfirmed) cseqs. */
  List<Long> pendingCseqs() {
    return onLoop(() -> List.copyOf(pendingSends.keySet()));
  }

  /** For tests: a snapshot of counters. */
  Map<String, Long> counters() {
    return onLoop(() -> Map.of("lastSeq", lastSeq, "ackedSeq", ackedSeq, "nextCseq", nextCseq));
  }
}
