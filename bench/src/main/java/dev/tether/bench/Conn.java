package dev.tether.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.net.URI;
import java.net.http.WebSocket;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.BitSet;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * One simulated client: a session that survives its sockets. Subclasses speak Tether's protocol
 * (docs/PROTOCOL.md) or Socket.IO v5 over Engine.IO v4 with connection state recovery.
 *
 * <p>Every socket attempt has a generation number; callbacks of an older socket are ignored. All
 * state changes happen under the object's monitor.
 */
abstract class Conn {
  static final ObjectMapper JSON = new ObjectMapper();

  final Worker w;
  final int idx;
  final String user;

  // socket
  private WebSocket ws;
  private int gen;
  private final ArrayDeque<String> outq = new ArrayDeque<>();
  private boolean sending;
  volatile boolean ready;
  /** Keep this session connected: reconnect (resume) whenever the socket is lost. */
  volatile boolean wanted;
  volatile boolean byeSent;
  private boolean reconnectScheduled;
  int attempts;
  long attemptStartNanos;
  boolean isResumeAttempt;

  /** The id the publisher addresses: Tether's sessionId, Socket.IO's sid. */
  volatile String target;

  // delivery tracking (keys are the "k" of the published data, per session or per room)
  final BitSet accepted = new BitSet();
  final BitSet got = new BitSet();
  int nextKey = 1;
  long received;
  long dupes;
  long wireDupes; // Tether only: a seq not above the last one on the same connection
  long resumes;
  long lostSessions;
  long handshakes;
  /** Messages of sessions that were lost (a failed resume started a new session). */
  long retiredAccepted;
  long retiredReceived;
  long errors;
  long lastHeardNanos;
  /** Keys accepted before the current reconnect attempt started and not yet received. */
  BitSet catchUp;
  long catchUpStartNanos;
  CompletableFuture<Void> readyFuture = new CompletableFuture<>();
  final Map<Integer, CompletableFuture<JsonNode>> pendingAcks = new HashMap<>();

  Conn(Worker w, int idx, String user) {
    this.w = w;
    this.idx = idx;
    this.user = user;
  }

  abstract URI uri();

  /** The socket is open: send the handshake, if the protocol starts with the client. */
  abstract void onOpen();

  abstract void onText(String text);

  /** Periodic work: heartbeats, lazy acks. */
  abstract void tick(long now);

  /** Joins a room; completes when the server confirms. */
  abstract CompletableFuture<Void> join(String room);

  /** A clean goodbye that ends the session (Tether bye, Socket.IO 41). */
  abstract void bye();

  // -----------------------------------------------------------------------------------------

  /** Opens a socket (hello the first time, resume after). Completes readyFuture on welcome. */
  synchronized CompletableFuture<Void> connect() {
    if (readyFuture.isDone()) readyFuture = new CompletableFuture<>();
    final int g = ++gen;
    ready = false;
    sending = false;
    outq.clear();
    ws = null;
    attemptStartNanos = System.nanoTime();
    isResumeAttempt = target != null;
    // everything accepted so far and not yet received must arrive after this resume
    BitSet missing = (BitSet) accepted.clone();
    missing.andNot(got);
    catchUp = missing.isEmpty() || !isResumeAttempt ? null : missing;
    catchUpStartNanos = attemptStartNanos;
    w.http(idx)
        .newWebSocketBuilder()
        .connectTimeout(Duration.ofMillis(w.cfg.connectTimeoutMs))
        .buildAsync(uri(), new L(g))
        .whenComplete(
            (s, e) -> {
              synchronized (Conn.this) {
                if (g != gen) {
                  if (s != null) s.abort();
                  return;
                }
                if (e != null) {
                  lost(g);
                  return;
                }
                if (ws == null) ws = s;
                lastHeardNanos = System.nanoTime();
                onOpen();
              }
            });
    w.sched.schedule(
        () -> {
          synchronized (Conn.this) {
            if (g == gen && !ready) {
              w.handshakeTimeouts.incrementAndGet();
              lost(g);
            }
          }
        },
        w.cfg.connectTimeoutMs + w.cfg.handshakeTimeoutMs,
        TimeUnit.MILLISECONDS);
    return readyFuture;
  }

  /** Pulls the plug (no close frame); reconnects later if {@link #wanted}. */
  synchronized void kill() {
    gen++;
    ready = false;
    if (ws != null) ws.abort();
    ws = null;
    outq.clear();
    sending = false;
    attempts = 0;
    if (wanted) scheduleReconnect();
  }

