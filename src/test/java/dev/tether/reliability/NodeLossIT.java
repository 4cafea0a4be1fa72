package dev.tether.reliability;

import static dev.tether.reliability.Deliveries.firstLines;
import static dev.tether.reliability.Deliveries.seconds;
import static dev.tether.reliability.ProcessCrashIT.log;
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
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Three gateway processes in one cluster on one database; one of them is killed with SIGKILL
 * while messages flow. The split brain resolver (keep-majority) downs it, its sessions are
 * started again on the two survivors, and every client whose session it touched resumes through
 * a survivor within {@link #RESUME_BUDGET}: the clients that were connected to the dead node, and
 * the clients connected to a survivor whose session the dead node hosted (their socket is closed
 * with 1012 when the session's node is gone). Nothing acknowledged is lost: every publish
 * answered 202 is delivered once, in seq order.
 *
 * <p>The node killed is the first one, the seed and oldest member: it also hosts the shard
 * coordinators, so sharding has to fail over as well (the hardest single-node loss).
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class NodeLossIT {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int NODES = 3;
  private static final int CLIENTS = 45;
  /**
   * Clients of the node to kill that never come back. Their sessions (spread over all three
   * nodes' shards) must not stay attached to sockets that died with it: those the dead node hosted
   * detach when recovered elsewhere, those on a survivor when it hears that the node left the
   * cluster (NodeDepartures), since no Detach can come from a killed process.
   */
  private static final int SILENT_CLIENTS = 9;
  /** Which node is killed (0 = node-1, the seed and oldest); {@code -Dtether.it.victim=2} kills node-2. */
  private static final int VICTIM = Integer.getInteger("tether.it.victim", 1) - 1;
  private static final Duration RESUME_BUDGET = Duration.ofSeconds(10);
  /**
   * Fast failure detection and downing, as a deployment that wants 10 s fail-over configures it
   * (docs/OPERATIONS.md, "Fast fail-over"): heartbeats, gossip and reachability checks every
   * 500 ms, unreachable after ~2.5 s, downed 2 s later, removed at the next 500 ms leader tick, and the
   * shard coordinators moved 1 s after removal instead of waiting another stable-after.
   */
  private static final List<String> CLUSTER_TUNING =
      List.of(
          "-Dpekko.cluster.split-brain-resolver.stable-after=2s",
          "-Dpekko.cluster.failure-detector.heartbeat-interval=500ms",
          "-Dpekko.cluster.failure-detector.acceptable-heartbeat-pause=2s",
          "-Dpekko.cluster.unreachable-nodes-reaper-interval=500ms",
          "-Dpekko.cluster.leader-actions-interval=500ms",
          "-Dpekko.cluster.gossip-interval=500ms",
          "-Dpekko.cluster.down-removal-margin=1s");

  private static final List<TetherProcess> processes = new ArrayList<>();
  private static final ExecutorService pool = Executors.newFixedThreadPool(8);
  private static volatile List<Integer> alivePorts = List.of();

  @AfterAll
  static void stopEverything() {
    processes.forEach(TetherProcess::close);
    pool.shutdownNow();
  }

  @Test
  void sessionsOfALostNodeResumeOnTheSurvivorsWithNothingLost() throws Exception {
    String dbUrl = TestDatabase.newDatabase();
    int[] http = new int[NODES];
    int[] cluster = new int[NODES];
    for (int i = 0; i < NODES; i++) {
      http[i] = TetherProcess.freePort();
      cluster[i] = TetherProcess.freePort();
    }
    String seed = "pekko://tether@127.0.0.1:" + cluster[0];
    List<String> jvm = new ArrayList<>(ProcessCrashIT.JVM);
    jvm.addAll(CLUSTER_TUNING);
    // Extra JVM options for the nodes when investigating, e.g. -Dtether.it.node-opts="-Dpekko.loglevel=DEBUG".
    for (String opt : System.getProperty("tether.it.node-opts", "").trim().split("\\s+")) if (!opt.isEmpty()) jvm.add(opt);

    long t0 = System.nanoTime();
    TetherProcess[] nodes = new TetherProcess[NODES];
    try {
      for (int i = 0; i < NODES; i++) {
        Map<String, String> env = TetherProcess.nodeEnv(dbUrl, http[i], cluster[i]);
        env.put("TETHER_SEED_NODES", seed);
        env.put("TETHER_HEARTBEAT_TIMEOUT", "120s");
        nodes[i] = TetherProcess.start("node-" + (i + 1), env, jvm, "NodeLossIT-node-" + (i + 1) + ".log");
        processes.add(nodes[i]);
        // The seed first: it forms the cluster and applies the migrations; then the others together.
        if (i == 0) nodes[0].awaitReady(Duration.ofSeconds(90));
      }
      for (TetherProcess n : nodes) n.awaitReady(Duration.ofSeconds(90));
      awaitMembers(nodes, NODES, Duration.ofSeconds(60));
      alivePorts = List.of(http[0], http[1], http[2]);
      log("3 nodes up after " + seconds(System.nanoTime() - t0) + " (pids " + nodes[0].pid() + ", " + nodes[1].pid() + ", "
          + nodes[2].pid() + ")");

      // Clients spread over the three nodes; after a drop each tries its own node first, then the others.
      List<Callable<RecordingClient>> hellos = new ArrayList<>();
      for (int i = 0; i < CLIENTS; i++) {
        int index = i;
        hellos.add(() -> {
          RecordingClient c = new RecordingClient("node-loss-c" + index);
          c.hello(http[index % NODES], Duration.ofSeconds(20));
          return c;
        });
      }
      List<RecordingClient> clients = Deliveries.all(pool, hellos);
      List<Callable<RecordingClient>> silentHellos = new ArrayList<>();
      for (int i = 0; i < SILENT_CLIENTS; i++) {
        int index = i;
        silentHellos.add(() -> {
          RecordingClient c = new RecordingClient("node-loss-silent" + index);
          c.hello(http[VICTIM], Duration.ofSeconds(20));
          return c;
        });
      }
      List<RecordingClient> silent = Deliveries.all(pool, silentHellos);
      for (int i = 0; i < CLIENTS; i++) {
        int home = http[i % NODES];
        int spread = i;
        clients.get(i).autoResume(() -> homeFirst(home, spread), pool, Duration.ofSeconds(120));
      }

      Publisher publisher =
          new Publisher(clients.stream().map(RecordingClient::sessionId).toList(), () -> alivePorts, 6, Duration.ofMillis(2));
      try {
        assertTrue(Deliveries.await(Duration.ofSeconds(30), () -> publisher.acceptedTotal() >= 300), "no load: " + publisher.outcomes());
        JsonNode before = clusterView(nodes[1]);
        long victimEntities = sessionEntities(before, nodes[VICTIM].clusterAddress());
        log("before the kill: session entities per node " + entitiesPerNode(before) + "; " + publisher.acceptedTotal() + " accepted");
        assertTrue(victimEntities > 0, "the node to kill hosts no session: " + before);

        // The loss: SIGKILL, no leaving, no goodbye.
        long killAt = System.nanoTime();
        nodes[VICTIM].kill();
        List<Integer> survivors = new ArrayList<>();
        for (int i = 0; i < NODES; i++) if (i != VICTIM) survivors.add(http[i]);
        alivePorts = List.copyOf(survivors);
        log("killed " + nodes[VICTIM].name() + " (" + nodes[VICTIM].clusterAddress() + ")");

        // Recovered: every client is connected and has received a message published after the kill
        // (for a session the dead node hosted, that is only possible once it runs on a survivor and
        // its client has resumed).
        boolean recovered =
            Deliveries.await(
                Duration.ofSeconds(60),
                () -> clients.stream().allMatch(c -> c.isConnected() && receivedPublishedAfter(c, publisher, killAt)));
        long recoveredAt = System.nanoTime();
        List<RecordingClient> affected =
            clients.stream().filter(c -> c.closes().stream().anyMatch(x -> x.atNanos() - killAt > 0)).toList();
        if (!recovered) {
          List<String> stuck = new ArrayList<>();
          for (RecordingClient c : clients) {
            if (!c.isConnected() || !receivedPublishedAfter(c, publisher, killAt)) {
              stuck.add(c.user() + " " + c.sessionId() + " connected=" + c.isConnected() + " lastSeq=" + c.lastSeq()
                  + " accepted=" + publisher.accepted(c.sessionId()).size() + " :: " + c.lastEvents(8));
            }
          }
          fail("not every session recovered within 60 s of the kill:\n  " + firstLines(stuck, 15) + "\n" + clusterDiagnostics(nodes));
        }

        long slowest = 0;
        String slowestWho = "";
        int onVictim = 0;
        int onSurvivors = 0;
        Map<Integer, Integer> closeCodes = new TreeMap<>();
        for (RecordingClient c : clients) {
          boolean wasOnVictim = clients.indexOf(c) % NODES == VICTIM;
          if (!affected.contains(c)) {
            assertTrue(!wasOnVictim, c.user() + " was connected to the dead node but never saw its socket close");
            continue;
          }
          if (wasOnVictim) onVictim++;
          else onSurvivors++;
          c.closes().stream().filter(x -> x.atNanos() - killAt > 0).forEach(x -> closeCodes.merge(x.code(), 1, Integer::sum));
          long resumedAfter = c.lastResumedAtNanos() - killAt;
          assertTrue(resumedAfter > 0, c.user() + " lost its connection but never resumed: " + c.lastEvents(8));
          if (resumedAfter > slowest) {
            slowest = resumedAfter;
            slowestWho = c.user() + " (" + c.lastEvents(4) + ")";
          }
        }
        log("after the kill: " + affected.size() + " clients had to resume (" + onVictim + " connected to the dead node, "
            + onSurvivors + " whose session it hosted); close codes " + closeCodes + "; last resume "
            + seconds(slowest) + " after the kill; every session received new messages " + seconds(recoveredAt - killAt)
            + " after the kill");
        log("downing as the survivors logged it:\n  " + firstLines(downingLines(nodes), 12));
        log("slowest resumes (client, node it was on, close codes, resumed after the kill):\n  "
            + firstLines(affected.stream()
                .sorted((a, b) -> Long.compare(b.lastResumedAtNanos(), a.lastResumedAtNanos()))
                .map(c -> c.user() + " on node-" + (clients.indexOf(c) % NODES + 1) + " closes "
                    + c.closes().stream().filter(x -> x.atNanos() - killAt > 0)
                        .map(x -> x.code() + "@" + seconds(x.atNanos() - killAt)).toList()
                    + " resumed " + seconds(c.lastResumedAtNanos() - killAt))
                .toList(), 12));
        assertEquals(CLIENTS / NODES, onVictim, "every client of the dead node resumed elsewhere");
        dev.tether.testkit.Api survivorApi = new dev.tether.testkit.Api(survivors.get(0));
        long detachStart = System.nanoTime();
        for (RecordingClient c : silent) survivorApi.awaitSessionState(c.sessionId(), "detached", Duration.ofSeconds(30));
        log("the " + SILENT_CLIENTS + " sessions whose clients did not come back are detached (grace running), "
            + seconds(System.nanoTime() - killAt) + " after the kill (checked for " + seconds(System.nanoTime() - detachStart) + ")");
        assertTrue(onSurvivors > 0, "no client on a survivor had its session on the dead node (the scenario did not happen)");
        // Judged after the delivery check, so that a slow fail-over still reports whether anything was lost.
        String tooSlow =
            slowest <= RESUME_BUDGET.toNanos()
                ? null
                : "the last client resumed " + seconds(slowest) + " after the kill (budget " + RESUME_BUDGET.toSeconds() + " s): "
                    + slowestWho + "\n" + String.join("\n", downingLines(nodes));

        // A little more load on the two survivors, then everything must have arrived, exactly once, in order.
        long acceptedAfterRecovery = publisher.acceptedSentAfter(recoveredAt);
        assertTrue(
            Deliveries.await(Duration.ofSeconds(30), () -> publisher.acceptedSentAfter(recoveredAt) >= acceptedAfterRecovery + 200),
            "no load after recovery: " + publisher.outcomes());
        publisher.stop();
        log("publishes: " + publisher.acceptedTotal() + " accepted (" + publisher.acceptedSentAfter(killAt)
            + " sent after the kill), outcomes " + publisher.outcomes());
        boolean delivered = Deliveries.awaitAllDelivered(clients, publisher, Duration.ofSeconds(30));
        List<String> problems = new ArrayList<>(publisher.violations());
        for (RecordingClient c : clients) problems.addAll(Deliveries.problems(c, publisher));
        if (!delivered || !problems.isEmpty()) {
          fail("messages lost, duplicated or reordered across the node loss (all delivered: " + delivered + "):\n  "
              + firstLines(problems, 40) + (tooSlow == null ? "" : "\nAlso: " + tooSlow) + "\n" + clusterDiagnostics(nodes));
        }
        JsonNode after = clusterView(nodes[(VICTIM + 1) % NODES]);
        log("delivery verified: " + clients.stream().mapToLong(RecordingClient::lastSeq).sum() + " messages in " + CLIENTS
            + " sessions (" + clients.stream().mapToLong(RecordingClient::replayed).sum()
            + " replayed on resume), none lost, none twice; session entities now " + entitiesPerNode(after) + "; total "
            + seconds(System.nanoTime() - t0));
        if (tooSlow != null) fail(tooSlow);
      } finally {
        publisher.stop();
        clients.forEach(RecordingClient::close);
        silent.forEach(RecordingClient::close);
      }
    } finally {
      processes.forEach(TetherProcess::close);
    }
  }

  /** The alive ports, the client's own node first, the others in an order that spreads the clients. */
  private static List<Integer> homeFirst(int home, int spread) {
    List<Integer> alive = alivePorts;
    List<Integer> ordered = new ArrayList<>();
    if (alive.contains(home)) ordered.add(home);
    List<Integer> others = alive.stream().filter(p -> p != home).toList();
    for (int i = 0; i < others.size(); i++) ordered.add(others.get((i + spread) % others.size()));
    return ordered;
  }

  /** Whether the client processed a message whose publish was sent after {@code nanos} (and answered 202). */
  private static boolean receivedPublishedAfter(RecordingClient c, Publisher publisher, long nanos) {
    var accepted = publisher.accepted(c.sessionId());
    for (RecordingClient.Msg m : c.received()) {
      Publisher.Accepted a = accepted.get(m.seq());
      if (a != null && a.sentAtNanos() - nanos > 0 && a.marker().equals(m.data().path("p").asText())) return true;
    }
    return false;
  }

  /** Polls {@code GET /api/cluster} on every node until each sees {@code members} members up. */
  private static void awaitMembers(TetherProcess[] nodes, int members, Duration max) {
    String[] last = new String[1];
    boolean up =
        Deliveries.await(
            max,
            () -> {
              for (TetherProcess n : nodes) {
                try {
                  JsonNode view = clusterView(n);
                  long upCount = 0;
                  for (JsonNode m : view.path("nodes")) if ("up".equals(m.path("status").asText())) upCount++;
                  last[0] = n.name() + ": " + view;
                  if (upCount != members) return false;
                } catch (Exception e) {
                  last[0] = n.name() + ": " + e;
                  return false;
                }
              }
              return true;
            });
    if (!up) fail("the cluster did not reach " + members + " members up within " + max + "; last view " + last[0]);
  }

  private static JsonNode clusterView(TetherProcess node) throws Exception {
    HttpResponse<String> r = node.get("/api/cluster");
    if (r.statusCode() != 200) throw new IllegalStateException("GET /api/cluster on " + node.name() + ": " + r.statusCode() + " " + r.body());
    return JSON.readTree(r.body());
  }

  private static long sessionEntities(JsonNode view, String address) {
    for (JsonNode n : view.path("nodes")) {
      if (address.equals(n.path("address").asText())) return n.path("sharding").path("ClientProxy").path("entities").asLong();
    }
    return 0;
  }

  private static Map<String, String> entitiesPerNode(JsonNode view) {
    Map<String, String> m = new TreeMap<>();
    for (JsonNode n : view.path("nodes")) {
      m.put(n.path("address").asText().replace("pekko://tether@", ""),
          n.path("status").asText() + "/" + n.path("sharding").path("ClientProxy").path("entities").asLong());
    }
    return m;
  }

  /** What the survivors logged about the dead node: unreachable, split brain resolver decision, removal. */
  private static List<String> downingLines(TetherProcess[] nodes) {
    List<String> lines = new ArrayList<>();
    for (int i = 0; i < nodes.length; i++) {
      if (i == VICTIM || nodes[i] == null) continue;
      for (String l : nodes[i].grepLog("")) {
        if (l.contains("UNREACHABLE") || l.contains("SBR") || l.contains("Downing") || l.contains("is removed")
            || l.contains("Leader is removing") || l.contains("Singleton") && l.contains("ShardCoordinator")) {
          lines.add(nodes[i].name() + ": " + l);
        }
      }
    }
    return lines;
  }

  private static String clusterDiagnostics(TetherProcess[] nodes) {
    StringBuilder b = new StringBuilder();
    for (String l : downingLines(nodes)) b.append(l).append('\n');
    for (int i = 0; i < nodes.length; i++) if (i != VICTIM && nodes[i] != null) b.append(nodes[i].logTail(40)).append('\n');
    return b.toString();
  }
}
