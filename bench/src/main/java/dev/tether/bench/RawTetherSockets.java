package dev.tether.bench;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.Queue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Lean idle Tether clients for the density and storm scenarios (`--client raw`): N WebSockets
 * on one selector thread, each doing only what an idle client does — the HTTP upgrade, {@code
 * hello}, wait for {@code welcome}, a {@code ping} every heartbeat interval, a pong to a protocol
 * ping. A few hundred bytes of heap per socket instead of the JDK {@code HttpClient}'s ~35 KB, so
 * 100,000 sockets fit on one machine next to the servers, and a reconnect storm costs the
 * generator a fraction of the CPU the server needs ({@link #storm}: every socket reset at once,
 * then resumed with the SDKs' backoff and deadline). No message tracking: the other scenarios
 * use {@link Conn}.
 */
final class RawTetherSockets {
  private static final int CONNECTING = 0, UPGRADING = 1, HANDSHAKING = 2, READY = 3, CLOSED = 4;
  /** Storm: dropped, its next attempt not yet due. */
  private static final int WAITING = 5;
  private static final byte[] SESSION_ID = "\"sessionId\":\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] RESUME_TOKEN = "\"resumeToken\":\"".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] RESUMED = "\"resumed\":true".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] PING = "{\"type\":\"ping\"}".getBytes(StandardCharsets.UTF_8);
  private static final byte[] END_OF_HEAD = "\r\n\r\n".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] WELCOME = "\"welcome\"".getBytes(StandardCharsets.US_ASCII);

  private final String host;
  private final int port;
  private final int connectConcurrency;
  private final long heartbeatNanos;
  private final Selector selector;
  private final ByteBuffer readBuffer = ByteBuffer.allocateDirect(64 * 1024);
  private final List<Sock> socks = new ArrayList<>();
  private int nextToOpen;
  private int inFlight;

  final AtomicInteger ready = new AtomicInteger();
  final AtomicInteger failed = new AtomicInteger();
  /** First handshakes that failed and were tried again (only with {@link #retryFailedHellos}). */
  final AtomicLong helloRetries = new AtomicLong();
  private int helloRetriesAllowed;
  /** Handshakes over, either way (welcome or failure): the start is done when it reaches N. */
  private final AtomicInteger settled = new AtomicInteger();
  /** Sockets closed by the server (or reset) after their welcome. */
  final AtomicLong unexpectedDrops = new AtomicLong();
  final Map<Integer, AtomicLong> closeCodes = new ConcurrentHashMap<>();
  private volatile boolean stopping;

  // The storm, driven on the loop thread once requested.
  private volatile boolean stormRequested;
  private long stormStartNanos;
  private int backoffInitialMs;
  private int backoffMaxMs;
  private long attemptDeadlineNanos;
  private final PriorityQueue<Sock> due = new PriorityQueue<>(Comparator.comparingLong((Sock s) -> s.nextAttemptNanos));
  /** Milliseconds from the drop to the welcome, of the sessions resumed and of those that got a new session. */
  final Queue<Long> resumedMs = new ConcurrentLinkedQueue<>();
  final Queue<Long> newSessionMs = new ConcurrentLinkedQueue<>();
  /** Storm attempts given up by the client (no welcome within the deadline). */
  final AtomicLong attemptTimeouts = new AtomicLong();
  final AtomicLong attempts = new AtomicLong();

  /** One client: its channel, where its handshake is, and input carried over between reads. */
  private final class Sock {
    final String user;
    SocketChannel channel;
    int state = CONNECTING;
    byte[] carry; // bytes of an incomplete HTTP response or frame
    ByteBuffer unwritten; // output the socket did not take at once
    long lastPingNanos;
    String sessionId;
    String resumeToken;
    boolean resuming; // dropped by the storm and not welcomed back yet
    int failedAttempts; // of the storm's resume, or of the first hello with retryFailedHellos
    long attemptStartNanos;
    long nextAttemptNanos;

    Sock(String user) {
      this.user = user;
    }
  }

  RawTetherSockets(String host, int port, int connectConcurrency, long heartbeatMillis) throws IOException {
    this.host = host;
    this.port = port;
    this.connectConcurrency = connectConcurrency;
    this.heartbeatNanos = TimeUnit.MILLISECONDS.toNanos(heartbeatMillis);
    this.selector = Selector.open();
  }

  /**
   * A failed first handshake (503, a close such as 1011/1013/4001, a reset) is tried again, up to
   * {@code retries} times, after the SDKs' backoff, as a real client would, instead of being
   * counted as failed at once. It keeps its place among the {@code connectConcurrency} handshakes
   * while it waits. Call before {@link #start}.
   */
  void retryFailedHellos(int retries, int backoffInitialMs, int backoffMaxMs) {
    this.helloRetriesAllowed = retries;
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;
  }

  /** Opens {@code n} sessions (at most {@code connectConcurrency} handshakes at a time). */
  void start(int n, String userPrefix) {
    for (int i = 0; i < n; i++) socks.add(new Sock(userPrefix + i));
    Thread loop = new Thread(this::loop, "raw-sockets");
    loop.setDaemon(true);
    loop.start();
  }

  /** Waits until every socket's handshake is over (welcome or failure); returns how many are open now. */
  int awaitHandshakes(long timeoutMillis) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    while (settled.get() < socks.size() && System.nanoTime() < deadline) Thread.sleep(50);
    return ready.get();
  }

  void closeAll() {
    stopping = true;
    selector.wakeup();
  }

  /**
   * Resets every open socket at once (no close frame), then each client resumes as the SDKs do:
   * first attempt after a random delay below {@code backoffInitialMs}, an attempt given up after
   * {@code attemptDeadlineMs} without a welcome, the next after a random delay below
   * min(backoffMaxMs, backoffInitialMs * 2^failures).
   */
  void storm(int backoffInitialMs, int backoffMaxMs, int attemptDeadlineMs) {
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;
    this.attemptDeadlineNanos = TimeUnit.MILLISECONDS.toNanos(attemptDeadlineMs);
    stormRequested = true;
    selector.wakeup();
  }

  /** Sessions welcomed back since the storm, resumed or not. */
  int stormSettled() {
    return resumedMs.size() + newSessionMs.size();
  }

  private void dropAll() {
    stormRequested = false;
    stormStartNanos = System.nanoTime();
    for (Sock s : socks) {
      if (s.state != READY) continue;
      reset(s);
      ready.decrementAndGet();
      s.resuming = true;
      s.failedAttempts = 0;
      scheduleAttempt(s, backoffInitialMs);
    }
  }

  private void scheduleAttempt(Sock s, long maxDelayMs) {
    s.state = WAITING;
    s.nextAttemptNanos = System.nanoTime() + (long) (ThreadLocalRandom.current().nextDouble() * TimeUnit.MILLISECONDS.toNanos(maxDelayMs));
    due.add(s);
  }

  /** A storm attempt failed (closed, reset, or past its deadline): the next one after a backoff. */
  private void retry(Sock s) {
    reset(s);
    s.failedAttempts++;
    scheduleAttempt(s, Math.min(backoffMaxMs, (long) (backoffInitialMs * Math.pow(2, s.failedAttempts))));
  }

  /** Closes the socket with a TCP reset, as a client that lost its network does. */
  private void reset(Sock s) {
    try {
      s.channel.setOption(StandardSocketOptions.SO_LINGER, 0);
      s.channel.close();
    } catch (IOException ignored) {
      // gone anyway
    }
    s.carry = null;
    s.unwritten = null;
  }

  private void startDueAttempts(long now) {
    while (!due.isEmpty() && due.peek().nextAttemptNanos <= now) {
      Sock s = due.poll();
      s.attemptStartNanos = now;
      attempts.incrementAndGet();
      connect(s);
    }
  }

  private void loop() {
    long lastHeartbeatScan = System.nanoTime();
    try {
      while (!stopping) {
        while (inFlight < connectConcurrency && nextToOpen < socks.size()) open(socks.get(nextToOpen++));
        if (stormRequested) dropAll();
        startDueAttempts(System.nanoTime());
        selector.select(due.isEmpty() ? 100 : 10);
        for (SelectionKey key : selector.selectedKeys()) {
          Sock s = (Sock) key.attachment();
          try {
            if (key.isValid() && key.isConnectable()) onConnected(s, key);
            if (key.isValid() && key.isWritable()) flush(s, key);
            if (key.isValid() && key.isReadable()) onReadable(s);
          } catch (IOException | RuntimeException e) {
            close(s, -1);
          }
        }
        selector.selectedKeys().clear();
        long now = System.nanoTime();
        if (now - lastHeartbeatScan >= TimeUnit.SECONDS.toNanos(1)) {
          lastHeartbeatScan = now;
          for (Sock s : socks) {
            if (s.state == READY && now - s.lastPingNanos >= heartbeatNanos) {
              s.lastPingNanos = now;
              sendText(s, PING);
            } else if (s.resuming && s.state != WAITING && now - s.attemptStartNanos >= attemptDeadlineNanos) {
              attemptTimeouts.incrementAndGet();
              retry(s);
            }
          }
        }
      }
    } catch (IOException e) {
      e.printStackTrace();
    } finally {
      for (Sock s : socks) {
        try {
          if (s.channel != null) s.channel.close();
        } catch (IOException ignored) {
          // closing anyway
        }
      }
    }
  }

  private void open(Sock s) {
    inFlight++;
    connect(s);
  }

  private void connect(Sock s) {
    s.state = CONNECTING;
    try {
      s.channel = SocketChannel.open();
      s.channel.configureBlocking(false);
      s.channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
      s.channel.connect(new InetSocketAddress(host, port));
      s.channel.register(selector, SelectionKey.OP_CONNECT, s);
    } catch (IOException e) {
      if (s.resuming) {
        retry(s);
      } else if (!retryHello(s)) {
        handshakeFailed(s);
      }
    }
  }

  /** A first handshake failed: try it again after a backoff if retries are allowed and left. */
  private boolean retryHello(Sock s) {
    if (stopping || s.failedAttempts >= helloRetriesAllowed) return false;
    helloRetries.incrementAndGet();
    retry(s);
    return true;
  }

  private void onConnected(Sock s, SelectionKey key) throws IOException {
    s.channel.finishConnect();
    key.interestOps(SelectionKey.OP_READ);
    s.state = UPGRADING;
    String request =
        "GET /ws HTTP/1.1\r\nHost: " + host + ":" + port + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    write(s, ByteBuffer.wrap(request.getBytes(StandardCharsets.US_ASCII)));
  }

  private void onReadable(Sock s) throws IOException {
    readBuffer.clear();
    int n = s.channel.read(readBuffer);
    if (n < 0) {
      close(s, -1);
      return;
    }
    if (n == 0) return;
    readBuffer.flip();
    byte[] input;
    if (s.carry == null) {
      input = new byte[readBuffer.remaining()];
      readBuffer.get(input);
    } else {
      input = new byte[s.carry.length + readBuffer.remaining()];
      System.arraycopy(s.carry, 0, input, 0, s.carry.length);
      readBuffer.get(input, s.carry.length, input.length - s.carry.length);
      s.carry = null;
    }
    int pos = 0;
    if (s.state == UPGRADING) {
      int end = indexOf(input, 0, input.length, END_OF_HEAD);
      if (end < 0) {
        s.carry = input;
        return;
      }
      String head = new String(input, 0, end, StandardCharsets.US_ASCII);
      if (!head.startsWith("HTTP/1.1 101")) {
        close(s, head.startsWith("HTTP/1.1 503") ? 503 : -1); // 503: the server's handshake queue was full
        return;
      }
      s.state = HANDSHAKING;
      String handshake =
          s.resuming
              ? "{\"type\":\"resume\",\"sessionId\":\"" + s.sessionId + "\",\"resumeToken\":\"" + s.resumeToken + "\",\"lastSeq\":0}"
              : "{\"type\":\"hello\",\"user\":\"" + s.user + "\",\"client\":\"tether-bench-raw/0.1\"}";
      sendText(s, handshake.getBytes(StandardCharsets.UTF_8));
      pos = end + 4;
    }
    while (pos < input.length && s.state != CLOSED) {
      int consumed = frame(s, input, pos);
      if (consumed == 0) {
        s.carry = java.util.Arrays.copyOfRange(input, pos, input.length);
        return;
      }
      pos += consumed;
    }
  }

  /** Handles one server frame at {@code pos}; returns its length, 0 if it is not complete yet. */
  private int frame(Sock s, byte[] in, int pos) {
    if (in.length - pos < 2) return 0;
    int opcode = in[pos] & 0x0f;
    long len = in[pos + 1] & 0x7f;
    int header = 2;
    if (len == 126) {
      if (in.length - pos < 4) return 0;
      len = ((in[pos + 2] & 0xff) << 8) | (in[pos + 3] & 0xff);
      header = 4;
    } else if (len == 127) {
      if (in.length - pos < 10) return 0;
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | (in[pos + 2 + i] & 0xff);
      header = 10;
    }
    if (in.length - pos < header + len) return 0;
    int start = pos + header;
    switch (opcode) {
      case 1 -> {
        if (s.state == HANDSHAKING && indexOf(in, start, start + (int) len, WELCOME) >= 0) {
          s.state = READY;
          s.lastPingNanos = System.nanoTime();
          ready.incrementAndGet();
          if (s.resuming) {
            s.resuming = false;
            long ms = TimeUnit.NANOSECONDS.toMillis(s.lastPingNanos - stormStartNanos);
            (indexOf(in, start, start + (int) len, RESUMED) >= 0 ? resumedMs : newSessionMs).add(ms);
          } else {
            settled.incrementAndGet();
            inFlight--;
          }
          s.sessionId = jsonString(in, start, start + (int) len, SESSION_ID);
          s.resumeToken = jsonString(in, start, start + (int) len, RESUME_TOKEN);
        }
      }
      case 8 -> close(s, len >= 2 ? ((in[start] & 0xff) << 8) | (in[start + 1] & 0xff) : 1005);
      case 9 -> sendFrame(s, 0x8A, java.util.Arrays.copyOfRange(in, start, start + (int) len));
      default -> {} // pong, continuation: nothing to do for an idle client
    }
    return header + (int) len;
  }

  private void sendText(Sock s, byte[] payload) {
    sendFrame(s, 0x81, payload);
  }

  /** A client frame: masked (with a zero key, so the payload goes as it is). */
  private void sendFrame(Sock s, int firstByte, byte[] payload) {
    int len = payload.length;
    ByteBuffer b = ByteBuffer.allocate(len + (len < 126 ? 6 : 8));
    b.put((byte) firstByte);
    if (len < 126) {
      b.put((byte) (0x80 | len));
    } else {
      b.put((byte) (0x80 | 126));
      b.putShort((short) len);
    }
    b.putInt(0);
    b.put(payload);
    b.flip();
    try {
      write(s, b);
    } catch (IOException e) {
      close(s, -1);
    }
  }

  private void write(Sock s, ByteBuffer b) throws IOException {
    if (s.unwritten != null) {
      ByteBuffer joined = ByteBuffer.allocate(s.unwritten.remaining() + b.remaining());
      joined.put(s.unwritten).put(b).flip();
      s.unwritten = joined;
      return;
    }
    s.channel.write(b);
    if (b.hasRemaining()) {
      s.unwritten = b;
      s.channel.keyFor(selector).interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
    }
  }

  private void flush(Sock s, SelectionKey key) throws IOException {
    if (s.unwritten == null) return;
    s.channel.write(s.unwritten);
    if (!s.unwritten.hasRemaining()) {
      s.unwritten = null;
      key.interestOps(SelectionKey.OP_READ);
    }
  }

  private void close(Sock s, int code) {
    if (s.state == CLOSED || s.state == WAITING) return;
    closeCodes.computeIfAbsent(code, c -> new AtomicLong()).incrementAndGet();
    if (s.resuming && !stopping) {
      retry(s);
      return;
    }
    if (s.state == READY) {
      unexpectedDrops.incrementAndGet();
      ready.decrementAndGet();
    } else if (retryHello(s)) {
      return;
    } else {
      handshakeFailed(s);
    }
    s.state = CLOSED;
    try {
      s.channel.close();
    } catch (IOException ignored) {
      // gone anyway
    }
  }

  private void handshakeFailed(Sock s) {
    s.state = CLOSED;
    failed.incrementAndGet();
    settled.incrementAndGet();
    inFlight--;
  }

  /** The value of the JSON string field whose {@code "name":"} is {@code key}, in {@code in[from, to)}; null if absent. */
  private static String jsonString(byte[] in, int from, int to, byte[] key) {
    int at = indexOf(in, from, to, key);
    if (at < 0) return null;
    int start = at + key.length;
    int end = start;
    while (end < to && in[end] != '"') end++;
    return new String(in, start, end - start, StandardCharsets.UTF_8);
  }

  /** Where {@code what} first starts in {@code in[from, to)}, or -1. */
  private static int indexOf(byte[] in, int from, int to, byte[] what) {
    outer:
    for (int i = from; i + what.length <= to; i++) {
      for (int j = 0; j < what.length; j++) if (in[i + j] != what[j]) continue outer;
      return i;
    }
    return -1;
  }
}
