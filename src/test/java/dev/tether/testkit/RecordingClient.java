package dev.tether.testkit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

/**
 * A protocol-level client for fault tests that records everything and forgives nothing: unlike
 * the SDK it does not de-duplicate, so every {@code msg} frame the server writes is checked
 * against the stream so far (each one must be {@code lastSeq + 1}: no gap, no repeat, no
 * reordering, across reconnects). Each processed message is recorded with its data. It acks
 * lazily (every {@link #ACK_EVERY} messages), and after a drop it can resume by itself through a
 * list of gateway ports, presenting the last seq it processed, until one of them welcomes it back.
 *
 * <p>Protocol violations seen are collected in {@link #violations()} rather than thrown, so that
 * a test can report all of them for all clients at once.
 */
public final class RecordingClient {
  public static final int ACK_EVERY = 10;
  private static final ObjectMapper JSON = new ObjectMapper();
  /** One selector thread for all test sockets. */
  private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(3)).build();

  /** A processed message: its seq, its data, and on which connection (1 = the first) it came. */
  public record Msg(long seq, JsonNode data, int link) {}

  /** A connection that ended: which one, its close code (-1: aborted or reset), when (System.nanoTime). */
  public record LinkClosed(int link, int code, long atNanos) {}

  private final String user;
  private volatile String sessionId;
  private volatile String resumeToken;

  // Guarded by this.
  private final List<Msg> received = new ArrayList<>();
  private final List<String> violations = new ArrayList<>();
  private final List<String> events = new ArrayList<>();
  private final List<LinkClosed> closes = new ArrayList<>();
  private long lastSeq;
  private long ackSent;
  private Link current;
  private int links;
  private int resumes;
  private long replayed;
  private long lastResumedAtNanos;
  private boolean stopped;
  private boolean resuming;
  private Supplier<List<Integer>> resumePorts;
  private Executor resumeExecutor;
  private long giveUpAtNanos;
  private final long createdNanos = System.nanoTime();

  public RecordingClient(String user) {
    this.user = user;
  }

  public String user() {
    return user;
  }

  public String sessionId() {
    return sessionId;
  }

  // -------------------------------------------------------------------------------------------
  // Handshakes

  /** Opens a new session through {@code port}; fails unless the welcome comes within {@code timeout}. */
  public JsonNode hello(int port, Duration timeout) throws Exception {
    Link link = open(port);
    link.send("{\"type\":\"hello\",\"user\":\"" + user + "\",\"client\":\"it/1\"}");
    JsonNode welcome = awaitWelcome(link, timeout);
    if (welcome.path("resumed").asBoolean() || !"new".equals(welcome.path("reason").asText())) {
      throw new AssertionError("hello answered " + welcome);
    }
    sessionId = welcome.get("sessionId").asText();
    resumeToken = welcome.get("resumeToken").asText();
    event("hello on :" + port + " -> " + sessionId);
    return welcome;
  }

  /**
   * One resume attempt through {@code port} with the last processed seq. Throws on a transport
   * failure or a timeout (retry), and {@link ResumeRefused} when the server did not continue the
   * session (recorded as a violation: the session is lost; do not retry).
   */
  public JsonNode resumeOnce(int port, Duration timeout) throws Exception {
    Link link = open(port);
    long presented;
    synchronized (this) {
      presented = lastSeq;
    }
    link.send(
        "{\"type\":\"resume\",\"sessionId\":\"" + sessionId + "\",\"resumeToken\":\"" + resumeToken
            + "\",\"lastSeq\":" + presented + "}");
    JsonNode welcome = awaitWelcome(link, timeout);
    if (!welcome.path("resumed").asBoolean()) {
      violation("resume through :" + port + " with lastSeq " + presented + " did not continue the session: " + welcome);
      synchronized (this) {
        stopped = true; // the session is gone; nothing to resume any more
      }
      link.abort();
      throw new ResumeRefused(welcome.toString());
    }
    long serverLast = welcome.path("lastSeq").asLong();
    int replay = welcome.path("replay").asInt();
    if (welcome.path("lost").asLong() != 0) violation("resume reported lost=" + welcome.path("lost") + ": " + welcome);
    if (serverLast < presented) {
      violation("server's lastSeq " + serverLast + " is below the " + presented + " already delivered: " + welcome);
    } else if (replay != serverLast - presented) {
      violation("replay " + replay + " but lastSeq " + serverLast + " - presented " + presented + ": " + welcome);
    }
    synchronized (this) {
      resumes++;
      replayed += replay;
      lastResumedAtNanos = System.nanoTime();
    }
    event("resumed on :" + port + " lastSeq " + presented + " replay " + replay + " serverLast " + serverLast);
    return welcome;
  }

  /** The resume was answered with a new session: the old one is gone. */
  public static final class ResumeRefused extends Exception {
    ResumeRefused(String welcome) {
      super(welcome, null, false, false);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Automatic resume after a drop

  /**
   * From now on, whenever the current connection ends, resume on {@code executor}: try the ports
   * {@code ports} gives (in order, starting at a different one each round) until one welcomes
   * the session back or {@code giveUpAfter} (from now) has passed.
   */
  public synchronized void autoResume(Supplier<List<Integer>> ports, Executor executor, Duration giveUpAfter) {
    this.resumePorts = ports;
    this.resumeExecutor = executor;
    this.giveUpAtNanos = System.nanoTime() + giveUpAfter.toNanos();
  }

  private void linkClosed(Link link, int code) {
    boolean resume;
    synchronized (this) {
      closes.add(new LinkClosed(link.index, code, System.nanoTime()));
      event("link " + link.index + " closed " + code);
      resume = link == current && !stopped && resumePorts != null && !resuming;
      if (resume) resuming = true;
    }
    if (resume) resumeExecutor.execute(this::resumeLoop);
  }

  private void resumeLoop() {
    int round = 0;
    boolean succeeded = false;
    try {
      while (true) {
        List<Integer> ports;
        synchronized (this) {
          if (stopped) return;
          if (System.nanoTime() - giveUpAtNanos > 0) {
            violation("gave up resuming (last events: " + lastEvents(6) + ")");
            return;
          }
          ports = resumePorts.get();
        }
        if (!ports.isEmpty()) {
          int port = ports.get(round % ports.size());
          try {
            resumeOnce(port, Duration.ofSeconds(15));
            succeeded = true;
            return;
          } catch (ResumeRefused e) {
            return;
          } catch (Exception e) {
            event("resume through :" + port + " failed: " + describe(e));
          }
        }
        round++;
        Thread.sleep(Math.min(1000, 100L * round));
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } finally {
      boolean again;
      synchronized (this) {
        resuming = false;
        // The connection just welcomed may already have dropped again: go on resuming.
        again = succeeded && !stopped && current != null && current.closed.get();
        if (again) resuming = true;
      }
      if (again) resumeExecutor.execute(this::resumeLoop);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Frames

  private void onMessage(Link link, JsonNode frame) {
    synchronized (this) {
      long seq = frame.path("seq").asLong(-1);
      if (link != current) {
        violation("msg " + seq + " on a stale connection " + link.index + " (current " + (current == null ? "none" : current.index) + ")");
        return;
      }
      if (seq != lastSeq + 1) {
        violation(
            (seq <= lastSeq ? "duplicate or reordered" : "gap:") + " seq " + seq + " after " + lastSeq + " on connection " + link.index);
      }
      received.add(new Msg(seq, frame.get("data"), link.index));
      if (seq > lastSeq) lastSeq = seq;
      if (lastSeq - ackSent >= ACK_EVERY) {
        ackSent = lastSeq;
        link.send("{\"type\":\"ack\",\"seq\":" + lastSeq + "}");
      }
    }
  }

  private Link open(int port) throws Exception {
    Link link;
    synchronized (this) {
      link = new Link(++links);
    }
    try {
      link.ws =
          HTTP.newWebSocketBuilder()
              .connectTimeout(Duration.ofSeconds(3))
              .buildAsync(URI.create("ws://127.0.0.1:" + port + "/ws"), link)
              .get(10, TimeUnit.SECONDS);
    } catch (ExecutionException e) {
      throw e.getCause() instanceof Exception cause ? cause : e;
    }
    synchronized (this) {
      Link previous = current;
      current = link;
      if (previous != null) previous.abort();
    }
    return link;
  }

  private JsonNode awaitWelcome(Link link, Duration timeout) throws Exception {
    try {
      return link.welcome.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      link.abort();
      throw new TimeoutException("no welcome within " + timeout);
    } catch (ExecutionException e) {
      link.abort();
      throw e.getCause() instanceof Exception cause ? cause : e;
    }
  }

  /** One WebSocket connection. */
  private final class Link implements WebSocket.Listener {
    final int index;
    final CompletableFuture<JsonNode> welcome = new CompletableFuture<>();
    final StringBuilder partial = new StringBuilder();
    volatile WebSocket ws;
    private CompletableFuture<?> sending = CompletableFuture.completedFuture(null);
    /** Set once, by whichever of close, error or abort comes first (no lock: see onMessage's lock order). */
    private final AtomicBoolean closed = new AtomicBoolean();

    Link(int index) {
      this.index = index;
    }

    synchronized void send(String text) {
      WebSocket socket = ws;
      sending = sending.handle((r, e) -> null).thenCompose(v -> socket.sendText(text, true));
    }

    void abort() {
      WebSocket socket = ws;
      if (socket != null) socket.abort();
      ended(-1);
    }

    private void ended(int code) {
      if (!closed.compareAndSet(false, true)) return;
      welcome.completeExceptionally(new IllegalStateException("connection closed (" + code + ") before the welcome"));
      linkClosed(this, code);
    }

    @Override
    public void onOpen(WebSocket webSocket) {
      webSocket.request(1);
    }

    @Override
    public CompletionStage<?> onText(WebSocket webSocket, CharSequence data, boolean last) {
      partial.append(data);
      if (last) {
        String text = partial.toString();
        partial.setLength(0);
        try {
          handle(JSON.readTree(text));
        } catch (Exception e) {
          violation("unparseable frame " + text + ": " + e);
        }
      }
      webSocket.request(1);
      return null;
    }

    private void handle(JsonNode frame) {
      String type = frame.path("type").asText();
      switch (type) {
        case "welcome" -> {
          if (!welcome.complete(frame)) violation("a second welcome on connection " + index + ": " + frame);
        }
        case "msg" -> {
          if (!welcome.isDone() || welcome.isCompletedExceptionally()) {
            violation("msg before the welcome on connection " + index + ": " + frame);
          } else {
            onMessage(this, frame);
          }
        }
        case "pong", "sent", "joined", "left" -> {}
        default -> {
          event("frame on " + index + ": " + frame);
          if (!welcome.isDone() && "error".equals(type)) {
            welcome.completeExceptionally(new IllegalStateException("error before the welcome: " + frame));
          }
        }
      }
    }

    @Override
    public CompletionStage<?> onClose(WebSocket webSocket, int statusCode, String reason) {
      ended(statusCode);
      return null;
    }

    @Override
    public void onError(WebSocket webSocket, Throwable error) {
      ended(-1);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Control and results

  /** Pulls the plug for good: no close frame, never comes back. */
  public void abandon() {
    Link link;
    synchronized (this) {
      stopped = true;
      link = current;
    }
    if (link != null) link.abort();
    event("abandoned");
  }

  /** Stops resuming and closes the connection (end of test). */
  public void close() {
    abandon();
  }

  /** Connected and welcomed on the current connection. */
  public synchronized boolean isConnected() {
    return current != null && !current.closed.get() && current.welcome.isDone() && !current.welcome.isCompletedExceptionally();
  }

  public synchronized long lastSeq() {
    return lastSeq;
  }

  public synchronized List<Msg> received() {
    return List.copyOf(received);
  }

  public synchronized List<String> violations() {
    return List.copyOf(violations);
  }

  public synchronized List<LinkClosed> closes() {
    return List.copyOf(closes);
  }

  public synchronized int resumes() {
    return resumes;
  }

  /** How many messages the server replayed over all of this client's resumes. */
  public synchronized long replayed() {
    return replayed;
  }

  /** When the last successful resume's welcome arrived (System.nanoTime), 0 if never. */
  public synchronized long lastResumedAtNanos() {
    return lastResumedAtNanos;
  }

  public synchronized List<String> events() {
    return List.copyOf(events);
  }

  public synchronized String lastEvents(int n) {
    return String.join(" | ", events.subList(Math.max(0, events.size() - n), events.size()));
  }

  private synchronized void violation(String what) {
    violations.add(user + "/" + sessionId + ": " + what);
    event("VIOLATION " + what);
  }

  private synchronized void event(String what) {
    events.add(String.format("+%.3fs %s", (System.nanoTime() - createdNanos) / 1e9, what));
  }

  private static String describe(Throwable e) {
    Throwable t = e;
    while ((t instanceof ExecutionException || t instanceof java.util.concurrent.CompletionException) && t.getCause() != null) {
      t = t.getCause();
    }
    return t.getClass().getSimpleName() + (t.getMessage() == null ? "" : ": " + t.getMessage());
  }
}