  /** The socket of generation g is gone. */
  synchronized void lost(int g) {
    if (g != gen) return;
    gen++;
    boolean wasReady = ready;
    ready = false;
    if (ws != null) ws.abort();
    ws = null;
    outq.clear();
    sending = false;
    if (wasReady && !byeSent) w.unexpectedDrops.incrementAndGet();
    if (wanted) scheduleReconnect();
    else if (!readyFuture.isDone()) readyFuture.completeExceptionally(new IllegalStateException("socket lost"));
  }

  private void scheduleReconnect() {
    if (reconnectScheduled) return;
    reconnectScheduled = true;
    double cap = Math.min(w.cfg.backoffMaxMs, w.cfg.backoffInitialMs * Math.pow(2, attempts));
    long delay = (long) (ThreadLocalRandom.current().nextDouble() * cap);
    attempts++;
    w.sched.schedule(
        () -> {
          synchronized (Conn.this) {
            reconnectScheduled = false;
            if (wanted && !ready) connect();
          }
        },
        delay,
        TimeUnit.MILLISECONDS);
  }

  /** Queues a text frame on the current socket (the JDK allows one send in flight). */
  synchronized void send(String frame) {
    if (ws == null) return;
    if (sending) {
      outq.add(frame);
      return;
    }
    sending = true;
    doSend(frame);
  }

  private void doSend(String frame) {
    final WebSocket s = ws;
    final int g = gen;
    s.sendText(frame, true)
        .whenComplete(
            (x, e) -> {
              synchronized (Conn.this) {
                if (g != gen) return;
                if (e != null) {
                  lost(g);
                  return;
                }
                String next = outq.poll();
                if (next == null) sending = false;
                else doSend(next);
              }
            });
  }

  /** The handshake completed. */
  void becameReady(boolean resumed, long replay) {
    long now = System.nanoTime();
    handshakes++;
    if (isResumeAttempt) {
      if (resumed) resumes++;
      else {
        lostSessions++;
        catchUp = null;
      }
    }
    ready = true;
    attempts = 0;
    w.onReady(this, resumed, now - attemptStartNanos);
    if (catchUp != null && catchUp.isEmpty()) finishCatchUp(now);
    readyFuture.complete(null);
  }

  /** A published message arrived: {@code k} its key, {@code t} its publish time (nanoTime). */
  void onData(long k, long t) {
    long now = System.nanoTime();
    if (k <= 0 || k > Integer.MAX_VALUE) {
      errors++;
      return;
    }
    int key = (int) k;
    if (got.get(key)) {
      dupes++;
      w.dupes.incrementAndGet();
    } else {
      got.set(key);
      received++;
      w.onDelivery(this, key, t, now);
      if (catchUp != null) {
        catchUp.clear(key);
        if (catchUp.isEmpty()) finishCatchUp(now);
      }
    }
  }

  private void finishCatchUp(long now) {
    catchUp = null;
    w.onCaughtUp(this, now - catchUpStartNanos);
  }

  /** A failed resume: the old session's messages that did not arrive are lost for good. */
  void retireSession() {
    BitSet both = (BitSet) accepted.clone();
    both.and(got);
    retiredAccepted += accepted.cardinality();
    retiredReceived += both.cardinality();
    accepted.clear();
    got.clear();
    nextKey = 1;
  }

  synchronized void markAccepted(int key) {
    accepted.set(key);
  }

  synchronized int newKey() {
    return nextKey++;
  }

  synchronized boolean hasAllAccepted() {
    BitSet missing = (BitSet) accepted.clone();
    missing.andNot(got);
    return missing.isEmpty();
  }

  synchronized int missingCount() {
    BitSet missing = (BitSet) accepted.clone();
    missing.andNot(got);
    return missing.cardinality();
  }

  synchronized int receivedAccepted() {
    BitSet both = (BitSet) accepted.clone();
    both.and(got);
    return both.cardinality();
  }

  /** Relays one socket's callbacks, tagged with its generation. */
  private final class L implements WebSocket.Listener {
    private final int g;
    private final StringBuilder partial = new StringBuilder();

    L(int g) {
      this.g = g;
    }

    @Override
    public void onOpen(WebSocket s) {
      // Called before any onText and possibly before buildAsync completes: a server that speaks
      // first (Engine.IO's open packet) must find the socket set.
      synchronized (Conn.this) {
        if (g == gen && ws == null) ws = s;
      }
      s.request(1);
    }

