package dev.tether.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The driver: starts a server (Tether or the Socket.IO baseline), launches K worker JVMs
 * ({@link Worker}), steps them through a scenario, measures the server from outside (/proc, jcmd,
 * the baseline's /stats), merges the workers' results, prints a table and writes JSON under
 * bench/results/. Runs alternate between the servers: tether, socketio, tether, ...
 *
 * <pre>
 * java -jar bench/target/tether-bench.jar SCENARIO [--servers tether,socketio] [--rounds 1] [--n 2000] ...
 * </pre>
 *
 * Scenarios: density, storm, drops, throughput, latency, resume-idle. {@code --help} lists the options.
 */
public final class Bench {
  static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
  static final ObjectMapper LINE = new ObjectMapper();
  static final List<String> SCENARIOS = List.of("density", "storm", "drops", "throughput", "latency", "resume-idle");

  /** Defaults per scenario (overridden by flags). */
  static Map<String, String> defaults(String scenario) {
    Map<String, String> d = new LinkedHashMap<>();
    d.put("servers", "tether,socketio");
    d.put("rounds", "1");
    d.put("grace", "120s");
    d.put("cpus", "all");
    d.put("workers", "0"); // 0: one per 15000 sessions
    d.put("worker-xmx", "1g");
    d.put("connect-concurrency", "200");
    d.put("backoff-initial-ms", "500");
    d.put("backoff-max-ms", "5000");
    d.put("quiet-load", "0"); // wait for the 1-min load average to drop below this before each run
    d.put("quiet-wait-min", "60");
    d.put("tether-jar", "target/tether-under-test.jar");
    d.put("tether-java-opts", "");
    // true: Tether's embedded PostgreSQL runs pg_stat_statements; its statistics are reset when the
    // measured part starts and its top statements saved in the JSON (measured.pgStatements)
    d.put("pg-statements", "false");
    d.put("client", "jdk"); // jdk | raw (lean NIO clients; density and storm against Tether only)
    d.put("nodes", "1"); // Tether only: gateway processes in one cluster, sharing node 1's embedded PostgreSQL
    d.put("connect-limit-s", "1800"); // raw clients: the connect phase's limit (raise with event-timeout-s for 100k)
    d.put("hello-retries", "0"); // raw clients, density: a failed first handshake is tried again this many times
    d.put("event-timeout-s", "900"); // how long the driver waits for each worker barrier (raise for 100k sessions)
    d.put("node-opts", "");
    d.put("jfr", "false");
    d.put("out", "results");
    d.put("tag", "");
    d.put("payload", "0");
    switch (scenario) {
      case "density" -> {
        d.put("n", "2000");
        d.put("settle-s", "10");
        d.put("close-timeout-s", "300"); // Tether: how long to wait for every session to detach after the mass close
      }
      case "storm" -> {
        d.put("n", "2000");
        d.put("storm-timeout-s", "120");
      }
      case "drops" -> {
        d.put("n", "200");
        d.put("duration-s", "60");
        d.put("rate", "2"); // per session per second
        d.put("kill-every-s", "15");
        d.put("concurrency", "64");
        d.put("drain-s", "30");
      }
      case "throughput" -> {
        d.put("n", "200");
        d.put("duration-s", "30");
        d.put("warmup-s", "5");
        d.put("concurrency", "64");
        d.put("mode", "session");
        d.put("room-size", "10");
        d.put("batch", "1"); // session mode: messages per request (POST /api/messages) when > 1
        d.put("drain-s", "20");
      }
      case "latency" -> {
        d.put("n", "200");
        d.put("duration-s", "30");
        d.put("warmup-s", "5");
        d.put("rate", "500"); // messages per second, all workers together
        d.put("mode", "session");
        d.put("room-size", "10");
        d.put("batch", "1"); // session mode: messages per request (POST /api/messages) when > 1
        d.put("concurrency", "64");
        d.put("drain-s", "20");
      }
      case "resume-idle" -> {
        d.put("n", "20");
        d.put("missed", "100");
        d.put("idle-wait-s", "25");
        d.put("passivate-after", "10s"); // Tether: tether.session.passivate-detached-after for this run
        d.put("resume-concurrency", "1");
        d.put("concurrency", "32");
      }
      default -> throw new IllegalArgumentException("unknown scenario " + scenario + "; one of " + SCENARIOS);
    }
    return d;
  }

  final String scenario;
  final Map<String, String> opt;
  final Path benchDir;
  final Path outDir;
  final Path logDir;
  final String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss"));
  final HttpClient http =
      HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build();

  Bench(String scenario, Map<String, String> opt) throws IOException {
    this.scenario = scenario;
    this.opt = opt;
    this.benchDir = Path.of(System.getProperty("bench.dir", ".")).toAbsolutePath().normalize();
    this.outDir = benchDir.resolve(opt.get("out"));
    this.logDir = outDir.resolve("logs");
    Files.createDirectories(logDir);
  }

  public static void main(String[] args) throws Exception {
    if (args.length == 0 || args[0].equals("--help") || args[0].equals("-h")) {
      System.out.println("usage: bench.sh SCENARIO|all [--flag value ...]\nscenarios: " + SCENARIOS);
      for (String s : SCENARIOS) System.out.println("  " + s + ": " + defaults(s));
      return;
    }
    List<String> scenarios = args[0].equals("all") ? SCENARIOS : Arrays.asList(args[0].split(","));
    for (String s : scenarios) {
      Map<String, String> opt = defaults(s);
      for (int i = 1; i < args.length; i += 2) {
        String k = args[i].replaceFirst("^--", "");
        if (i + 1 >= args.length) throw new IllegalArgumentException("missing value for " + args[i]);
        if (!opt.containsKey(k) && !args[0].equals("all")) throw new IllegalArgumentException("unknown option --" + k + " for " + s + "; known: " + opt.keySet());
        if (opt.containsKey(k)) opt.put(k, args[i + 1]);
      }
      new Bench(s, opt).run();
    }
  }

  int i(String k) {
    return Integer.parseInt(opt.get(k));
  }

  double d(String k) {
    return Double.parseDouble(opt.get(k));
  }

  // ===========================================================================================

  void run() throws Exception {
    List<String> servers = Arrays.asList(opt.get("servers").split(","));
    int rounds = i("rounds");
    Map<String, Object> doc = new LinkedHashMap<>();
    doc.put("scenario", scenario);
    doc.put("started", stamp);
    doc.put("machine", Machine.describe(benchDir));
    doc.put("options", opt);
    doc.put("command", "bench/bench.sh " + scenario + " " + String.join(" ", flagsForCommand()));
    List<Map<String, Object>> runs = new ArrayList<>();
    doc.put("runs", runs);
    for (int r = 1; r <= rounds; r++) {
      for (String server : servers) {
        waitQuiet();
        Map<String, Object> one = runOne(server.trim(), r);
        runs.add(one);
        Path partial = outDir.resolve(scenario + "-" + stamp + ".json");
        doc.put("summary", summarise(runs));
        JSON.writeValue(partial.toFile(), doc);
      }
    }
    Map<String, Object> summary = summarise(runs);
    doc.put("summary", summary);
    Path file = outDir.resolve(scenario + "-" + stamp + (opt.get("tag").isEmpty() ? "" : "-" + opt.get("tag")) + ".json");
    JSON.writeValue(file.toFile(), doc);
    if (!opt.get("tag").isEmpty()) Files.deleteIfExists(outDir.resolve(scenario + "-" + stamp + ".json"));
    printTable(runs);
    System.out.println("written: " + benchDir.relativize(file));
  }

  List<String> flagsForCommand() {
    Map<String, String> def = defaults(scenario);
    List<String> f = new ArrayList<>();
    opt.forEach(
        (k, v) -> {
          if (!v.equals(def.get(k))) {
            f.add("--" + k);
            f.add(v.contains(" ") ? "'" + v + "'" : v);
          }
        });
    return f;
  }

  void waitQuiet() throws InterruptedException {
    double limit = d("quiet-load");
    if (limit <= 0) return;
    long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(i("quiet-wait-min"));
    while (true) {
      double[] l = Machine.loadavg();
      if (l[0] < limit) return;
      if (System.nanoTime() > deadline) {
        System.out.printf("load average %.2f still above %.2f after %s min; running anyway%n", l[0], limit, opt.get("quiet-wait-min"));
        return;
      }
      System.out.printf("%s load average %.2f %.2f %.2f >= %.2f; waiting a minute%n", LocalDateTime.now().withNano(0), l[0], l[1], l[2], limit);
      Thread.sleep(60_000);
    }
  }

  // ===========================================================================================
  // One run: server up, workers through the scenario, server down.

  Map<String, Object> runOne(String server, int round) throws Exception {
    String runId = scenario + "-" + stamp + "-" + server + "-" + round;
    System.out.printf("%n=== %s: %s, round %d (load %s) ===%n", scenario, server, round, Arrays.toString(Machine.loadavg()));
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("server", server);
    out.put("round", round);
    out.put("loadBefore", Machine.loadavg());
    ServerProc srv = new ServerProc(server, runId);
    List<WorkerProc> workers = new ArrayList<>();
    try {
      long t0 = System.nanoTime();
      srv.start();
      out.put("serverStartS", (System.nanoTime() - t0) / 1e9);
      out.put("serverCommand", srv.command);
      int n = i("n");
      List<Integer> ports = srv.ports();
      int nodes = ports.size();
      // Worker w connects to node w % nodes; at most 15,000 sockets per worker process and the
      // same number of workers per node, so each node gets an equal share.
      int perNode = Math.max(1, (n / nodes + 14_999) / 15_000);
      int k = i("workers") > 0 ? i("workers") : nodes * perNode;
      for (int w = 0; w < k; w++) {
        int share = n / k + (w < n % k ? 1 : 0);
        workers.add(new WorkerProc(w, share, k, ports.get(w % nodes), server, runId));
      }
      Map<String, Object> measured = new LinkedHashMap<>();
      steps(server, srv, workers, measured);
      List<JsonNode> results = new ArrayList<>();
      for (WorkerProc w : workers) results.add(w.awaitResult());
      measured.put("cpuAtEnd", srv.cpu());
      List<Map<String, Object>> statements = srv.pgStatements();
      if (statements != null) {
        measured.put("pgStatements", statements);
        System.out.println("PostgreSQL's top statements over the measured part (calls, total ms, mean ms, rows):");
        for (Map<String, Object> r : statements.subList(0, Math.min(8, statements.size()))) {
          String q = (String) r.get("query");
          System.out.printf("  %7d %8d %8.2f %9d  %s%n", r.get("calls"), r.get("totalMs"), r.get("meanMs"), r.get("rows"), q.length() > 100 ? q.substring(0, 100) : q);
        }
      }
      String jfr = srv.jfrStop();
      if (jfr != null) out.put("jfr", jfr);
      Map<String, Object> merged = merge(results);
      out.put("loadAfter", Machine.loadavg());
      out.put("metrics", metrics(merged, measured));
      out.put("measured", measured);
      out.put("workers", merged);
    } catch (Exception e) {
      e.printStackTrace();
      out.put("failure", e.toString());
    } finally {
      for (WorkerProc w : workers) w.stop();
      out.put("serverLog", srv.stop());
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> m = (Map<String, Object>) out.getOrDefault("metrics", Map.of());
    if (server.equals("tether") && !m.isEmpty()) m.putAll(clusterMarkers((Map<String, Object>) out.get("serverLog")));
    System.out.println(server + ": " + LINE.writeValueAsString(m));
    return out;
  }

  /** The driver side of each scenario: barriers and the measurements taken between them. */
  void steps(String server, ServerProc srv, List<WorkerProc> workers, Map<String, Object> m) throws Exception {
    switch (scenario) {
      case "density" -> {
        awaitAll(workers, "warm");
        Thread.sleep(3000);
        m.put("baseline", srv.snapshot(true));
        goAll(workers);
        List<JsonNode> ev = awaitAll(workers, "connected");
        m.put("connectedEvents", ev);
        Thread.sleep(i("settle-s") * 1000L);
        m.put("loaded", srv.snapshot(true));
        srv.jfrStart(); // with --jfr true: the first node during the mass close
        srv.pgStatementsReset();
        goAll(workers); // every client closes its socket at once
        if (server.equals("tether")) m.put("massClose", srv.awaitAllDetached(i("close-timeout-s")));
      }
      case "storm", "drops", "throughput", "latency" -> {
        awaitAll(workers, "ready");
        m.put("beforeGo", srv.snapshot(false));
        m.put("cpuAtGo", srv.cpu());
        srv.pgStatementsReset();
        srv.jfrStart();
        goAll(workers);
      }
      case "resume-idle" -> {
        awaitAll(workers, "ready");
        goAll(workers);
        awaitAll(workers, "published");
        m.put("afterPublish", srv.info());
        Thread.sleep(i("idle-wait-s") * 1000L);
        m.put("beforeResume", srv.info());
        goAll(workers);
      }
      default -> throw new IllegalStateException();
    }
  }

  List<JsonNode> awaitAll(List<WorkerProc> workers, String event) throws Exception {
    List<JsonNode> data = new ArrayList<>();
    for (WorkerProc w : workers) data.add(w.awaitEvent(event));
    return data;
  }

  void goAll(List<WorkerProc> workers) {
    for (WorkerProc w : workers) w.go();
  }

  // ===========================================================================================
  // Merging and metrics

  Map<String, Object> merge(List<JsonNode> results) {
    Map<String, Long> counters = new LinkedHashMap<>();
    Map<String, Hist> hists = new LinkedHashMap<>();
    List<Long> stormResumed = new ArrayList<>();
    List<Long> stormNew = new ArrayList<>();
    Map<String, Long> closeCodes = new LinkedHashMap<>();
    Map<String, Long> pubStatus = new LinkedHashMap<>();
    List<String> notes = new ArrayList<>();
    List<JsonNode> extras = new ArrayList<>();
    for (JsonNode r : results) {
      r.path("counters").fields().forEachRemaining(e -> counters.merge(e.getKey(), e.getValue().asLong(), Long::sum));
      r.path("hists").fields().forEachRemaining(e -> {
        @SuppressWarnings("unchecked")
        Map<String, Object> sparse = LINE.convertValue(e.getValue(), Map.class);
        hists.computeIfAbsent(e.getKey(), x -> new Hist()).addSparse(sparse);
      });
      r.path("stormResumedMs").forEach(x -> stormResumed.add(x.asLong()));
      r.path("stormNewMs").forEach(x -> stormNew.add(x.asLong()));
      r.path("closeCodes").fields().forEachRemaining(e -> closeCodes.merge(e.getKey(), e.getValue().asLong(), Long::sum));
      r.path("publishStatus").fields().forEachRemaining(e -> pubStatus.merge(e.getKey(), e.getValue().asLong(), Long::sum));
      r.path("notes").forEach(x -> notes.add(x.asText()));
      extras.add(r.path("extra"));
    }
    Collections.sort(stormResumed);
    Collections.sort(stormNew);
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("counters", counters);
    Map<String, Object> hs = new LinkedHashMap<>();
    hists.forEach((k, h) -> hs.put(k, h.summaryMs()));
    m.put("hists", hs);
    m.put("_hists", hists);
    m.put("stormResumedMs", stormResumed);
    m.put("stormNewMs", stormNew);
    m.put("closeCodes", closeCodes);
    m.put("publishStatus", pubStatus);
    m.put("notes", notes.size() > 40 ? notes.subList(0, 40) : notes);
    m.put("extra", extras);
    return m;
  }

  /** The log markers of cluster strain (Machine.scanLog), summed over every node: log_flush_timeouts, ... */
  @SuppressWarnings("unchecked")
  static Map<String, Object> clusterMarkers(Map<String, Object> serverLog) {
    List<Map<String, Object>> logs = new ArrayList<>(List.of(serverLog));
    logs.addAll((List<Map<String, Object>>) serverLog.getOrDefault("members", List.of()));
    Map<String, Object> sums = new LinkedHashMap<>();
    for (Map<String, Object> log : logs) {
      ((Map<String, Long>) log.getOrDefault("clusterMarkers", Map.of()))
          .forEach((k, v) -> sums.merge("log_" + k, v, (a, b) -> (Long) a + (Long) b));
    }
    return sums;
  }

  @SuppressWarnings("unchecked")
  Map<String, Object> metrics(Map<String, Object> merged, Map<String, Object> measured) {
    Map<String, Long> c = (Map<String, Long>) merged.get("counters");
    Map<String, Hist> h = (Map<String, Hist>) merged.remove("_hists");
    Map<String, Object> m = new LinkedHashMap<>();
    int n = i("n");
    m.put("n", n);
    Map<String, Object> c0 = (Map<String, Object>) measured.get("cpuAtGo"), c1 = (Map<String, Object>) measured.get("cpuAtEnd");
    Double serverCpu = null, helpersCpu = null, wall = null;
    if (c0 != null && c1 != null) {
      serverCpu = Math.round(100 * ((Double) c1.get("serverCpuS") - (Double) c0.get("serverCpuS"))) / 100.0;
      helpersCpu = Math.round(100 * ((Double) c1.get("helpersCpuS") - (Double) c0.get("helpersCpuS"))) / 100.0;
      wall = Math.round(((Long) c1.get("atNanos") - (Long) c0.get("atNanos")) / 1e7) / 100.0;
    }
    switch (scenario) {
      case "density" -> {
        Map<String, Object> b = (Map<String, Object>) measured.get("baseline");
        Map<String, Object> a = (Map<String, Object>) measured.get("loaded");
        long ready = ((List<JsonNode>) merged.get("extra")).stream().mapToLong(x -> x.path("connected").asLong()).sum();
        m.put("connected", ready);
        m.put("connect_s", ((List<JsonNode>) measured.get("connectedEvents")).stream().mapToDouble(x -> x.path("ms").asDouble() / 1000).max().orElse(-1));
        m.put("rss_per_session_kb", perSession(a, b, "rssKb", ready));
        m.put("rss_after_gc_per_session_kb", perSession(a, b, "rssAfterGcKb", ready));
        m.put("heap_after_gc_per_session_kb", perSession(a, b, "heapUsedAfterGcKb", ready));
        m.put("helpers_pss_per_session_kb", perSession(a, b, "childrenPssKb", ready));
        m.put("kernel_tcp_mem_per_session_kb", perSession(a, b, "tcpMemKb", ready));
        m.put("server_rss_mb", ((Number) a.get("rssKb")).longValue() / 1024.0);
        m.put("unexpected_drops", c.get("unexpectedDrops"));
        if (measured.get("massClose") instanceof Map<?, ?> close) {
          m.put("mass_close_all_detached_s", close.get("allDetachedS"));
          m.put("mass_close_detach_resends", close.get("detachResends"));
          m.put("mass_close_delivery_gaps", close.get("deliveryGaps"));
        }
      }
      case "storm" -> {
        List<Long> res = (List<Long>) merged.get("stormResumedMs");
        List<Long> any = new ArrayList<>(res);
        any.addAll((List<Long>) merged.get("stormNewMs"));
        Collections.sort(any);
        long sessions = c.get("sessions");
        m.put("sessions", sessions);
        m.put("resumed", res.size());
        m.put("new_sessions_instead", ((List<Long>) merged.get("stormNewMs")).size());
        m.put("resumed_99pct_ms", rankOf(res, (long) Math.ceil(0.99 * sessions)));
        m.put("resumed_100pct_ms", res.size() >= sessions ? res.get(res.size() - 1) : null);
        m.put("reconnected_99pct_ms", rankOf(any, (long) Math.ceil(0.99 * sessions)));
        m.put("reconnected_100pct_ms", any.size() >= sessions ? any.get(any.size() - 1) : null);
        m.put("handshake_timeouts", c.get("handshakeTimeouts"));
        long sent = 0, got = 0;
        for (JsonNode e : (List<JsonNode>) merged.get("extra")) {
          sent += e.path("postCheckSent").asLong();
          got += e.path("postCheckReceived").asLong();
        }
        m.put("post_check_sent", sent);
        m.put("post_check_received", got);
      }
      case "drops" -> {
        long acc = c.get("accepted");
        m.put("duration_s", i("duration-s"));
        m.put("published_accepted", acc);
        m.put("delivered", c.get("receivedAccepted"));
        m.put("delivered_pct", acc == 0 ? null : Math.round(10000.0 * c.get("receivedAccepted") / acc) / 100.0);
        m.put("missing", c.get("missing"));
        m.put("duplicates", c.get("duplicates") + c.get("wireDuplicates"));
        m.put("kills", c.get("kills"));
        m.put("resumes", c.get("resumes"));
        m.put("sessions_lost", c.get("lostSessions"));
        m.put("replay_p50_ms", Hist.ms(h.get("catchUp").quantile(0.5)));
        m.put("replay_p99_ms", Hist.ms(h.get("catchUp").quantile(0.99)));
        m.put("replays", h.get("catchUp").count());
        m.put("latency_p50_ms", Hist.ms(h.get("latency").quantile(0.5)));
        m.put("latency_p99_ms", Hist.ms(h.get("latency").quantile(0.99)));
        m.put("publish_errors", c.get("publishErrors"));
        m.put("publishes_skipped_saturated", c.get("saturated"));
      }
      case "throughput", "latency" -> {
        m.put("mode", opt.get("mode"));
        m.put("duration_s", i("duration-s"));
        if (scenario.equals("throughput")) m.put("concurrency", i("concurrency"));
        else m.put("target_rate", d("rate"));
        m.put("batch", i("batch"));
        m.put("deliveries_per_s", Math.round(10.0 * c.get("windowReceipts") / i("duration-s")) / 10.0);
        m.put("publishes_per_s_total", Math.round(10.0 * c.get("published") / (i("duration-s") + i("warmup-s"))) / 10.0);
        Hist lat = h.get("latency");
        m.put("latency_samples", lat.count());
        m.put("latency_p50_ms", Hist.ms(lat.quantile(0.5)));
        m.put("latency_p90_ms", Hist.ms(lat.quantile(0.9)));
        m.put("latency_p99_ms", Hist.ms(lat.quantile(0.99)));
        m.put("latency_p999_ms", Hist.ms(lat.quantile(0.999)));
        m.put("latency_max_ms", Hist.ms(lat.max()));
        m.put("missing_after_drain", c.get("missing"));
        m.put("duplicates", c.get("duplicates") + c.get("wireDuplicates"));
        m.put("publish_errors", c.get("publishErrors"));
        m.put("generator_saturated", c.get("saturated"));
        m.put("unexpected_drops", c.get("unexpectedDrops"));
        if (serverCpu != null && c.get("deliveries") > 0) {
          m.put("server_cpu_ms_per_delivery", Math.round(1e5 * serverCpu / c.get("deliveries")) / 100.0);
          m.put("db_cpu_ms_per_delivery", Math.round(1e5 * helpersCpu / c.get("deliveries")) / 100.0);
        }
      }
      case "resume-idle" -> {
        m.put("missed_per_session", i("missed"));
        m.put("missed_accepted", c.get("accepted") - c.get("sessions")); // minus the priming message
        m.put("complete_sessions", ((List<JsonNode>) merged.get("extra")).stream().mapToLong(x -> x.path("completeSessions").asLong()).sum());
        m.put("resumed", c.get("resumes"));
        m.put("sessions_lost", c.get("lostSessions"));
        m.put("welcome_p50_ms", Hist.ms(h.get("ready").quantile(0.5)));
        m.put("welcome_p99_ms", Hist.ms(h.get("ready").quantile(0.99)));
        m.put("resume_all_p50_ms", Hist.ms(h.get("catchUp").quantile(0.5)));
        m.put("resume_all_p99_ms", Hist.ms(h.get("catchUp").quantile(0.99)));
        m.put("resume_all_max_ms", Hist.ms(h.get("catchUp").max()));
        m.put("duplicates", c.get("duplicates") + c.get("wireDuplicates"));
        if (measured.get("beforeResume") instanceof JsonNode before) {
          // Tether: how many session entities were still in memory when the resumes began (0: all passivated)
          long inMemory = 0;
          for (JsonNode node : before.path("nodes")) inMemory += node.path("sharding").path("ClientProxy").path("entities").asLong();
          if (before.has("nodes")) m.put("sessions_in_memory_at_resume", inMemory);
        }
      }
      default -> {}
    }
    if (serverCpu != null) {
      m.put("server_cpu_s", serverCpu);
      m.put("db_cpu_s", helpersCpu);
      m.put("measured_wall_s", wall);
    }
    return m;
  }

  static Double perSession(Map<String, Object> after, Map<String, Object> before, String key, long n) {
    Object a = after.get(key), b = before.get(key);
    if (!(a instanceof Number) || !(b instanceof Number) || n == 0) return null;
    return Math.round(10.0 * (((Number) a).doubleValue() - ((Number) b).doubleValue()) / n) / 10.0;
  }

  /** The rank-th smallest (1-based), or null when there are fewer. */
  static Long rankOf(List<Long> sorted, long rank) {
    if (rank < 1) rank = 1;
    return sorted.size() >= rank ? sorted.get((int) rank - 1) : null;
  }

  // ===========================================================================================
  // Summary and table

  @SuppressWarnings("unchecked")
  Map<String, Object> summarise(List<Map<String, Object>> runs) {
    Map<String, Map<String, List<Object>>> by = new LinkedHashMap<>();
    for (Map<String, Object> r : runs) {
      Map<String, Object> m = (Map<String, Object>) r.get("metrics");
      if (m == null) continue;
      Map<String, List<Object>> s = by.computeIfAbsent((String) r.get("server"), x -> new LinkedHashMap<>());
      m.forEach((k, v) -> s.computeIfAbsent(k, x -> new ArrayList<>()).add(v));
      s.computeIfAbsent("load1_before", x -> new ArrayList<>()).add(((double[]) r.get("loadBefore"))[0]);
    }
    Map<String, Object> out = new LinkedHashMap<>();
    Map<String, Map<String, Object>> medians = new LinkedHashMap<>();
    by.forEach((server, s) -> {
      Map<String, Object> med = new LinkedHashMap<>();
      s.forEach((k, vs) -> med.put(k, median(vs)));
      medians.put(server, med);
    });
    out.put("median", medians);
    Map<String, Object> t = medians.get("tether"), so = medians.get("socketio");
    if (t != null && so != null) {
      Map<String, Object> ratio = new LinkedHashMap<>();
      t.forEach((k, v) -> {
        Object w = so.get(k);
        if (v instanceof Number a && w instanceof Number b && b.doubleValue() != 0 && !k.equals("n")) {
          ratio.put(k, Math.round(1000.0 * a.doubleValue() / b.doubleValue()) / 1000.0);
        }
      });
      out.put("ratio_tether_over_socketio", ratio);
    }
    return out;
  }

  static Object median(List<Object> vs) {
    List<Double> nums = new ArrayList<>();
    for (Object v : vs) {
      if (v instanceof Number x) nums.add(x.doubleValue());
      else return vs.size() == 1 ? vs.get(0) : vs; // not numeric (or null): keep them all
    }
    if (nums.isEmpty()) return null;
    Collections.sort(nums);
    int k = nums.size();
    double med = k % 2 == 1 ? nums.get(k / 2) : (nums.get(k / 2 - 1) + nums.get(k / 2)) / 2;
    return Math.round(med * 100) / 100.0;
  }

  @SuppressWarnings("unchecked")
  void printTable(List<Map<String, Object>> runs) {
    Map<String, Object> s = summarise(runs);
    Map<String, Map<String, Object>> med = (Map<String, Map<String, Object>>) s.get("median");
    Map<String, Object> ratio = (Map<String, Object>) s.getOrDefault("ratio_tether_over_socketio", Map.of());
    List<String> keys = new ArrayList<>();
    med.values().forEach(m -> m.keySet().forEach(k -> {
      if (!keys.contains(k)) keys.add(k);
    }));
    List<String> servers = new ArrayList<>(med.keySet());
    System.out.printf("%n%s (median of %d round(s); load1 = 1-minute load average before the run)%n", scenario, i("rounds"));
    StringBuilder head = new StringBuilder(String.format("| %-32s", "metric"));
    for (String sv : servers) head.append(String.format(" | %-14s", sv));
    head.append(" | tether/socketio |");
    System.out.println(head);
    System.out.println(head.toString().replaceAll("[^|]", "-"));
    for (String k : keys) {
      StringBuilder row = new StringBuilder(String.format("| %-32s", k));
      for (String sv : servers) row.append(String.format(" | %-14s", fmt(med.get(sv).get(k))));
      row.append(String.format(" | %-15s |", fmt(ratio.get(k))));
      System.out.println(row);
    }
  }

  static String fmt(Object o) {
    if (o == null) return "-";
    if (o instanceof Double x && x == Math.rint(x) && Math.abs(x) < 1e12) return Long.toString(x.longValue());
    return o.toString();
  }

  // ===========================================================================================
  // Processes

  static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      return s.getLocalPort();
    }
  }

  List<String> pinned(List<String> cmd) {
    String cpus = opt.get("cpus");
    if (cpus.equals("none") || !new File("/usr/bin/taskset").canExecute()) return cmd;
    if (cpus.equals("all")) cpus = "0-" + (Runtime.getRuntime().availableProcessors() - 1);
    List<String> c = new ArrayList<>(List.of("taskset", "-c", cpus));
    c.addAll(cmd);
    return c;
  }

  /** A server under test. */
  final class ServerProc {
    final String kind;
    final String runId;
    int port;
    Process proc;
    long pid;
    Path log;
    List<String> command;
    final List<Long> helperPids = new ArrayList<>();
    /** With --nodes N > 1 (Tether): the other N - 1 gateway processes of the cluster. */
    final List<ServerProc> members = new ArrayList<>();
    /** For a member: the first node, whose embedded PostgreSQL and cluster port it joins. */
    final ServerProc first;
    int clusterPort;
    int dbPort;

    ServerProc(String kind, String runId) {
      this(kind, runId, null);
    }

    private ServerProc(String kind, String runId, ServerProc first) {
      this.kind = kind;
      this.runId = runId;
      this.first = first;
    }

    /** The HTTP ports of every node: the first one's, then the members'. */
    List<Integer> ports() {
      List<Integer> p = new ArrayList<>(List.of(port));
      for (ServerProc m : members) p.add(m.port);
      return p;
    }

    List<ServerProc> allNodes() {
      List<ServerProc> all = new ArrayList<>(List.of(this));
      all.addAll(members);
      return all;
    }

    void start() throws Exception {
      int nodes = i("nodes");
      if (nodes > 1 && !kind.equals("tether")) {
        throw new IllegalArgumentException("--nodes applies to Tether only: the Socket.IO baseline has no cluster without an external adapter");
      }
      startProcess(nodes > 1);
      for (int m = 2; m <= nodes; m++) members.add(new ServerProc(kind, runId + "-node" + m, this));
      // The members start together; each waits for its own readiness (it has joined the cluster).
      inParallel(members.stream().map(m -> (Callable<Object>) () -> {
        m.startProcess(true);
        return null;
      }).toList());
    }

    private void startProcess(boolean clustered) throws Exception {
      port = freePort();
      clusterPort = freePort();
      log = logDir.resolve(runId + "-server.log");
      ProcessBuilder pb;
      String grace = opt.get("grace");
      if (kind.equals("tether")) {
        List<String> cmd = new ArrayList<>(List.of("java"));
        for (String o : opt.get("tether-java-opts").trim().split("\\s+")) if (!o.isEmpty()) cmd.add(o);
        if (pgStatementsOn()) cmd.add("-Dtether.db.embedded.statement-stats=on");
        if (scenario.equals("resume-idle")) {
          cmd.add("-Dtether.session.passivate-detached-after=" + opt.get("passivate-after"));
        }
        Path jar = benchDir.resolve(opt.get("tether-jar"));
        if (!Files.exists(jar)) throw new IllegalStateException("no Tether jar at " + jar + " (bench.sh copies ../target/tether.jar there)");
        cmd.addAll(List.of("-jar", jar.toString()));
        pb = new ProcessBuilder(pinned(cmd));
        Map<String, String> env = pb.environment();
        env.put("TETHER_HOST", "127.0.0.1");
        env.put("TETHER_PORT", Integer.toString(port));
        env.put("TETHER_CLUSTER_HOST", "127.0.0.1");
        env.put("TETHER_CLUSTER_PORT", Integer.toString(clusterPort));
        if (first == null) { // the node that runs the embedded PostgreSQL, on a port we know
          dbPort = freePort();
          env.put("TETHER_EMBEDDED_DB_PORT", Integer.toString(dbPort));
        }
        if (clustered) {
          ServerProc seed = first == null ? this : first;
          env.put("TETHER_SEED_NODES", "pekko://tether@127.0.0.1:" + seed.clusterPort);
          if (first != null) {
            env.put("TETHER_DB_URL", "jdbc:postgresql://127.0.0.1:" + first.dbPort + "/postgres");
            env.put("TETHER_DB_USER", "postgres");
            env.put("TETHER_DB_PASSWORD", "postgres");
          }
        }
        env.put("TETHER_GRACE", grace);
        env.put("TETHER_AUTH_MODE", "dev");
        // every generator socket comes from 127.0.0.1: the per-address limit on failed resumes
        // would otherwise throttle a storm's failures as if they came from one attacker
        env.put("TETHER_FAILED_RESUME_BURST", "1000000");
        env.put("TETHER_FAILED_RESUMES_PER_MINUTE", "1000000");
      } else {
        List<String> cmd = new ArrayList<>(List.of("node", "--expose-gc"));
        for (String o : opt.get("node-opts").trim().split("\\s+")) if (!o.isEmpty()) cmd.add(o);
        cmd.add("server.js");
        pb = new ProcessBuilder(pinned(cmd));
        pb.directory(benchDir.resolve("socketio").toFile());
        pb.environment().put("PORT", Integer.toString(port));
        pb.environment().put("HOST", "127.0.0.1");
        pb.environment().put("GRACE_MS", Long.toString(parseMillis(grace)));
      }
      command = pb.command();
      pb.redirectErrorStream(true).redirectOutput(log.toFile());
      proc = pb.start();
      pid = proc.pid();
      String ready = kind.equals("tether") ? "/health/ready" : "/health";
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
      while (true) {
        if (!proc.isAlive()) throw new IllegalStateException(kind + " exited during start-up; see " + log);
        try {
          if (get(ready).statusCode() == 200) break;
        } catch (IOException e) {
          // not listening yet
        }
        if (System.nanoTime() > deadline) throw new IllegalStateException(kind + " not ready after 240 s; see " + log);
        Thread.sleep(250);
      }
      helperPids.addAll(helpers());
      System.out.printf("%s up on 127.0.0.1:%d (pid %d, helpers %s)%n", kind, port, pid, helperPids);
    }

    /**
     * The server's helper processes: the embedded PostgreSQL of Tether (its postmaster daemonises,
     * so it is found by the port Tether logs) and its backends; descendants of the server otherwise.
     */
    List<Long> helpers() {
      List<Long> out = new ArrayList<>(Machine.descendants(pid));
      if (!kind.equals("tether")) return out;
      try {
        Matcher m = Pattern.compile("Embedded PostgreSQL listening on port (\\d+)").matcher(Files.readString(log));
        if (!m.find()) return out;
        String want = "-p\0" + m.group(1) + "\0";
        try (var dirs = Files.list(Path.of("/proc"))) {
          for (Path d : (Iterable<Path>) dirs::iterator) {
            String name = d.getFileName().toString();
            if (!name.chars().allMatch(Character::isDigit)) continue;
            try {
              String cmd = new String(Files.readAllBytes(d.resolve("cmdline")), StandardCharsets.UTF_8);
              if (cmd.contains("postgres") && cmd.contains(want)) {
                long pm = Long.parseLong(name);
                if (!out.contains(pm)) out.add(pm);
                for (long c : Machine.descendants(pm)) if (!out.contains(c)) out.add(c);
              }
            } catch (IOException e) {
              // gone
            }
          }
        }
      } catch (IOException e) {
        // no log yet
      }
      return out;
    }

    HttpResponse<String> get(String path) throws IOException, InterruptedException {
      return http.send(
          HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).timeout(Duration.ofSeconds(60)).build(),
          HttpResponse.BodyHandlers.ofString());
    }

    /** With --jfr true: a JFR recording (profile settings) of Tether from GO to the end of the run. */
    void jfrStart() {
      if (!kind.equals("tether") || !Boolean.parseBoolean(opt.get("jfr"))) return;
      System.out.println(Machine.exec(List.of("jcmd", Long.toString(pid), "JFR.start", "name=bench", "settings=profile")));
    }

    String jfrStop() {
      if (!kind.equals("tether") || !Boolean.parseBoolean(opt.get("jfr"))) return null;
      Path jfr = outDir.resolve(runId + ".jfr");
      System.out.println(Machine.exec(List.of("jcmd", Long.toString(pid), "JFR.stop", "name=bench", "filename=" + jfr)));
      return benchDir.relativize(jfr).toString();
    }

    /** With --pg-statements true: forgets the statement statistics gathered so far (start-up, connects). */
    void pgStatementsReset() {
      if (!pgStatementsOn()) return;
      try (java.sql.Connection c = pgConnection();
          java.sql.Statement st = c.createStatement()) {
        st.execute("SELECT pg_stat_statements_reset()");
      } catch (java.sql.SQLException e) {
        System.out.println("pg_stat_statements reset failed: " + e.getMessage());
      }
    }

    /** With --pg-statements true: the statements that took the most execution time since the reset. */
    List<Map<String, Object>> pgStatements() {
      if (!pgStatementsOn()) return null;
      List<Map<String, Object>> top = new ArrayList<>();
      try (java.sql.Connection c = pgConnection();
          java.sql.Statement st = c.createStatement();
          java.sql.ResultSet rs =
              st.executeQuery(
                  "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') "
                      + "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15")) {
        while (rs.next()) {
          Map<String, Object> row = new LinkedHashMap<>();
          row.put("calls", rs.getLong(1));
          row.put("totalMs", Math.round(rs.getDouble(2)));
          row.put("meanMs", Math.round(100 * rs.getDouble(2) / Math.max(1, rs.getLong(1))) / 100.0);
          row.put("rows", rs.getLong(3));
          String q = rs.getString(4);
          row.put("query", q.length() > 300 ? q.substring(0, 300) + "..." : q);
          top.add(row);
        }
      } catch (java.sql.SQLException e) {
        System.out.println("pg_stat_statements read failed: " + e.getMessage());
      }
      return top;
    }

    private boolean pgStatementsOn() {
      return kind.equals("tether") && Boolean.parseBoolean(opt.get("pg-statements"));
    }

    private java.sql.Connection pgConnection() throws java.sql.SQLException {
      return java.sql.DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + dbPort + "/postgres", "postgres", "postgres");
    }

    /** CPU seconds used so far by the server (every node) and by its helpers (embedded PostgreSQL). */
    Map<String, Object> cpu() {
      Map<String, Object> c = new LinkedHashMap<>();
      double server = 0;
      for (ServerProc node : allNodes()) server += Machine.cpuSeconds(node.pid);
      c.put("serverCpuS", server);
      double h = 0;
      for (long p : helpers()) h += Machine.cpuSeconds(p);
      c.put("helpersCpuS", h);
      c.put("atNanos", System.nanoTime());
      return c;
    }

    /** Memory of the server (and its helper processes: embedded PostgreSQL) and the kernel's TCP memory. */
    Map<String, Object> snapshot(boolean gc) throws Exception {
      if (members.isEmpty()) return nodeSnapshot(gc);
      // A cluster: the sum over its nodes (the database is the first node's helper).
      Map<String, Object> sum = new LinkedHashMap<>();
      List<Object> perNode = new ArrayList<>();
      for (ServerProc node : allNodes()) {
        Map<String, Object> one = node.nodeSnapshot(gc);
        one.remove("info");
        perNode.add(one);
        for (String key : List.of("rssKb", "pssKb", "childrenPssKb", "heapUsedAfterGcKb", "rssAfterGcKb")) {
          if (one.get(key) instanceof Number v) sum.merge(key, v.longValue(), (a, b) -> ((Long) a) + ((Long) b));
        }
      }
      sum.putAll(Machine.sockstat());
      sum.put("nodes", perNode);
      sum.put("info", info());
      return sum;
    }

    private Map<String, Object> nodeSnapshot(boolean gc) throws Exception {
      Map<String, Object> s = new LinkedHashMap<>();
      s.put("rssKb", Machine.statusKb(pid, "VmRSS"));
      s.put("pssKb", Machine.pssKb(pid));
      long children = 0;
      for (long c : helpers()) children += Math.max(0, Machine.pssKb(c));
      s.put("childrenPssKb", children);
      s.putAll(Machine.sockstat());
      if (gc) {
        if (kind.equals("tether")) {
          Machine.exec(List.of("jcmd", Long.toString(pid), "GC.run"));
          // G1 prints one line for the whole heap; Serial and Parallel one per generation, to add
          // up. Metaspace lines are not heap.
          long used = 0;
          for (String line : Machine.exec(List.of("jcmd", Long.toString(pid), "GC.heap_info")).split("\n")) {
            if (line.contains("Metaspace") || line.contains("class space")) continue;
            Matcher m = Pattern.compile("used (\\d+)K").matcher(line);
            if (m.find()) used += Long.parseLong(m.group(1));
          }
          s.put("heapUsedAfterGcKb", used);
        } else {
          JsonNode st = LINE.readTree(get("/stats?gc=1").body());
          s.put("heapUsedAfterGcKb", st.path("heapUsed").asLong() / 1024);
          s.put("externalAfterGcKb", st.path("external").asLong() / 1024);
        }
        Thread.sleep(1000);
        s.put("rssAfterGcKb", Machine.statusKb(pid, "VmRSS"));
      }
      s.put("info", info());
      return s;
    }

    /**
     * After every client closed its socket at once (the end of density): seconds until no node
     * holds an attached session or an open connection any more, sampled once a second from each
     * node's /metrics. A node that does not answer is counted (it was stopped or is starved).
     */
    Map<String, Object> awaitAllDetached(long timeoutS) throws InterruptedException {
      long t0 = System.nanoTime();
      long deadline = t0 + TimeUnit.SECONDS.toNanos(timeoutS);
      Map<String, Object> r = new LinkedHashMap<>();
      int silentSamples = 0;
      while (true) {
        long attached = 0, open = 0;
        boolean allAnswered = true;
        for (ServerProc node : allNodes()) {
          try {
            String text = node.get("/metrics").body();
            attached += (long) Machine.promValue(text, "tether_sessions", "state=\"attached\"");
            open += (long) Machine.promValue(text, "tether_connections_open", null);
          } catch (Exception e) {
            allAnswered = false;
          }
        }
        if (!allAnswered) silentSamples++;
        double s = Math.round((System.nanoTime() - t0) / 1e7) / 100.0;
        if (allAnswered && attached == 0 && open == 0) {
          r.put("allDetachedS", s);
          break;
        }
        if (System.nanoTime() > deadline) {
          r.put("allDetachedS", null);
          r.put("stillAttached", attached);
          r.put("stillOpen", open);
          break;
        }
        Thread.sleep(1000);
      }
      r.put("samplesWithANodeSilent", silentSamples);
      // What the close cost in messages that had to be made up for (summed over the nodes that answer).
      double detachResends = 0, deliveryGaps = 0;
      Map<String, Long> detachResendsByReason = new TreeMap<>();
      for (ServerProc node : allNodes()) {
        try {
          String text = node.get("/metrics").body();
          detachResends += Machine.promValue(text, "tether_detach_resends_total", null);
          for (String reason : List.of("dropped", "unanswered", "session-moved")) {
            long count = (long) Machine.promValue(text, "tether_detach_resends_total", "reason=\"" + reason + "\"");
            detachResendsByReason.merge(reason, count, Long::sum);
          }
          deliveryGaps += Machine.promValue(text, "tether_delivery_gaps_total", null);
        } catch (Exception e) {
          // a node that does not answer is already counted in samplesWithANodeSilent
        }
      }
      r.put("detachResends", (long) detachResends);
      r.put("detachResendsByReason", detachResendsByReason);
      r.put("deliveryGaps", (long) deliveryGaps);
      return r;
    }

    /** What the server says about itself (Tether: the cluster's shards and entities). */
    Object info() {
      try {
        String body = get(kind.equals("tether") ? "/api/cluster" : "/stats").body();
        return LINE.readTree(body);
      } catch (Exception e) {
        return e.toString();
      }
    }

    Map<String, Object> stop() {
      if (!members.isEmpty()) {
        // The clients are gone: let their sessions passivate (passivate-detached-after is 30 s)
        // before the nodes leave, or every leaving node hands its remembered sessions to the
        // last one, which would restart them all at once.
        try {
          Thread.sleep(40_000);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }
      // Members first (in parallel): the first node holds the embedded database.
      List<Map<String, Object>> memberLogs = List.of();
      try {
        memberLogs = inParallel(members.stream().map(m -> (Callable<Map<String, Object>>) m::stopProcess).toList());
      } catch (Exception e) {
        System.out.println("stopping the cluster's members: " + e);
      }
      Map<String, Object> r = stopProcess();
      if (!memberLogs.isEmpty()) r.put("members", memberLogs);
      return r;
    }

    private Map<String, Object> stopProcess() {
      Map<String, Object> r = new LinkedHashMap<>();
      if (proc == null) return r;
      List<Long> helpers = new ArrayList<>(helperPids);
      helpers.addAll(helpers());
      proc.destroy(); // SIGTERM: Tether runs its CoordinatedShutdown, node closes
      try {
        if (!proc.waitFor(60, TimeUnit.SECONDS)) {
          r.put("killed", true);
          proc.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        r.put("exitCode", proc.exitValue());
        Thread.sleep(500);
      } catch (Exception e) {
        r.put("stopError", e.toString());
      }
      List<Long> left = new ArrayList<>();
      for (long h : helpers) {
        if (ProcessHandle.of(h).map(ProcessHandle::isAlive).orElse(false)) {
          left.add(h);
          ProcessHandle.of(h).ifPresent(ProcessHandle::destroy);
        }
      }
      if (!left.isEmpty()) r.put("helpersLeftRunning", left);
      r.put("log", benchDir.relativize(log).toString());
      r.putAll(Machine.scanLog(log));
      return r;
    }
  }

  /** Runs each task on a thread of its own; returns their results in order, or throws the first failure. */
  static <T> List<T> inParallel(List<Callable<T>> tasks) throws Exception {
    ExecutorService threads = Executors.newCachedThreadPool();
    try {
      List<T> results = new ArrayList<>();
      for (Future<T> f : threads.invokeAll(tasks)) {
        try {
          results.add(f.get());
        } catch (ExecutionException e) {
          throw e.getCause() instanceof Exception cause ? cause : e;
        }
      }
      return results;
    } finally {
      threads.shutdown();
    }
  }

  static long parseMillis(String d) {
    Matcher m = Pattern.compile("(\\d+)\\s*(ms|s|m|min)?").matcher(d.trim());
    if (!m.matches()) throw new IllegalArgumentException("bad duration " + d);
    long v = Long.parseLong(m.group(1));
    String u = m.group(2) == null ? "s" : m.group(2);
    return switch (u) {
      case "ms" -> v;
      case "s" -> v * 1000;
      default -> v * 60_000;
    };
  }

  /** A worker JVM. */
  final class WorkerProc {
    final int id;
    final Process proc;
    final PrintWriter stdin;
    final BlockingQueue<String> lines = new LinkedBlockingQueue<>();
    JsonNode result;

    WorkerProc(int id, int share, int k, int port, String server, String runId) throws Exception {
      this.id = id;
      Worker.Cfg cfg = new Worker.Cfg();
      cfg.scenario = scenario;
      cfg.server = server;
      cfg.port = port;
      cfg.workerId = id;
      cfg.n = share;
      cfg.connectConcurrency = i("connect-concurrency");
      cfg.backoffInitialMs = i("backoff-initial-ms");
      cfg.backoffMaxMs = i("backoff-max-ms");
      cfg.payloadBytes = i("payload");
      cfg.client = opt.get("client");
      cfg.connectLimitS = i("connect-limit-s");
      cfg.helloRetries = i("hello-retries");
      if (opt.containsKey("storm-timeout-s")) cfg.stormTimeoutS = i("storm-timeout-s");
      if (opt.containsKey("duration-s")) cfg.durationS = i("duration-s");
      if (opt.containsKey("warmup-s")) cfg.warmupS = i("warmup-s");
      if (opt.containsKey("drain-s")) cfg.drainS = i("drain-s");
      if (opt.containsKey("kill-every-s")) cfg.killEveryS = d("kill-every-s");
      if (opt.containsKey("concurrency")) cfg.concurrency = Math.max(1, i("concurrency") / k);
      if (opt.containsKey("mode")) cfg.mode = opt.get("mode");
      if (opt.containsKey("room-size")) cfg.roomSize = i("room-size");
      if (opt.containsKey("batch")) cfg.batch = i("batch");
      if (opt.containsKey("missed")) cfg.missed = i("missed");
      if (opt.containsKey("resume-concurrency")) cfg.resumeConcurrency = i("resume-concurrency");
      if (opt.containsKey("rate")) {
        if (scenario.equals("drops")) cfg.ratePerSession = d("rate");
        else cfg.rate = d("rate") / k;
      }
      String jar = new File(Bench.class.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath();
      List<String> cmd = List.of("java", "-Xmx" + opt.get("worker-xmx"), "-XX:+UseParallelGC", "-cp", jar, Worker.class.getName());
      ProcessBuilder pb = new ProcessBuilder(cmd);
      pb.redirectError(logDir.resolve(runId + "-worker" + id + ".log").toFile());
      proc = pb.start();
      stdin = new PrintWriter(new OutputStreamWriter(proc.getOutputStream(), StandardCharsets.UTF_8), true);
      stdin.println(LINE.writeValueAsString(cfg));
      Thread reader =
          new Thread(
              () -> {
                try (BufferedReader r = new BufferedReader(new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8))) {
                  String line;
                  while ((line = r.readLine()) != null) lines.add(line);
                } catch (IOException e) {
                  // process gone
                }
                lines.add("EOF");
              },
              "worker-" + id + "-out");
      reader.setDaemon(true);
      reader.start();
    }

    JsonNode awaitEvent(String name) throws Exception {
      while (true) {
        String line = lines.poll(i("event-timeout-s"), TimeUnit.SECONDS);
        if (line == null) throw new IllegalStateException("worker " + id + ": no " + name + " within " + i("event-timeout-s") + " s");
        if (line.startsWith("EVENT " + name + " ")) {
          System.out.printf("worker %d: %s%n", id, line);
          return LINE.readTree(line.substring(("EVENT " + name + " ").length()));
        }
        if (line.equals("EOF")) throw new IllegalStateException("worker " + id + " exited before " + name + " (exit " + proc.waitFor() + ")");
        if (line.startsWith("RESULT ")) {
          result = LINE.readTree(line.substring(7));
          throw new IllegalStateException("worker " + id + " finished before " + name);
        }
      }
    }

    JsonNode awaitResult() throws Exception {
      if (result != null) return result;
      while (true) {
        String line = lines.poll(i("event-timeout-s"), TimeUnit.SECONDS);
        if (line == null) throw new IllegalStateException("worker " + id + ": no result within " + i("event-timeout-s") + " s");
        if (line.startsWith("RESULT ")) return result = LINE.readTree(line.substring(7));
        if (line.equals("EOF")) throw new IllegalStateException("worker " + id + " exited without a result (exit " + proc.waitFor() + ")");
      }
    }

    void go() {
      stdin.println("GO");
    }

    void stop() {
      try {
        stdin.close();
        if (!proc.waitFor(20, TimeUnit.SECONDS)) proc.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
      } catch (Exception e) {
        proc.destroyForcibly();
      }
    }
  }

  // ===========================================================================================

  /** The machine and /proc readings. */
  static final class Machine {
    static double[] loadavg() {
      try {
        String[] p = Files.readString(Path.of("/proc/loadavg")).trim().split("\\s+");
        return new double[] {Double.parseDouble(p[0]), Double.parseDouble(p[1]), Double.parseDouble(p[2])};
      } catch (IOException e) {
        return new double[] {-1, -1, -1};
      }
    }

    /**
     * The sum of a metric's samples in Prometheus text ({@code name{labels} value}), keeping only
     * the samples whose labels contain {@code label} when it is not null.
     */
    static double promValue(String text, String name, String label) {
      double sum = 0;
      for (String line : text.split("\n")) {
        if (line.startsWith("#") || !(line.startsWith(name + "{") || line.startsWith(name + " "))) continue;
        int space = line.lastIndexOf(' ');
        String series = line.substring(0, space);
        if (label != null && !series.contains(label)) continue;
        sum += Double.parseDouble(line.substring(space + 1));
      }
      return sum;
    }

    static long statusKb(long pid, String key) {
      try {
        for (String l : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
          if (l.startsWith(key + ":")) return Long.parseLong(l.replaceAll("\\D", ""));
        }
      } catch (IOException e) {
        // gone
      }
      return -1;
    }

    /** user + system CPU seconds of a process, from /proc/pid/stat (100 ticks per second). */
    static double cpuSeconds(long pid) {
      try {
        String st = Files.readString(Path.of("/proc/" + pid + "/stat"));
        String[] f = st.substring(st.lastIndexOf(')') + 2).split(" ");
        return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / 100.0;
      } catch (Exception e) {
        return 0;
      }
    }

    static long pssKb(long pid) {
      try {
        for (String l : Files.readAllLines(Path.of("/proc/" + pid + "/smaps_rollup"))) {
          if (l.startsWith("Pss:")) return Long.parseLong(l.replaceAll("\\D", ""));
        }
      } catch (IOException e) {
        // gone
      }
      return -1;
    }

    /** Every descendant of pid (embedded PostgreSQL's postmaster and backends for Tether). */
    static List<Long> descendants(long pid) {
      List<Long> out = new ArrayList<>();
      ProcessHandle.of(pid).ifPresent(p -> p.descendants().forEach(d -> out.add(d.pid())));
      return out;
    }

    /** TCP sockets and their memory (kernel pages, both ends of every loopback connection). */
    static Map<String, Object> sockstat() {
      Map<String, Object> m = new LinkedHashMap<>();
      try {
        for (String l : Files.readAllLines(Path.of("/proc/net/sockstat"))) {
          if (l.startsWith("TCP:")) {
            String[] p = l.substring(4).trim().split("\\s+");
            for (int i = 0; i + 1 < p.length; i += 2) m.put("tcp_" + p[i], Long.parseLong(p[i + 1]));
          }
        }
        if (m.get("tcp_mem") instanceof Long pages) m.put("tcpMemKb", pages * 4);
      } catch (IOException e) {
        m.put("error", e.toString());
      }
      return m;
    }

    static String exec(List<String> cmd) {
      try {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor(60, TimeUnit.SECONDS);
        return out.trim();
      } catch (Exception e) {
        return "(" + e + ")";
      }
    }

    static Map<String, Object> scanLog(Path log) {
      Map<String, Object> r = new LinkedHashMap<>();
      try {
        List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
        // ERROR and WARN count log levels only; lines that merely name an exception (stack
        // trace lines, pekko's INFO dead-letter notices about an AskTimeoutException) are counted
        // apart, so that a run's "error lines" are errors.
        long errors = 0, warns = 0, exceptionMentions = 0;
        // Signs of a cluster under strain (pekko's own log lines), counted over the whole run.
        Map<String, String> markers = new LinkedHashMap<>();
        markers.put("flush_timeouts", "FlushBeforeDeathWatchNotification - Flush timeout");
        markers.put("heartbeat_interval_warnings", "heartbeat interval is growing too large");
        markers.put("unreachable_marks", "Marking node as UNREACHABLE");
        markers.put("downing_decisions", "SBR took decision");
        Map<String, Long> markerCounts = new LinkedHashMap<>();
        markers.keySet().forEach(k -> markerCounts.put(k, 0L));
        List<String> samples = new ArrayList<>();
        Map<String, Integer> warnKinds = new HashMap<>();
        for (String l : lines) {
          boolean e = l.contains(" ERROR ") || l.contains("\"level\":\"ERROR\"");
          boolean w = l.contains(" WARN ") || l.contains("\"level\":\"WARN\"");
          boolean x = !e && !w && l.contains("Exception");
          if (e) errors++;
          if (w) warns++;
          if (x) exceptionMentions++;
          markers.forEach((k, text) -> {
            if (l.contains(text)) markerCounts.merge(k, 1L, Long::sum);
          });
          if ((e || w || x) && samples.size() < 15) samples.add(l.length() > 400 ? l.substring(0, 400) : l);
        }
        r.put("logLines", lines.size());
        r.put("logErrorLines", errors);
        r.put("logWarnLines", warns);
        r.put("logExceptionLines", exceptionMentions);
        r.put("clusterMarkers", markerCounts);
        r.put("logSamples", samples);
      } catch (IOException e) {
        r.put("logError", e.toString());
      }
      return r;
    }

    static Map<String, Object> describe(Path benchDir) {
      Map<String, Object> m = new LinkedHashMap<>();
      m.put("nproc", Runtime.getRuntime().availableProcessors());
      try {
        for (String l : Files.readAllLines(Path.of("/proc/meminfo"))) if (l.startsWith("MemTotal:")) m.put("memTotal", l.substring(9).trim());
        for (String l : Files.readAllLines(Path.of("/proc/cpuinfo"))) if (l.startsWith("model name")) {
          m.put("cpu", l.substring(l.indexOf(':') + 1).trim());
          break;
        }
      } catch (IOException e) {
        // leave out
      }
      m.put("kernel", exec(List.of("uname", "-r")));
      m.put("java", exec(List.of("java", "-version")).lines().findFirst().orElse(""));
      m.put("javaRuntime", System.getProperty("java.vm.name") + " " + System.getProperty("java.runtime.version"));
      m.put("node", exec(List.of("node", "--version")));
      m.put("socketio", exec(List.of("node", "-p", "require('" + benchDir.resolve("socketio/node_modules/socket.io/package.json") + "').version")));
      m.put("tetherCommit", exec(List.of("git", "-C", benchDir.toString(), "rev-parse", "--short", "HEAD")));
      m.put("tetherWorkTreeDirty", !exec(List.of("git", "-C", benchDir.getParent().toString(), "status", "--porcelain", "--", "src", "pom.xml")).isEmpty());
      m.put("ulimitNofile", exec(List.of("sh", "-c", "ulimit -n")));
      m.put("loadavg", loadavg());
      return m;
    }
  }
}
