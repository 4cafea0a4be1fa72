package dev.tether.testkit;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * A Tether gateway as a real OS process: {@code java -jar target/tether.jar} with TETHER_*
 * environment variables and {@code -D} overrides, its output appended to a log file under
 * {@code target/it-logs/}. {@link #kill()} is SIGKILL (no shutdown hook, no goodbye to the
 * cluster, sockets reset by the kernel), which is what a crash or a lost machine looks like.
 *
 * <p>Every process started here is also killed by a JVM shutdown hook, so an aborted test run
 * leaves nothing behind.
 */
public final class TetherProcess implements AutoCloseable {
  private static final Set<Process> LIVE = ConcurrentHashMap.newKeySet();
  private static final Set<Path> LOGS_STARTED = ConcurrentHashMap.newKeySet();
  private static final HttpClient HTTP =
      HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(2)).build();

  static {
    Runtime.getRuntime()
        .addShutdownHook(new Thread(() -> LIVE.forEach(Process::destroyForcibly), "tether-process-reaper"));
  }

  private final String name;
  private final int httpPort;
  private final int clusterPort;
  private final Path logFile;
  private final Process process;
  private final Instant startedAt = Instant.now();

  private TetherProcess(String name, int httpPort, int clusterPort, Path logFile, Process process) {
    this.name = name;
    this.httpPort = httpPort;
    this.clusterPort = clusterPort;
    this.logFile = logFile;
    this.process = process;
  }

  /** The shaded jar under test: the {@code tether.jar} system property (set by failsafe), else target/tether.jar. */
  public static Path jar() {
    Path jar = Path.of(System.getProperty("tether.jar", "target/tether.jar")).toAbsolutePath();
    if (!Files.isRegularFile(jar)) {
      throw new IllegalStateException(
          "No service jar at " + jar + ": build it first (mvn -B -q -DskipTests -Dskip.js=true package)");
    }
    return jar;
  }

  /** A TCP port free on loopback right now (also free for UDP in practice: artery uses TCP here). */
  public static int freePort() {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      s.setReuseAddress(true);
      return s.getLocalPort();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** The directory the process logs go to: target/it-logs. */
  public static Path logDir() {
    Path dir = Path.of(System.getProperty("tether.it.logs", "target/it-logs")).toAbsolutePath();
    try {
      Files.createDirectories(dir);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return dir;
  }

  /**
   * The environment of a node on loopback: HTTP on {@code httpPort}, cluster on {@code clusterPort},
   * journal in {@code dbUrl} (the test's database in the embedded PostgreSQL).
   */
  public static Map<String, String> nodeEnv(String dbUrl, int httpPort, int clusterPort) {
    Map<String, String> env = new LinkedHashMap<>();
    env.put("TETHER_HOST", "127.0.0.1");
    env.put("TETHER_PORT", Integer.toString(httpPort));
    env.put("TETHER_CLUSTER_HOST", "127.0.0.1");
    env.put("TETHER_CLUSTER_PORT", Integer.toString(clusterPort));
    env.put("TETHER_DB_URL", dbUrl);
    env.put("TETHER_DB_USER", "postgres");
    env.put("TETHER_DB_PASSWORD", "postgres");
    return env;
  }

  /**
   * Starts {@code java [jvmArgs] -jar tether.jar} with {@code env} on top of this JVM's environment
   * (minus any TETHER_* variable of the developer's shell), output appended to {@code logName}
   * in {@link #logDir()}. Returns at once; see {@link #awaitReady(Duration)}.
   */
  public static TetherProcess start(String name, Map<String, String> env, List<String> jvmArgs, String logName) {
    Path log = logDir().resolve(logName);
    if (LOGS_STARTED.add(log)) {
      try {
        Files.deleteIfExists(log); // a log from an earlier run; a restart in this run appends
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    List<String> command = new ArrayList<>();
    command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    command.addAll(jvmArgs);
    command.add("-jar");
    command.add(jar().toString());
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().keySet().removeIf(k -> k.startsWith("TETHER_"));
    builder.environment().putAll(env);
    builder.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    builder.redirectErrorStream(true);
    builder.redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
    try {
      Files.writeString(
          log,
          "==== " + Instant.now() + " starting " + name + ": " + String.join(" ", command) + "\n==== env " + env + "\n",
          StandardCharsets.UTF_8,
          java.nio.file.StandardOpenOption.CREATE,
          java.nio.file.StandardOpenOption.APPEND);
      Process process = builder.start();
      LIVE.add(process);
      int http = Integer.parseInt(env.getOrDefault("TETHER_PORT", "8080"));
      int cluster = Integer.parseInt(env.getOrDefault("TETHER_CLUSTER_PORT", "25520"));
      return new TetherProcess(name, http, cluster, log, process);
    } catch (IOException e) {
      throw new UncheckedIOException("could not start " + name, e);
    }
  }

  public String name() {
    return name;
  }

  public int httpPort() {
    return httpPort;
  }

  public int clusterPort() {
    return clusterPort;
  }

  /** The node's cluster address as a seed node would name it. */
  public String clusterAddress() {
    return "pekko://tether@127.0.0.1:" + clusterPort;
  }

  public long pid() {
    return process.pid();
  }

  public boolean isAlive() {
    return process.isAlive();
  }

  public Path logFile() {
    return logFile;
  }

  /** Polls {@code GET /health/ready} until it answers 200; fails early if the process dies. */
  public void awaitReady(Duration max) {
    long deadline = System.nanoTime() + max.toNanos();
    String last = "no answer";
    while (System.nanoTime() < deadline) {
      if (!process.isAlive()) {
        throw new AssertionError(name + " exited with " + process.exitValue() + " before it was ready\n" + logTail(60));
      }
      try {
        HttpResponse<String> r = get("/health/ready");
        if (r.statusCode() == 200) return;
        last = r.statusCode() + " " + r.body();
      } catch (ConnectException e) {
        last = "connection refused";
      } catch (IOException e) {
        last = e.toString();
      }
      sleep(200);
    }
    throw new AssertionError(name + " not ready within " + max + " (last: " + last + ")\n" + logTail(60));
  }

  /** A GET on this node's HTTP port (loopback), answer as text. */
  public HttpResponse<String> get(String path) throws IOException {
    HttpRequest request =
        HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + httpPort + path)).timeout(Duration.ofSeconds(10)).GET().build();
    try {
      return HTTP.send(request, HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted", e);
    }
  }

  /** SIGKILL, and waits until the kernel has reaped the process (its ports are released). */
  public void kill() {
    process.destroyForcibly();
    try {
      if (!process.waitFor(30, TimeUnit.SECONDS)) throw new AssertionError(name + " did not die within 30 s of SIGKILL");
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
    LIVE.remove(process);
    appendMarker("killed (SIGKILL) by the test");
  }

  /**
   * SIGTERM, as systemd or Kubernetes stop a service, then waits for the process to exit; returns
   * its exit code.
   */
  public int terminate(Duration max) {
    appendMarker("sent SIGTERM by the test");
    process.destroy();
    try {
      if (!process.waitFor(max.toMillis(), TimeUnit.MILLISECONDS)) {
        throw new AssertionError(name + " did not exit within " + max + " of SIGTERM\n" + logTail(40));
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
    LIVE.remove(process);
    return process.exitValue();
  }

  /** The last {@code lines} lines of the log, for failure messages. */
  public String logTail(int lines) {
    try {
      List<String> all = Files.readAllLines(logFile, StandardCharsets.UTF_8);
      return "---- " + logFile + " (last " + Math.min(lines, all.size()) + " lines) ----\n"
          + String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
    } catch (IOException | RuntimeException e) {
      return "(log " + logFile + " unreadable: " + e + ")";
    }
  }

  /** Lines of the log containing {@code needle} (diagnostics). */
  public List<String> grepLog(String needle) {
    try {
      return Files.readAllLines(logFile, StandardCharsets.ISO_8859_1).stream().filter(l -> l.contains(needle)).toList();
    } catch (IOException e) {
      return List.of();
    }
  }

  private void appendMarker(String what) {
    try {
      Files.writeString(
          logFile, "==== " + Instant.now() + " " + name + " " + what + "\n", StandardCharsets.UTF_8,
          java.nio.file.StandardOpenOption.APPEND);
    } catch (IOException ignored) {
      // diagnostics only
    }
  }

  public Instant startedAt() {
    return startedAt;
  }

  /** Kills the process if it still runs (tests call it from finally / @AfterAll). */
  @Override
  public void close() {
    if (process.isAlive()) kill();
    LIVE.remove(process);
  }

  private static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }
}