    @Override
    public CompletionStage<?> onText(WebSocket s, CharSequence data, boolean last) {
      partial.append(data);
      if (last) {
        String text = partial.toString();
        partial.setLength(0);
        synchronized (Conn.this) {
          if (g == gen) {
            lastHeardNanos = System.nanoTime();
            try {
              Conn.this.onText(text);
            } catch (Exception e) {
              errors++;
              w.protocolErrors.incrementAndGet();
              w.note("bad frame: " + e + " in " + (text.length() > 200 ? text.substring(0, 200) : text));
            }
          }
        }
      }
      s.request(1);
      return null;
    }

    @Override
    public CompletionStage<?> onClose(WebSocket s, int statusCode, String reason) {
      if (statusCode != 1000 && statusCode != 1005 && statusCode != 1006) w.closeCode(statusCode);
      lost(g);
      return null;
    }

    @Override
    public void onError(WebSocket s, Throwable error) {
      lost(g);
    }
  }

  // =============================================================================================

  /** Tether's protocol v1 (docs/PROTOCOL.md). */
  static final class TetherConn extends Conn {
    String sessionId;
    String resumeToken;
    long lastSeq;
    long ackedSeq;
    long lastPingNanos;
    long heartbeatIntervalNanos = TimeUnit.SECONDS.toNanos(15);
    final Map<String, CompletableFuture<Void>> joins = new HashMap<>();

    TetherConn(Worker w, int idx, String user) {
      super(w, idx, user);
    }

    @Override
    URI uri() {
      return URI.create("ws://" + w.cfg.host + ":" + w.cfg.port + "/ws");
    }

    @Override
    void onOpen() {
      ObjectNode f = JSON.createObjectNode();
      if (sessionId == null) {
        f.put("type", "hello");
        f.put("user", user);
        f.put("client", "tether-bench/0.1");
      } else {
        f.put("type", "resume");
        f.put("sessionId", sessionId);
        f.put("resumeToken", resumeToken);
        f.put("lastSeq", lastSeq);
        f.put("user", user);
      }
      send(f.toString());
    }

    @Override
    void onText(String text) {
      JsonNode f;
      try {
        f = JSON.readTree(text);
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
      switch (f.path("type").asText()) {
        case "msg" -> {
          long seq = f.path("seq").asLong();
          if (seq <= lastSeq) {
            wireDupes++;
            w.wireDupes.incrementAndGet();
            return;
          }
          lastSeq = seq;
          JsonNode d = f.path("data");
          onData(d.path("k").asLong(), d.path("t").asLong());
          if (lastSeq - ackedSeq >= w.cfg.ackEvery) ack();
        }
        case "welcome" -> {
          boolean resumed = f.path("resumed").asBoolean();
          if (!resumed && sessionId != null) {
            lastSeq = 0;
            ackedSeq = 0;
            w.note("resume of " + sessionId + " answered " + f.path("reason").asText());
          }
          if (!resumed) retireSession(); // a new session: the old one's messages can never arrive
          sessionId = f.path("sessionId").asText();
          resumeToken = f.path("resumeToken").asText();
          heartbeatIntervalNanos = TimeUnit.MILLISECONDS.toNanos(f.path("heartbeat").path("interval").asLong(15000));
          lastPingNanos = System.nanoTime();
          target = sessionId;
          becameReady(resumed, f.path("replay").asLong());
        }
        case "joined" -> {
          CompletableFuture<Void> j = joins.remove(f.path("room").asText());
          if (j != null) j.complete(null);
        }
        case "error" -> {
          errors++;
          w.serverErrors.incrementAndGet();
          w.note("error frame: " + text);
        }
        case "kicked" -> w.note("kicked: " + text);
        default -> {} // pong, sent, bye
      }
    }

    private void ack() {
      if (lastSeq > ackedSeq) {
        ackedSeq = lastSeq;
        send("{\"type\":\"ack\",\"seq\":" + ackedSeq + "}");
      }
    }

    @Override
    synchronized void tick(long now) {
      if (!ready) return;
      ack();
      if (now - lastPingNanos >= heartbeatIntervalNanos) {
        lastPingNanos = now;
        send("{\"type\":\"ping\"}");
      }
    }

    @Override
    synchronized CompletableFuture<Void> join(String room) {
      CompletableFuture<Void> f = new CompletableFuture<>();
      joins.put(room, f);
      send("{\"type\":\"join\",\"room\":" + JSON.getNodeFactory().textNode(room) + "}");
      return f;
    }

    @Override
    synchronized void bye() {
      wanted = false;
      byeSent = true;
      send("{\"type\":\"bye\"}");
    }
  }

