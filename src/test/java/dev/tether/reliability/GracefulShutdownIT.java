package dev.tether.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.tether.testkit.RecordingClient;
import dev.tether.testkit.TetherProcess;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * SIGTERM on a gateway with live sessions and its own embedded PostgreSQL (the default run): the
 * node closes the sockets, every session persists that it is detached, and only then is the
 * database stopped. Before the fix the embedded database's own JVM shutdown hook stopped
 * PostgreSQL at once, and sessions failed to persist their detach. Every client is told 1012
 * (resume to continue). After a restart on the same
 * data directory every session is detached with a grace deadline, and resumes.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class GracefulShutdownIT {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int CLIENTS = 100;
  private static final ExecutorService pool = Executors.newFixedThreadPool(8);
  private static final List<TetherProcess> processes = new ArrayList<>();
  private static Path dataDir;

  @AfterAll
  static void stopEverything() throws Exception {
    processes.forEach(TetherProcess::close);
    pool.shutdownNow();
    if (dataDir != null) {
      try (var files = Files.walk(dataDir)) {
        files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      }
    }
  }

  @Test
  void sigtermStopsTheDatabaseOnlyAfterEverySessionPersistedItsDetach() throws Exception {
    dataDir = Files.createTempDirectory("tether-shutdown-it");
    int httpPort = TetherProcess.freePort();
    Map<String, String> env = new LinkedHashMap<>();
    env.put("TETHER_HOST", "127.0.0.1");
    env.put("TETHER_PORT", Integer.toString(httpPort));
    env.put("TETHER_CLUSTER_HOST", "127.0.0.1");
    env.put("TETHER_CLUSTER_PORT", Integer.toString(TetherProcess.freePort()));
    env.put("TETHER_EMBEDDED_DB_DIR", dataDir.toString());
    env.put("TETHER_GRACE", "120s");

    TetherProcess first = start(env);
    first.awaitReady(Duration.ofSeconds(90));
    List<RecordingClient> clients = helloAll(httpPort);

    int exitCode = first.terminate(Duration.ofSeconds(90));
    assertEquals(0, exitCode, "a clean stop on SIGTERM exits 0\n" + first.logTail(40));
    assertEquals(List.of(), first.grepLog("Failed to persist"), "every detach was written");
    assertEquals(List.of(), first.grepLog("terminating connection due to administrator command"), "database stopped last");
    for (RecordingClient c : clients) {
      List<RecordingClient.LinkClosed> closes = c.closes();
      assertEquals(1012, closes.isEmpty() ? -1 : closes.get(closes.size() - 1).code(), "told to resume: " + closes);
      c.abandon();
    }

    TetherProcess second = start(env);
    second.awaitReady(Duration.ofSeconds(90));
    for (RecordingClient c : clients) {
      HttpResponse<String> r = second.get("/api/sessions/" + c.sessionId());
      assertEquals(200, r.statusCode(), r.body());
      JsonNode view = JSON.readTree(r.body());
      assertEquals("detached", view.path("state").asText(), "recovered as detached: " + r.body());
      assertTrue(view.path("graceDeadline").asLong() > System.currentTimeMillis(), "deadline ahead: " + r.body());
    }
    for (RecordingClient c : clients) {
      JsonNode welcome = c.resumeOnce(httpPort, Duration.ofSeconds(20));
      assertEquals(c.sessionId(), welcome.path("sessionId").asText(), welcome.toString());
      assertTrue(welcome.path("resumed").asBoolean(), "resumed: " + welcome);
    }
    assertEquals(0, second.terminate(Duration.ofSeconds(90)), second.logTail(40));
    assertEquals(List.of(), second.grepLog("Failed to persist"), "every detach of the second run was written");
  }

  private static TetherProcess start(Map<String, String> env) {
    TetherProcess p = TetherProcess.start("shutdown-node", env, ProcessCrashIT.JVM, "GracefulShutdownIT.log");
    processes.add(p);
    return p;
  }

  private static List<RecordingClient> helloAll(int port) throws Exception {
    List<Callable<RecordingClient>> tasks = new ArrayList<>();
    for (int i = 0; i < CLIENTS; i++) {
      String user = "shutdown-u" + i;
      tasks.add(() -> {
        RecordingClient c = new RecordingClient(user);
        c.hello(port, Duration.ofSeconds(20));
        return c;
      });
    }
    return Deliveries.all(pool, tasks);
  }
}
