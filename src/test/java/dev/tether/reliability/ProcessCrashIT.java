package dev.tether.reliability;

import static dev.tether.reliability.Deliveries.firstLines;
import static dev.tether.reliability.Deliveries.seconds;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.tether.testkit.Publisher;
import dev.tether.testkit.RecordingClient;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TetherProcess;
import java.net.http.HttpResponse;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
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
 * The gateway process is killed with SIGKILL in the middle of load and started again on the same
 * database and ports. Nothing the service acknowledged may be lost: every client resumes with the
 * last seq it processed and receives every message whose publish was answered 202, in seq order,
 * exactly once. Sessions that were already detached (their clients gone for good) still expire
 * after their grace period, on the restarted process, without anyone touching them.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ProcessCrashIT {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Duration GRACE = Duration.ofSeconds(20);
  private static final int CLIENTS = 50;
  private static final int LEAVERS = 10;
  /** JVM settings of the gateway processes: small heap, C1 only (the machine has two cores). */
  static final List<String> JVM = List.of("-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1");

  private static final List<TetherProcess> processes = new ArrayList<>();
  private static final ExecutorService pool = Executors.newFixedThreadPool(8);

  @AfterAll
  static void stopEverything() {
    processes.forEach(TetherProcess::close);
    pool.shutdownNow();
  }

  @Test
  void killedGatewayLosesNothingAndDetachedSessionsStillExpire() throws Exception {
    String dbUrl = TestDatabase.newDatabase();
    int httpPort = TetherProcess.freePort();
    int clusterPort = TetherProcess.freePort();
    Map<String, String> env = TetherProcess.nodeEnv(dbUrl, httpPort, clusterPort);
    env.put("TETHER_GRACE", GRACE.toSeconds() + "s");
    // The clients here only read; no heartbeat close may interfere with the crash under test.
    env.put("TETHER_HEARTBEAT_TIMEOUT", "120s");

    long t0 = System.nanoTime();
    TetherProcess first = start(env, "ProcessCrashIT-run1.log");
    first.awaitReady(Duration.ofSeconds(90));
    log("gateway pid " + first.pid() + " ready on :" + httpPort + " after " + seconds(System.nanoTime() - t0));

    List<RecordingClient> clients = helloAll("crash-c", CLIENTS, httpPort);
    List<RecordingClient> leavers = helloAll("crash-leaver", LEAVERS, httpPort);
    for (RecordingClient c : clients) c.autoResume(() -> List.of(httpPort), pool, Duration.ofSeconds(150));

    Publisher publisher =
        new Publisher(clients.stream().map(RecordingClient::sessionId).toList(), () -> List.of(httpPort), 4, Duration.ofMillis(2));
    try {
      assertTrue(Deliveries.await(Duration.ofSeconds(30), () -> publisher.acceptedTotal() >= 200), "no load: " + publisher.outcomes());

      // Some clients go away for good before the crash: their sessions are detached, with a deadline.
      for (RecordingClient l : leavers) l.abandon();
      Map<String, Long> deadlines = new LinkedHashMap<>();
      for (RecordingClient l : leavers) deadlines.put(l.sessionId(), awaitDetached(first, l.sessionId()));

      long before = publisher.acceptedTotal();
      assertTrue(Deliveries.await(Duration.ofSeconds(30), () -> publisher.acceptedTotal() >= before + 300), "load stalled");

      // The crash: SIGKILL while publishes are in flight.
      long killAt = System.nanoTime();
      long acceptedBeforeKill = publisher.acceptedTotal();
      first.kill();
      log("killed gateway after " + acceptedBeforeKill + " accepted publishes; outcomes so far " + publisher.outcomes());

      TetherProcess second = start(env, "ProcessCrashIT-run2.log");
      second.awaitReady(Duration.ofSeconds(90));
      long readyAt = System.nanoTime();
      log("restarted gateway pid " + second.pid() + " ready " + seconds(readyAt - killAt) + " after the kill");

      boolean allBack = Deliveries.await(Duration.ofSeconds(60), () -> clients.stream().allMatch(RecordingClient::isConnected));
      long backAt = System.nanoTime();
      if (!allBack) {
        fail("not every client resumed within 60 s of the restart:\n  "
            + firstLines(clients.stream().filter(c -> !c.isConnected()).map(c -> c.user() + " " + c.lastEvents(8)).toList(), 10)
            + "\n" + second.logTail(80));
      }
      log("all " + CLIENTS + " clients resumed " + seconds(backAt - readyAt) + " after readiness");

      // The load goes on against the new process for a while, then stops.
      long afterRestart = publisher.acceptedSentAfter(readyAt);
      assertTrue(
          Deliveries.await(Duration.ofSeconds(30), () -> publisher.acceptedSentAfter(readyAt) >= afterRestart + 300),
          "no load after the restart: " + publisher.outcomes());
      publisher.stop();
      log("publishes: " + publisher.acceptedTotal() + " accepted, outcomes " + publisher.outcomes());

      boolean delivered = Deliveries.awaitAllDelivered(clients, publisher, Duration.ofSeconds(30));
      List<String> problems = new ArrayList<>(publisher.violations());
      for (RecordingClient c : clients) problems.addAll(Deliveries.problems(c, publisher));
      if (!delivered || !problems.isEmpty()) {
        fail("messages lost, duplicated or reordered across the crash (all delivered: " + delivered + "):\n  "
            + firstLines(problems, 40) + "\n" + second.logTail(60));
      }
      long resumed = clients.stream().filter(c -> c.resumes() > 0).count();
      assertEquals(CLIENTS, resumed, "every client resumed its session");
      log("delivery verified: " + clients.stream().mapToLong(RecordingClient::lastSeq).sum() + " messages in "
          + CLIENTS + " sessions (" + clients.stream().mapToLong(RecordingClient::replayed).sum()
          + " of them replayed on resume), none lost, none twice");

      // The sessions detached before the crash expire on the restarted process at their deadline,
      // with no client and no API call touching them first (the DB is watched, not the sessions).
      long latestDeadline = deadlines.values().stream().mapToLong(Long::longValue).max().orElseThrow();
      long waitMillis = latestDeadline - System.currentTimeMillis() + 30_000;
      boolean expired =
          Deliveries.await(Duration.ofMillis(Math.max(waitMillis, 5_000)), () -> tombstones(dbUrl, deadlines.keySet()).size() == LEAVERS);
      Map<String, Tombstone> tombs = tombstones(dbUrl, deadlines.keySet());
      assertTrue(expired, "detached sessions not all expired by deadline + 30 s: " + tombs.keySet() + " of " + deadlines.keySet()
          + "\n" + second.logTail(60));
      long restartedAtMillis = System.currentTimeMillis() - (System.nanoTime() - readyAt) / 1_000_000;
      for (var e : deadlines.entrySet()) {
        Tombstone t = tombs.get(e.getKey());
        assertEquals("expired", t.reason(), "tombstone of " + e.getKey());
        assertTrue(t.endedAtMillis() >= e.getValue() - 1_000,
            e.getKey() + " expired at " + t.endedAtMillis() + ", before its deadline " + e.getValue());
        long due = Math.max(e.getValue(), restartedAtMillis);
        assertTrue(t.endedAtMillis() <= due + 15_000,
            e.getKey() + " expired at " + t.endedAtMillis() + ", long after it was due at " + due);
        HttpResponse<String> r = second.get("/api/sessions/" + e.getKey());
        assertEquals(404, r.statusCode(), () -> "GET of expired " + e.getKey() + ": " + r.body());
        assertEquals(0, TestDatabase.count(dbUrl, "SELECT count(*) FROM event_journal WHERE persistence_id = ?",
            "ClientProxy|" + e.getKey()), "journal rows left of expired " + e.getKey());
      }
      log("all " + LEAVERS + " detached sessions expired on the restarted process (tombstone 'expired', 404, journal erased); "
          + "total " + seconds(System.nanoTime() - t0));
    } finally {
      publisher.stop();
      clients.forEach(RecordingClient::close);
      processes.forEach(TetherProcess::close);
    }
  }

  private static TetherProcess start(Map<String, String> env, String logName) {
    TetherProcess p = TetherProcess.start("gateway", env, JVM, logName);
    processes.add(p);
    return p;
  }

  private static List<RecordingClient> helloAll(String prefix, int n, int port) throws Exception {
    List<Callable<RecordingClient>> tasks = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      String user = prefix + i;
      tasks.add(() -> {
        RecordingClient c = new RecordingClient(user);
        c.hello(port, Duration.ofSeconds(20));
        return c;
      });
    }
    return Deliveries.all(pool, tasks);
  }

  /** Waits for the session to be detached and returns its grace deadline (epoch ms). */
  private static long awaitDetached(TetherProcess node, String sessionId) throws Exception {
    long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
    String last = "";
    while (System.nanoTime() < deadline) {
      HttpResponse<String> r = node.get("/api/sessions/" + sessionId);
      last = r.statusCode() + " " + r.body();
      if (r.statusCode() == 200) {
        JsonNode state = JSON.readTree(r.body());
        if ("detached".equals(state.path("state").asText())) return state.get("graceDeadline").asLong();
      }
      Thread.sleep(50);
    }
    throw new AssertionError("session " + sessionId + " not detached: " + last);
  }

  record Tombstone(String reason, long endedAtMillis) {}

  private static Map<String, Tombstone> tombstones(String dbUrl, java.util.Collection<String> ids) {
    Map<String, Tombstone> found = new LinkedHashMap<>();
    try (Connection c = DriverManager.getConnection(dbUrl, "postgres", "postgres");
        PreparedStatement q = c.prepareStatement(
            "SELECT session_id, reason, (extract(epoch FROM ended_at) * 1000)::bigint FROM session_tombstones WHERE session_id = ANY (?)")) {
      q.setArray(1, c.createArrayOf("varchar", ids.toArray()));
      try (ResultSet rs = q.executeQuery()) {
        while (rs.next()) found.put(rs.getString(1), new Tombstone(rs.getString(2), rs.getLong(3)));
      }
    } catch (java.sql.SQLException e) {
      throw new IllegalStateException(e);
    }
    return found;
  }

  static void log(String what) {
    System.out.printf("[%tT] %s%n", System.currentTimeMillis(), what);
  }
}
