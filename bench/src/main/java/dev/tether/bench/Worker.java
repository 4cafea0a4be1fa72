package dev.tether.bench;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * One load-generator process. Reads its configuration (one JSON line) from stdin, runs its share
 * of a scenario, and talks to the driver ({@link Bench}) in lines: it prints {@code EVENT name
 * {json}} at each barrier and waits for a {@code GO} line, and ends with {@code RESULT {json}}.
 * Everything else it prints goes to stderr.
 */
public final class Worker {
  /** The worker's configuration, filled by the driver. */
  public static final class Cfg {
    public String scenario;
    public String server; // tether | socketio
    public String host = "127.0.0.1";
    public int port;
    public int workerId;
    public int n; // sessions in this worker
    public int connectConcurrency = 200;
    public int connectTimeoutMs = 10_000;
    public int handshakeTimeoutMs = 10_000;
    public int backoffInitialMs = 500;
    public int backoffMaxMs = 5_000;
    public int ackEvery = 20;
    public int socketsPerHttpClient = 1000;
    public int warmup = 50; // density: sessions opened and closed before the baseline
    public int connectLimitS = 1800; // raw clients: how long the connect phase may take before counting
    public int helloRetries = 0; // raw clients, density: tries again for a failed first handshake (0: counted as failed)
    // storm
    public int stormTimeoutS = 120;
    // drops
    public double ratePerSession = 2.0;
    public double killEveryS = 15;
    public int durationS = 60;
    public int drainS = 30;
    // throughput / latency
    public int warmupS = 5;
    public int concurrency = 64;
    public String mode = "session"; // session | room
    public int roomSize = 10;
    public int batch = 1; // throughput/latency, session mode: messages per publish request (POST /api/messages)
    public double rate = 500; // latency: messages/s for this worker
    // resume-idle
    public int missed = 100;
    public int resumeConcurrency = 1;
    public int payloadBytes = 0; // extra padding in each message's data
    public String client = "jdk"; // jdk (Conn, every scenario) | raw (RawTetherSockets: Tether density only)
  }

  static final ObjectMapper JSON =
      new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

  final Cfg cfg;
  final ExecutorService pool = Executors.newFixedThreadPool(4, daemon("ws"));
  final ScheduledExecutorService sched = Executors.newScheduledThreadPool(2, daemon("sched"));
  final List<HttpClient> wsClients = new ArrayList<>();
  final HttpClient api;
  final List<Conn> conns = new ArrayList<>();
  final String padding;

  // counters
  final AtomicLong dupes = new AtomicLong();
  final AtomicLong wireDupes = new AtomicLong();
  final AtomicLong deliveries = new AtomicLong();
  final AtomicLong windowReceipts = new AtomicLong();
  final AtomicLong published = new AtomicLong();
  final AtomicLong pubErrors = new AtomicLong();
  final AtomicLong handshakeTimeouts = new AtomicLong();
  final AtomicLong unexpectedDrops = new AtomicLong();
  final AtomicLong protocolErrors = new AtomicLong();
  final AtomicLong serverErrors = new AtomicLong();
  final AtomicLong kills = new AtomicLong();
  final AtomicLong saturated = new AtomicLong();
  final Map<Integer, AtomicLong> closeCodes = new ConcurrentHashMap<>();
  final Map<Integer, AtomicLong> pubStatus = new ConcurrentHashMap<>();
  final List<String> notes = Collections.synchronizedList(new ArrayList<>());
  final AtomicLong noteCount = new AtomicLong();

  // measurements
  final Hist latency = new Hist(); // publish -> receipt, us, messages published in the window
  final Hist readyTime = new Hist(); // socket attempt start -> welcome / 40, us
  final Hist catchUp = new Hist(); // reconnect attempt start -> every accepted message received, us
  final List<Long> stormResumed = Collections.synchronizedList(new ArrayList<>()); // ms since drop
  final List<Long> stormNew = Collections.synchronizedList(new ArrayList<>());
  volatile long windowStart = Long.MAX_VALUE;
  volatile long windowEnd = Long.MIN_VALUE;
  volatile long stormT0;
  /** Sessions of a --client raw storm (there are no {@link Conn}s then). */
  private int rawSessions;
  volatile boolean recordReady;
  volatile boolean recordCatchUp;
  final Map<String, Object> extra = new LinkedHashMap<>();