  // =============================================================================================

  /**
   * Socket.IO v5 over Engine.IO v4, WebSocket transport only, with connection state recovery:
   * {@code 0{sid,pingInterval,pingTimeout}} open, {@code 2}/{@code 3} ping/pong, {@code 40{pid,offset}}
   * connect, answered {@code 40{sid,pid}} (the same pid: recovered), {@code 42["msg",data,offset]}
   * events, {@code 42<id>[...]}/{@code 43<id>[...]} acks, {@code 41} disconnect.
   */
  static final class SioConn extends Conn {
    String sid;
    String pid;
    String offset;
    int nextAckId;

    SioConn(Worker w, int idx, String user) {
      super(w, idx, user);
    }

    @Override
    URI uri() {
      return URI.create("ws://" + w.cfg.host + ":" + w.cfg.port + "/socket.io/?EIO=4&transport=websocket");
    }

    @Override
    void onOpen() {
      // the server speaks first (Engine.IO open packet)
    }

    @Override
    void onText(String text) {
      if (text.isEmpty()) return;
      char engine = text.charAt(0);
      switch (engine) {
        case '0' -> { // Engine.IO open: {"sid","upgrades","pingInterval","pingTimeout","maxPayload"}
          if (pid == null) send("40");
          else {
            ObjectNode auth = JSON.createObjectNode();
            auth.put("pid", pid);
            if (offset != null) auth.put("offset", offset);
            send("40" + auth);
          }
        }
        case '2' -> send("3"); // ping -> pong
        case '1' -> w.note("engine close packet");
        case '4' -> onSocketIo(text);
        default -> {}
      }
    }

    private void onSocketIo(String text) {
      if (text.length() < 2) return;
      char type = text.charAt(1);
      switch (type) {
        case '0' -> { // CONNECT answer {"sid","pid"}
          JsonNode j = parse(text.substring(2));
          String newPid = j.path("pid").asText(null);
          String newSid = j.path("sid").asText();
          boolean resumed = pid != null && pid.equals(newPid) && newSid.equals(sid);
          if (!resumed) {
            if (pid != null) w.note("recovery of " + sid + " failed: new sid " + newSid + (offset == null ? " (no offset yet)" : ""));
            retireSession();
            offset = null;
          }
          sid = newSid;
          pid = newPid;
          target = sid;
          becameReady(resumed, -1);
        }
        case '1' -> w.note("server disconnect 41");
        case '2' -> { // EVENT 42[<id>]["name",...args]
          int i = 2;
          while (i < text.length() && Character.isDigit(text.charAt(i))) i++;
          String ackId = text.substring(2, i);
          JsonNode arr = parse(text.substring(i));
          if ("msg".equals(arr.path(0).asText()) && arr.size() >= 2) {
            if (arr.size() >= 3 && arr.get(arr.size() - 1).isTextual()) offset = arr.get(arr.size() - 1).asText();
            JsonNode d = arr.get(1);
            onData(d.path("k").asLong(), d.path("t").asLong());
          }
          if (!ackId.isEmpty()) send("43" + ackId + "[]");
        }
        case '3' -> { // ACK 43<id>[...]
          int i = 2;
          while (i < text.length() && Character.isDigit(text.charAt(i))) i++;
          int id = Integer.parseInt(text.substring(2, i));
          CompletableFuture<JsonNode> f = pendingAcks.remove(id);
          if (f != null) f.complete(parse(text.substring(i)));
        }
        case '4' -> { // CONNECT_ERROR
          errors++;
          w.serverErrors.incrementAndGet();
          w.note("connect error: " + text);
        }
        default -> {}
      }
    }

    private static JsonNode parse(String s) {
      try {
        return JSON.readTree(s);
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    }

    @Override
    void tick(long now) {
      // Engine.IO v4: the server pings, the client answers (see onText)
    }

    @Override
    synchronized CompletableFuture<Void> join(String room) {
      int id = nextAckId++;
      CompletableFuture<JsonNode> f = new CompletableFuture<>();
      pendingAcks.put(id, f);
      send("42" + id + "[\"join\"," + JSON.getNodeFactory().textNode(room) + "]");
      return f.thenApply(x -> null);
    }

    @Override
    synchronized void bye() {
      wanted = false;
      byeSent = true;
      send("41");
    }
  }
}