  public static void main(String[] args) throws Exception {
    BufferedReader first = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    // The first line is the configuration; the same reader then serves the GO lines.
    String line = first.readLine();
    Cfg cfg = JSON.readValue(line, Cfg.class);
    Worker w = new Worker(cfg, first);
    int code = 0;
    try {
      w.run();
    } catch (Throwable t) {
      t.printStackTrace();
      code = 1;
    } finally {
      w.shutdown();
    }
    System.exit(code);
  }

  private final BufferedReader control;

  Worker(Cfg cfg, BufferedReader control) {
    this.cfg = cfg;
    this.control = control;
    api =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .executor(pool)
            .connectTimeout(Duration.ofSeconds(10))
            .build();
    padding = cfg.payloadBytes > 0 ? "x".repeat(cfg.payloadBytes) : null;
  }

  HttpClient http(int idx) {
    return wsClients.get(idx / cfg.socketsPerHttpClient);
  }

  void run() throws Exception {
    if ("raw".equals(cfg.client)) {
      if (!List.of("density", "storm").contains(cfg.scenario) || !"tether".equals(cfg.server)) {
        throw new IllegalArgumentException("--client raw runs the density and storm scenarios against Tether only");
      }
      if ("storm".equals(cfg.scenario)) {
        stormRaw();
      } else {
        densityRaw();
      }
      result();
      return;
    }
    int clients = (cfg.n + cfg.warmup) / cfg.socketsPerHttpClient + 1;
    for (int i = 0; i < clients; i++) {
      wsClients.add(HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).executor(pool).build());
    }
    for (int i = 0; i < cfg.n; i++) conns.add(newConn(i, "u" + cfg.workerId + "-" + i));
    sched.scheduleAtFixedRate(this::tick, 1, 1, TimeUnit.SECONDS);
    switch (cfg.scenario) {
      case "density" -> density();
      case "storm" -> storm();
      case "drops" -> drops();
      case "throughput", "latency" -> throughput();
      case "resume-idle" -> resumeIdle();
      default -> throw new IllegalArgumentException("unknown scenario " + cfg.scenario);
    }
    extra.put("readyAtEnd", readyCount());
    for (Conn c : conns) {
      c.wanted = false;
      c.kill();
    }
    result();
  }

  Conn newConn(int idx, String user) {
    return "tether".equals(cfg.server) ? new Conn.TetherConn(this, idx, user) : new Conn.SioConn(this, idx, user);
  }

  private void tick() {
    long now = System.nanoTime();
    for (Conn c : conns) {
      try {
        c.tick(now);
      } catch (RuntimeException e) {
        note("tick: " + e);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Scenarios

  private void density() throws Exception {
    // Warm-up: a few sessions opened and ended cleanly, so the baseline has the code paths loaded.
    List<Conn> warm = new ArrayList<>();
    for (int i = 0; i < cfg.warmup; i++) {
      Conn c = newConn(cfg.n + i, "warm" + cfg.workerId + "-" + i);
      warm.add(c);
    }
    connectAll(warm);
    for (Conn c : warm) c.bye();
    Thread.sleep(2000);
    for (Conn c : warm) c.kill();
    event("warm", Map.of("warm", warm.size()));
    awaitGo();
    long t0 = System.nanoTime();
    recordReady = true;
    int ok = connectAll(conns);
    recordReady = false;
    long ms = (System.nanoTime() - t0) / 1_000_000;
    extra.put("connected", ok);
    extra.put("connectMs", ms);
    event("connected", Map.of("connected", ok, "ms", ms));
    awaitGo();
  }

  /** density with {@link RawTetherSockets}: the same barriers, a few hundred bytes per client. */
  private void densityRaw() throws Exception {
    RawTetherSockets warm = new RawTetherSockets(cfg.host, cfg.port, cfg.connectConcurrency, 15_000);
    warm.start(cfg.warmup, "warm" + cfg.workerId + "-");
    warm.awaitHandshakes(120_000);
    warm.closeAll();
    Thread.sleep(2000);
    event("warm", Map.of("warm", cfg.warmup));
    awaitGo();
    RawTetherSockets raw = new RawTetherSockets(cfg.host, cfg.port, cfg.connectConcurrency, 15_000);
    raw.retryFailedHellos(cfg.helloRetries, cfg.backoffInitialMs, cfg.backoffMaxMs);
    long t0 = System.nanoTime();
    raw.start(cfg.n, "u" + cfg.workerId + "-");
    int ok = raw.awaitHandshakes(TimeUnit.SECONDS.toMillis(cfg.connectLimitS));
    long ms = (System.nanoTime() - t0) / 1_000_000;
    extra.put("connected", ok);
    extra.put("connectMs", ms);
    extra.put("failedHandshakes", raw.failed.get());
    extra.put("helloRetries", raw.helloRetries.get());
    event("connected", Map.of("connected", ok, "ms", ms));
    awaitGo();
    extra.put("readyAtEnd", raw.ready.get());
    unexpectedDrops.addAndGet(raw.unexpectedDrops.get());
    raw.closeCodes.forEach((code, count) -> closeCodes.computeIfAbsent(code, c -> new AtomicLong()).addAndGet(count.get()));
    raw.closeAll();
  }

  /**
   * storm with {@link RawTetherSockets}: the generator's own cost per reconnect is small, so the
   * time measured is the server's. No priming message and no post-check (the lean clients track
   * no messages); the sessions' resumption is what is measured.
   */
  private void stormRaw() throws Exception {
    RawTetherSockets raw = new RawTetherSockets(cfg.host, cfg.port, cfg.connectConcurrency, 15_000);
    raw.start(cfg.n, "u" + cfg.workerId + "-");
    int ok = raw.awaitHandshakes(TimeUnit.SECONDS.toMillis(cfg.connectLimitS));
    extra.put("connected", ok);
    rawSessions = ok;
    event("ready", Map.of("connected", ok));
    awaitGo();
    stormT0 = System.nanoTime();
    raw.storm(cfg.backoffInitialMs, cfg.backoffMaxMs, cfg.connectTimeoutMs + cfg.handshakeTimeoutMs);
    long deadline = stormT0 + TimeUnit.SECONDS.toNanos(cfg.stormTimeoutS);
    while (System.nanoTime() < deadline && raw.stormSettled() < ok) Thread.sleep(20);
    extra.put("readyAfterStorm", raw.ready.get());
    extra.put("stormAttempts", raw.attempts.get());
    extra.put("postCheck", "not run with --client raw");
    stormResumed.addAll(raw.resumedMs);
    stormNew.addAll(raw.newSessionMs);
    handshakeTimeouts.addAndGet(raw.attemptTimeouts.get());
    unexpectedDrops.addAndGet(raw.unexpectedDrops.get());
    raw.closeCodes.forEach((code, count) -> closeCodes.computeIfAbsent(code, c -> new AtomicLong()).addAndGet(count.get()));
    raw.closeAll();
  }

  private void storm() throws Exception {
    int ok = connectAll(conns);
    extra.put("connected", ok);
    // One message each, so that every Socket.IO client holds an offset (recovery needs one) and
    // every Tether session has something in its history; the same for both servers.
    primeAll();
    event("ready", Map.of("connected", ok));
    awaitGo();
    stormT0 = System.nanoTime();
    for (Conn c : conns) {
      c.wanted = true;
      c.kill();
    }
    long killedMs = (System.nanoTime() - stormT0) / 1_000_000;
    extra.put("killLoopMs", killedMs);
    long deadline = stormT0 + TimeUnit.SECONDS.toNanos(cfg.stormTimeoutS);
    while (System.nanoTime() < deadline && readyCount() < conns.size()) Thread.sleep(20);
    int readyAfter = readyCount();
    extra.put("readyAfterStorm", readyAfter);
    // Post-check: one more message to each session, which must arrive.
    long before = totalReceivedAccepted();
    int sent = publishToAll(1);
    waitDelivered(10);
    extra.put("postCheckSent", sent);
    extra.put("postCheckReceived", totalReceivedAccepted() - before);
  }

  private void drops() throws Exception {
    int ok = connectAll(conns);
    extra.put("connected", ok);
    for (Conn c : conns) c.wanted = true;
    primeAll(); // every Socket.IO client holds an offset before its first kill; the same for Tether
    event("ready", Map.of("connected", ok));
    awaitGo();
    long start = System.nanoTime();
    long end = start + TimeUnit.SECONDS.toNanos(cfg.durationS);
    windowStart = start;
    windowEnd = end;
    recordCatchUp = true;
    List<ScheduledFuture<?>> tasks = new ArrayList<>();
    long periodUs = (long) (1_000_000 / cfg.ratePerSession);
    Semaphore sem = new Semaphore(cfg.concurrency);
    for (Conn c : conns) {
      long phase = ThreadLocalRandom.current().nextLong(periodUs);
      tasks.add(
          sched.scheduleAtFixedRate(
              () -> {
                if (System.nanoTime() >= end) return;
                if (!sem.tryAcquire()) {
                  saturated.incrementAndGet();
                  return;
                }
                publishSession(c, System.nanoTime()).whenComplete((x, e) -> sem.release());
              },
              phase,
              periodUs,
              TimeUnit.MICROSECONDS));
      scheduleKill(c, end, (long) (ThreadLocalRandom.current().nextDouble() * cfg.killEveryS * 1000));
    }
    Thread.sleep(TimeUnit.NANOSECONDS.toMillis(end - System.nanoTime()) + 50);
    for (ScheduledFuture<?> t : tasks) t.cancel(false);
    sem.acquire(cfg.concurrency); // in-flight publishes answered
    sem.release(cfg.concurrency);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (System.nanoTime() < deadline && readyCount() < conns.size()) Thread.sleep(20);
    waitDelivered(cfg.drainS);
    recordCatchUp = false;
  }

  private void scheduleKill(Conn c, long end, long delayMs) {
    sched.schedule(
        () -> {
          if (System.nanoTime() >= end) return;
          kills.incrementAndGet();
          c.kill();
          long next = (long) (cfg.killEveryS * 1000 * (0.8 + 0.4 * ThreadLocalRandom.current().nextDouble()));
          scheduleKill(c, end, next);
        },
        delayMs,
        TimeUnit.MILLISECONDS);
  }

  /** throughput: closed loop with {@code concurrency} publishers; latency: open loop at {@code rate}/s. */
  private void throughput() throws Exception {
    int ok = connectAll(conns);
    extra.put("connected", ok);
    for (Conn c : conns) c.wanted = true;
    List<Room> rooms = new ArrayList<>();
    if ("room".equals(cfg.mode)) {
      List<CompletableFuture<Void>> joins = new ArrayList<>();
      for (int i = 0; i < conns.size(); i++) {
        if (i % cfg.roomSize == 0) rooms.add(new Room("bench-" + cfg.workerId + "-" + (i / cfg.roomSize)));
        Room r = rooms.get(rooms.size() - 1);
        r.members.add(conns.get(i));
        joins.add(conns.get(i).join(r.name));
      }
      CompletableFuture.allOf(joins.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
      extra.put("rooms", rooms.size());
    }
    event("ready", Map.of("connected", ok));
    awaitGo();
    long start = System.nanoTime();
    windowStart = start + TimeUnit.SECONDS.toNanos(cfg.warmupS);
    windowEnd = windowStart + TimeUnit.SECONDS.toNanos(cfg.durationS);
    final long end = windowEnd;
    AtomicLong rr = new AtomicLong();
    long receiptsAtStart;
    if ("throughput".equals(cfg.scenario)) {
      CompletableFuture<?>[] lanes = new CompletableFuture<?>[cfg.concurrency];
      for (int i = 0; i < cfg.concurrency; i++) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        lanes[i] = done;
        lane(rooms, rr, end, done);
      }
      CompletableFuture.allOf(lanes).get(cfg.warmupS + cfg.durationS + 120, TimeUnit.SECONDS);
    } else {
      // open loop: the intended send time is the timestamp (no coordinated omission)
      long periodNs = (long) (1e9 / cfg.rate);
      Semaphore sem = new Semaphore(1024);
      for (long i = 0; ; i++) {
        long intended = start + i * periodNs;
        if (intended >= end) break;
        long wait = intended - System.nanoTime();
        if (wait > 0) LockSupport.parkNanos(wait);
        if (!sem.tryAcquire()) {
          saturated.incrementAndGet();
          sem.acquire();
        }
        CompletableFuture<Boolean> f =
            !rooms.isEmpty()
                ? publishRoom(rooms.get((int) (rr.getAndIncrement() % rooms.size())), intended)
                : cfg.batch > 1
                    ? publishBatch(nextTargets(rr), intended)
                    : publishSession(conns.get((int) (rr.getAndIncrement() % conns.size())), intended);
        f.whenComplete((x, e) -> sem.release());
      }
      sem.acquire(1024);
    }
    extra.put("publishSeconds", (System.nanoTime() - start) / 1e9);
    waitDelivered(cfg.drainS);
  }

  private void lane(List<Room> rooms, AtomicLong rr, long end, CompletableFuture<Void> done) {
    if (System.nanoTime() >= end) {
      done.complete(null);
      return;
    }
    CompletableFuture<Boolean> f =
        !rooms.isEmpty()
            ? publishRoom(rooms.get((int) (rr.getAndIncrement() % rooms.size())), System.nanoTime())
            : cfg.batch > 1
                ? publishBatch(nextTargets(rr), System.nanoTime())
                : publishSession(conns.get((int) (rr.getAndIncrement() % conns.size())), System.nanoTime());
    f.whenComplete((x, e) -> lane(rooms, rr, end, done));
  }

  private void resumeIdle() throws Exception {
    int ok = connectAll(conns);
    extra.put("connected", ok);
    primeAll();
    event("ready", Map.of("connected", ok));
    awaitGo();
    for (Conn c : conns) {
      c.wanted = false;
      c.kill();
    }
    Thread.sleep(1000); // the servers notice the closed sockets
    int sent = publishToAll(cfg.missed);
    extra.put("missedPublished", sent);
    event("published", Map.of("accepted", sent));
    awaitGo();
    recordReady = true;
    recordCatchUp = true;
    Semaphore sem = new Semaphore(cfg.resumeConcurrency);
    List<CompletableFuture<Void>> all = new ArrayList<>();
    for (Conn c : conns) {
      sem.acquire();
      CompletableFuture<Void> caught = new CompletableFuture<>();
      caughtUpWaiters.put(c, caught);
      c.wanted = true;
      c.connect();
      CompletableFuture<Void> f =
          caught.orTimeout(30, TimeUnit.SECONDS).whenComplete((x, e) -> sem.release());
      all.add(f.exceptionally(e -> null));
    }
    CompletableFuture.allOf(all.toArray(CompletableFuture[]::new)).get(120, TimeUnit.SECONDS);
    recordReady = false;
    recordCatchUp = false;
    long complete = conns.stream().filter(Conn::hasAllAccepted).count();
    extra.put("completeSessions", complete);
  }

  final Map<Conn, CompletableFuture<Void>> caughtUpWaiters = new ConcurrentHashMap<>();

  // ---------------------------------------------------------------------------------------------
  // Connections, publishing

  /** Connects every conn (at most connectConcurrency handshakes in flight); returns how many are ready. */
  int connectAll(List<Conn> list) throws Exception {
    Semaphore sem = new Semaphore(cfg.connectConcurrency);
    List<CompletableFuture<Void>> fs = new ArrayList<>();
    for (Conn c : list) {
      sem.acquire();
      c.wanted = true; // retry with backoff until the handshake completes
      CompletableFuture<Void> f = c.connect();
      fs.add(f);
      f.whenComplete((x, e) -> sem.release());
    }
    try {
      CompletableFuture.allOf(fs.toArray(CompletableFuture[]::new)).get(300, TimeUnit.SECONDS);
    } catch (Exception e) {
      note("connectAll: " + e);
    }
    int ok = 0;
    for (Conn c : list) if (c.ready) ok++;
    return ok;
  }

  int readyCount() {
    int r = 0;
    for (Conn c : conns) if (c.ready) r++;
    return r;
  }

  void primeAll() throws Exception {
    publishToAll(1);
    waitDelivered(30);
  }

  /** Publishes {@code count} messages to every session (concurrency-limited); returns how many were accepted. */
  int publishToAll(int count) throws Exception {
    Semaphore sem = new Semaphore(cfg.concurrency);
    AtomicInteger acceptedCount = new AtomicInteger();
    for (int j = 0; j < count; j++) {
      for (Conn c : conns) {
        sem.acquire();
        publishSession(c, System.nanoTime())
            .whenComplete(
                (okay, e) -> {
                  if (Boolean.TRUE.equals(okay)) acceptedCount.incrementAndGet();
                  sem.release();
                });
      }
    }
    sem.acquire(cfg.concurrency);
    sem.release(cfg.concurrency);
    return acceptedCount.get();
  }

  long totalReceivedAccepted() {
    long s = 0;
    for (Conn c : conns) s += c.receivedAccepted();
    return s;
  }

  void waitDelivered(int seconds) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
    while (System.nanoTime() < deadline) {
      boolean all = true;
      for (Conn c : conns) {
        if (!c.hasAllAccepted()) {
          all = false;
          break;
        }
      }
      if (all) return;
      Thread.sleep(50);
    }
  }

  private String body(int key, long t) {
    return "{\"data\":{\"k\":" + key + ",\"t\":" + t + (padding == null ? "" : ",\"p\":\"" + padding + "\"") + "}}";
  }

  CompletableFuture<Boolean> publishSession(Conn c, long t) {
    String target = c.target;
    if (target == null) return CompletableFuture.completedFuture(false);
    int key = c.newKey();
    return post("/api/sessions/" + URLEncoder.encode(target, StandardCharsets.UTF_8) + "/messages", body(key, t))
        .thenApply(
            ok -> {
              if (ok) c.markAccepted(key);
              return ok;
            });
  }

  /** The next {@code batch} sessions in round-robin order (distinct while batch <= n). */
  private List<Conn> nextTargets(AtomicLong rr) {
    List<Conn> targets = new ArrayList<>(cfg.batch);
    for (int i = 0; i < cfg.batch; i++) targets.add(conns.get((int) (rr.getAndIncrement() % conns.size())));
    return targets;
  }

  /**
   * One batch publish: {@code POST /api/messages} with one entry per target session (both
   * servers take the same body). Accepted entries are those the answer gives a seq (Tether) or
   * all of them on a 202 (the baseline, which cannot tell).
   */
  CompletableFuture<Boolean> publishBatch(List<Conn> targets, long t) {
    StringBuilder body = new StringBuilder("{\"messages\":[");
    int[] keys = new int[targets.size()];
    for (int i = 0; i < targets.size(); i++) {
      Conn c = targets.get(i);
      if (c.target == null) {
        keys[i] = -1;
        continue;
      }
      keys[i] = c.newKey();
      String entry = body(keys[i], t);
      if (body.charAt(body.length() - 1) != '[') body.append(',');
      body.append("{\"sessionId\":").append(JSON.getNodeFactory().textNode(c.target).toString()).append(',').append(entry, 1, entry.length());
    }
    body.append("]}");
    if (Arrays.stream(keys).allMatch(k -> k < 0)) return CompletableFuture.completedFuture(true); // nothing to send
    // published counts the entries the server accepted, not the request's size: an entry answered
    // with an error is a publish error.
    return postForBody("/api/messages", body.toString(), 0)
        .thenApply(
            answer -> {
              if (answer == null) return false;
              JsonNode results = answer.path("results");
              for (int i = 0, r = 0; i < targets.size(); i++) {
                if (keys[i] < 0) continue;
                JsonNode result = results.isArray() ? results.get(r++) : null;
                if (result == null || !result.has("error")) {
                  targets.get(i).markAccepted(keys[i]);
                  published.incrementAndGet();
                } else {
                  pubErrors.incrementAndGet();
                }
              }
              return true;
            });
  }

  CompletableFuture<Boolean> publishRoom(Room r, long t) {
    int key = r.next.getAndIncrement();
    return post("/api/rooms/" + URLEncoder.encode(r.name, StandardCharsets.UTF_8) + "/messages", body(key, t))
        .thenApply(
            ok -> {
              if (ok) for (Conn c : r.members) c.markAccepted(key);
              return ok;
            });
  }

  private CompletableFuture<Boolean> post(String path, String body) {
    return postForBody(path, body, 1).thenApply(answer -> answer != null);
  }

  /** POSTs; completes with the 202's JSON body ({@code {}} if none), or null on any other outcome. */
  private CompletableFuture<JsonNode> postForBody(String path, String body, int messages) {
    HttpRequest req =
        HttpRequest.newBuilder(URI.create("http://" + cfg.host + ":" + cfg.port + path))
            .timeout(Duration.ofSeconds(30))
            .header("content-type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body))
            .build();
    return api.sendAsync(req, HttpResponse.BodyHandlers.ofString())
        .handle(
            (resp, e) -> {
              if (e != null) {
                pubErrors.incrementAndGet();
                pubStatus.computeIfAbsent(-1, k -> new AtomicLong()).incrementAndGet();
                note("publish failed: " + e);
                return null;
              }
              pubStatus.computeIfAbsent(resp.statusCode(), k -> new AtomicLong()).incrementAndGet();
              if (resp.statusCode() == 202) {
                published.addAndGet(messages);
                try {
                  return resp.body().isEmpty() ? JSON.createObjectNode() : JSON.readTree(resp.body());
                } catch (Exception parse) {
                  return JSON.createObjectNode();
                }
              }
              pubErrors.incrementAndGet();
              note("publish " + path + " -> " + resp.statusCode() + " " + resp.body());
              return null;
            });
  }

  static final class Room {
    final String name;
    final List<Conn> members = new ArrayList<>();
    final AtomicInteger next = new AtomicInteger(1);

    Room(String name) {
      this.name = name;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Callbacks from the connections (under the connection's monitor: no blocking)

  void onReady(Conn c, boolean resumed, long nanos) {
    if (recordReady) readyTime.record(nanos / 1000);
    if (stormT0 != 0 && c.isResumeAttempt) {
      long ms = (System.nanoTime() - stormT0) / 1_000_000;
      (resumed ? stormResumed : stormNew).add(ms);
    }
  }

  void onDelivery(Conn c, int key, long t, long now) {
    deliveries.incrementAndGet();
    if (now >= windowStart && now <= windowEnd) windowReceipts.incrementAndGet();
    if (t >= windowStart && t <= windowEnd) latency.record((now - t) / 1000);
  }

  void onCaughtUp(Conn c, long nanos) {
    if (recordCatchUp) catchUp.record(nanos / 1000);
    CompletableFuture<Void> f = caughtUpWaiters.remove(c);
    if (f != null) f.complete(null);
  }

  void closeCode(int code) {
    closeCodes.computeIfAbsent(code, k -> new AtomicLong()).incrementAndGet();
  }

  void note(String s) {
    if (noteCount.incrementAndGet() <= 30) notes.add(s);
  }

  // ---------------------------------------------------------------------------------------------
  // Driver protocol

  void event(String name, Map<String, ?> data) throws Exception {
    System.out.println("EVENT " + name + " " + JSON.writeValueAsString(data));
    System.out.flush();
  }

  void awaitGo() throws Exception {
    String line = control.readLine();
    if (line == null) throw new IllegalStateException("driver went away");
  }

  private void result() throws Exception {
    Map<String, Object> r = new LinkedHashMap<>();
    Map<String, Object> counters = new LinkedHashMap<>();
    long accepted = 0, receivedAccepted = 0, missing = 0, received = 0, connDupes = 0, resumes = 0, lost = 0;
    for (Conn c : conns) {
      synchronized (c) {
        accepted += c.accepted.cardinality();
        received += c.received;
        connDupes += c.dupes;
        resumes += c.resumes;
        lost += c.lostSessions;
        accepted += c.retiredAccepted;
        receivedAccepted += c.retiredReceived;
        missing += c.retiredAccepted - c.retiredReceived;
      }
      receivedAccepted += c.receivedAccepted();
      missing += c.missingCount();
    }
    counters.put("sessions", rawSessions > 0 ? rawSessions : conns.size());
    counters.put("ready", readyCount());
    counters.put("accepted", accepted);
    counters.put("receivedAccepted", receivedAccepted);
    counters.put("missing", missing);
    counters.put("receivedUnique", received);
    counters.put("duplicates", connDupes);
    counters.put("wireDuplicates", wireDupes.get());
    counters.put("deliveries", deliveries.get());
    counters.put("windowReceipts", windowReceipts.get());
    counters.put("published", published.get());
    counters.put("publishErrors", pubErrors.get());
    counters.put("resumes", resumes);
    counters.put("lostSessions", lost);
    counters.put("kills", kills.get());
    counters.put("handshakeTimeouts", handshakeTimeouts.get());
    counters.put("unexpectedDrops", unexpectedDrops.get());
    counters.put("protocolErrors", protocolErrors.get());
    counters.put("serverErrors", serverErrors.get());
    counters.put("saturated", saturated.get());
    r.put("counters", counters);
    r.put("extra", extra);
    Map<String, Object> hists = new LinkedHashMap<>();
    hists.put("latency", latency.toSparse());
    hists.put("ready", readyTime.toSparse());
    hists.put("catchUp", catchUp.toSparse());
    r.put("hists", hists);
    synchronized (stormResumed) {
      r.put("stormResumedMs", new ArrayList<>(stormResumed));
    }
    synchronized (stormNew) {
      r.put("stormNewMs", new ArrayList<>(stormNew));
    }
    Map<String, Long> cc = new LinkedHashMap<>();
    closeCodes.forEach((k, v) -> cc.put(Integer.toString(k), v.get()));
    r.put("closeCodes", cc);
    Map<String, Long> ps = new LinkedHashMap<>();
    pubStatus.forEach((k, v) -> ps.put(Integer.toString(k), v.get()));
    r.put("publishStatus", ps);
    synchronized (notes) {
      r.put("notes", new ArrayList<>(notes));
    }
    r.put("noteCount", noteCount.get());
    System.out.println("RESULT " + JSON.writeValueAsString(r));
    System.out.flush();
  }

  private void shutdown() {
    sched.shutdownNow();
    pool.shutdownNow();
  }

  private static java.util.concurrent.ThreadFactory daemon(String name) {
    AtomicInteger n = new AtomicInteger();
    return r -> {
      Thread t = new Thread(r, name + "-" + n.incrementAndGet());
      t.setDaemon(true);
      return t;
    };
  }
}
