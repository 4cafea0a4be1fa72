package dev.tether.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.tether.TetherNode;
import dev.tether.client.TetherClient;
import dev.tether.testkit.Api;
import dev.tether.testkit.FaultProxy;
import dev.tether.testkit.TestDatabase;
import dev.tether.testkit.TestNodes;
import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

/**
 * A soak under a hostile network: a hundred clients behind fault-injecting proxies that cut and
 * stall links at random, while the backend publishes to sessions and the clients chat in rooms.
 * At the end every client's stream of seqs is complete, in order, without a duplicate; every
 * message the API answered 202 arrived; every upstream message confirmed with {@code sent}
 * reached each room member exactly once.
 *
 * <p>Sized for CI (about half a minute). Longer runs: {@code -Dtether.chaos.seconds=600
 * -Dtether.chaos.clients=300}.
 */
class ChaosSoakTest {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final int CLIENTS = Integer.getInteger("tether.chaos.clients", 100);
  private static final int SECONDS = Integer.getInteger("tether.chaos.seconds", 15);
  private static final int ROOM_SIZE = 10;
  private static final int PROXIES = 4;
  /** Entries in every other backend publish (a batch); the others publish one message. */
  private static final int API_BATCH = 8;

  /** One simulated user: its client, what it received, what it sent and had confirmed. */
  static final class Player implements TetherClient.Listener {
    final int index;
    final String room;
    final List<TetherClient.Message> received = new CopyOnWriteArrayList<>();
    final List<Integer> confirmedSends = new CopyOnWriteArrayList<>();
    final List<String> sessionLost = new CopyOnWriteArrayList<>();
    TetherClient client;

    Player(int index) {
      this.index = index;
      this.room = "arena-" + (index / ROOM_SIZE);
    }

    @Override
    public void onMessage(TetherClient.Message message) {
      received.add(message);
    }

    @Override
    public void onSessionLost(String reason, long lost, String newSessionId) {
      sessionLost.add(reason);
    }

    final List<String> errors = new CopyOnWriteArrayList<>();

    @Override
    public void onError(String code, String message) {
      errors.add(code + ": " + message);
    }
  }

  @Test
  void everyMessageArrivesOnceInOrderDespiteDropsAndStalls() throws Exception {
    try (TetherNode node =
        TestNodes.start(
            TestDatabase.newDatabase(),
            Map.of(
                "tether.gateway.heartbeat.interval", "500ms",
                "tether.gateway.heartbeat.timeout", "2s",
                "tether.session.grace", "120s",
                "tether.session.outbox.max-messages", 100_000,
                "tether.session.outbox.max-bytes", "64MiB",
                "tether.gateway.limits.failed-resume-burst", 100_000))) {
      Api api = new Api(node.port());
      List<FaultProxy> proxies = new ArrayList<>();
      for (int i = 0; i < PROXIES; i++) proxies.add(new FaultProxy(node.port()));
      List<Player> players = new ArrayList<>();
      try {
        connectAll(proxies, players);
        for (Player p : players) p.client.join(p.room);
        awaitRoomsJoined(api, players);

        Map<String, Map<Long, Integer>> publishedSeqs = new ConcurrentHashMap<>();
        AtomicBoolean running = new AtomicBoolean(true);
        Random random = new Random(2026);
        List<Thread> threads = new ArrayList<>();
        threads.add(thread("publisher", () -> publishLoop(api, players, publishedSeqs, running, new Random(1))));
        threads.add(thread("chatter", () -> chatLoop(players, running, new Random(2))));
        threads.add(thread("chaos", () -> chaosLoop(proxies, running, random)));
        threads.forEach(Thread::start);
        Thread.sleep(Duration.ofSeconds(SECONDS).toMillis());
        running.set(false);
        for (Thread t : threads) t.join(30_000);
        for (FaultProxy proxy : proxies) {
          proxy.restore();
          proxy.refuse(false);
        }

        settle(api, players, publishedSeqs);
        verify(api, players, publishedSeqs);
      } finally {
        for (Player p : players) if (p.client != null) p.client.close();
        for (FaultProxy proxy : proxies) proxy.close();
      }
    }
  }

  private static void connectAll(List<FaultProxy> proxies, List<Player> players) throws Exception {
    List<CompletableFuture<Void>> connecting = new ArrayList<>();
    for (int i = 0; i < CLIENTS; i++) {
      Player p = new Player(i);
      FaultProxy proxy = proxies.get(i % proxies.size());
      p.client =
          TetherClient.builder(URI.create("ws://127.0.0.1:" + proxy.port() + "/ws"))
              .user("chaos-" + i)
              .backoff(new TetherClient.Backoff(Duration.ofMillis(50), Duration.ofMillis(1000), 2.0, Integer.MAX_VALUE))
              .ackEvery(10, Duration.ofMillis(300))
              .connectTimeout(Duration.ofSeconds(30))
              .listener(p)
              .build();
      players.add(p);
      connecting.add(p.client.connect());
    }
    CompletableFuture.allOf(connecting.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
  }

  private static void awaitRoomsJoined(Api api, List<Player> players) throws InterruptedException {
    for (Player p : players) {
      long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
      while (true) {
        JsonNode state = api.get("/api/sessions/" + p.client.sessionId()).json();
        if (state.path("rooms").toString().contains(p.room)) break;
        if (System.nanoTime() > deadline) {
          throw new AssertionError(p.index + " never joined " + p.room + ": " + state + " errors " + p.errors + " client state " + p.client.state());
        }
        Thread.sleep(20);
      }
    }
  }

  /**
   * Backend publishes, recorded as session → (seq → the publish's number) for every entry the API
   * answered with a seq. Every other round is a batch ({@code POST /api/messages}) of
   * {@link #API_BATCH} random sessions, so both publish paths run under the faults.
   */
  private static void publishLoop(
      Api api, List<Player> players, Map<String, Map<Long, Integer>> published, AtomicBoolean running, Random random) {
    int n = 0;
    Map<Integer, Integer> statuses = new HashMap<>();
    long slowest = 0;
    for (int round = 0; running.get(); round++) {
      int entries = round % 2 == 0 ? 1 : API_BATCH;
      List<String> ids = new ArrayList<>();
      List<Integer> numbers = new ArrayList<>();
      List<String> batch = new ArrayList<>();
      for (int i = 0; i < entries; i++) {
        ids.add(players.get(random.nextInt(players.size())).client.sessionId());
        numbers.add(n);
        batch.add("{\"sessionId\":\"" + ids.get(i) + "\",\"data\":{\"api\":" + n++ + "}}");
      }
      long start = System.nanoTime();
      Api.Response r =
          entries == 1
              ? api.post("/api/sessions/" + ids.get(0) + "/messages", "{\"data\":{\"api\":" + numbers.get(0) + "}}")
              : api.post("/api/messages", "{\"messages\":[" + String.join(",", batch) + "]}");
      slowest = Math.max(slowest, (System.nanoTime() - start) / 1_000_000);
      statuses.merge(r.status(), 1, Integer::sum);
      if (r.status() == 202) {
        JsonNode results = entries == 1 ? null : r.json().get("results");
        for (int i = 0; i < entries; i++) {
          JsonNode result = entries == 1 ? r.json() : results.get(i);
          // An entry answered "unavailable" may or may not have been queued: only seqs are promises.
          if (result.has("seq")) {
            published.computeIfAbsent(ids.get(i), k -> new ConcurrentHashMap<>()).put(result.get("seq").asLong(), numbers.get(i));
          }
        }
      }
      sleepQuietly(20);
    }
    System.out.println("chaos soak publisher: statuses " + statuses + ", slowest " + slowest + " ms");
  }

  private static void chatLoop(List<Player> players, AtomicBoolean running, Random random) {
    Map<Integer, Integer> counters = new HashMap<>();
    while (running.get()) {
      Player p = players.get(random.nextInt(players.size()));
      int n = counters.merge(p.index, 1, Integer::sum);
      p.client
          .send("room:" + p.room, "{\"chat\":" + p.index + ",\"n\":" + n + "}")
          .thenRun(() -> p.confirmedSends.add(n));
      sleepQuietly(30); // about 33 room messages/s, 330 deliveries/s: faults, not overload, are the point

    }
  }

  private static void chaosLoop(List<FaultProxy> proxies, AtomicBoolean running, Random random) {
    while (running.get()) {
      FaultProxy proxy = proxies.get(random.nextInt(proxies.size()));
      switch (random.nextInt(10)) {
        case 0, 1, 2, 3, 4, 5 -> proxy.cut(); // links reset
        case 6, 7 -> { // half-open for longer than the heartbeat timeout
          proxy.stall();
          sleepQuietly(2500 + random.nextInt(1000));
          proxy.restore();
        }
        default -> { // the network is gone for a while: cut and refuse reconnects
          proxy.refuse(true);
          proxy.cut();
          sleepQuietly(1000 + random.nextInt(2000));
          proxy.refuse(false);
        }
      }
      sleepQuietly(300 + random.nextInt(700));
    }
  }

  /**
   * Waits until everyone is connected, every send is settled, and every player has received what
   * it must: each confirmed chat of its room plus each API publish to it (a confirmed send is
   * durably accepted at once, but handed to the room's members a moment later).
   */
  private static void settle(Api api, List<Player> players, Map<String, Map<Long, Integer>> published)
      throws InterruptedException {
    long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
    for (Player p : players) {
      while (true) {
        boolean connected = p.client.state() == TetherClient.State.CONNECTED;
        long serverLast = connected ? api.get("/api/sessions/" + p.client.sessionId()).json().path("lastSeq").asLong(-1) : -1;
        long expected = published.getOrDefault(p.client.sessionId(), Map.of()).size();
        for (Player sender : players) if (sender.room.equals(p.room)) expected += sender.confirmedSends.size();
        if (connected && serverLast == p.client.lastSeq() && p.client.pendingCount() == 0 && p.client.lastSeq() >= expected) {
          break;
        }
        if (System.nanoTime() > deadline) {
          throw new AssertionError(
              "player " + p.index + " did not settle: state " + p.client.state() + ", client lastSeq " + p.client.lastSeq()
                  + ", expected " + expected + ", server lastSeq " + serverLast + ", pending sends " + p.client.pendingCount());
        }
        Thread.sleep(50);
      }
    }
  }

  private static void verify(Api api, List<Player> players, Map<String, Map<Long, Integer>> published)
      throws Exception {
    Map<String, Map<String, Integer>> roomCopies = new HashMap<>(); // player -> "sender:n" -> count
    int totalReceived = 0;
    for (Player p : players) {
      assertTrue(p.sessionLost.isEmpty(), "player " + p.index + " lost its session: " + p.sessionLost);
      // Complete, in order, no duplicate: exactly 1..lastSeq.
      List<Long> seqs = new ArrayList<>();
      for (TetherClient.Message m : p.received) seqs.add(m.seq());
      for (int i = 0; i < seqs.size(); i++) {
        assertEquals(i + 1L, seqs.get(i), "player " + p.index + " stream " + seqs);
      }
      totalReceived += seqs.size();
      // Every publish answered with a seq arrived under that seq.
      for (Map.Entry<Long, Integer> promised : published.getOrDefault(p.client.sessionId(), Map.of()).entrySet()) {
        long seq = promised.getKey();
        assertTrue(seq <= seqs.size(), "published seq " + seq + " reached player " + p.index);
        JsonNode data = JSON.readTree(p.received.get((int) seq - 1).data());
        assertEquals(promised.getValue().intValue(), data.path("api").asInt(-1), "player " + p.index + " seq " + seq);
      }
      Map<String, Integer> copies = new HashMap<>();
      for (TetherClient.Message m : p.received) {
        JsonNode data = JSON.readTree(m.data());
        if (data.has("chat")) copies.merge(data.get("chat").asInt() + ":" + data.get("n").asInt(), 1, Integer::sum);
      }
      roomCopies.put(p.room + "/" + p.index, copies);
    }
    int confirmed = 0;
    for (Player sender : players) {
      for (int n : sender.confirmedSends) {
        confirmed++;
        for (Player member : players) {
          if (!member.room.equals(sender.room)) continue;
          Integer count = roomCopies.get(member.room + "/" + member.index).get(sender.index + ":" + n);
          if (count == null || count != 1) {
            throw new AssertionError(
                "chat " + sender.index + ":" + n + " reached member " + member.index + " " + count + " times; member "
                    + api.get("/api/sessions/" + member.client.sessionId()).body() + "; sender "
                    + api.get("/api/sessions/" + sender.client.sessionId()).body() + "; sender confirmed " + sender.confirmedSends
                    + "; member errors " + member.errors + "; sender errors " + sender.errors
                    + "; member saw from sender " + fromSender(member, sender.index)
                    + "; duplicates at member " + duplicates(roomCopies.get(member.room + "/" + member.index)));
          }
        }
      }
    }
    assertTrue(confirmed > CLIENTS, "the soak sent enough to mean something: " + confirmed);
    assertTrue(totalReceived > confirmed, "received " + totalReceived);
    System.out.printf(
        "chaos soak: %d clients, %d s, %d confirmed sends, %d messages received, %d API publishes%n",
        CLIENTS, SECONDS, confirmed, totalReceived, published.values().stream().mapToInt(Map::size).sum());
  }

  private static List<String> fromSender(Player member, int sender) {
    List<String> seen = new ArrayList<>();
    for (TetherClient.Message m : member.received) {
      if (m.data().contains("\"chat\":" + sender + ",")) seen.add(m.seq() + "=" + m.data());
    }
    return seen;
  }

  private static Map<String, Integer> duplicates(Map<String, Integer> copies) {
    Map<String, Integer> dup = new HashMap<>();
    copies.forEach((k, v) -> {
      if (v != 1) dup.put(k, v);
    });
    return dup;
  }

  private static Thread thread(String name, Runnable body) {
    Thread t = new Thread(body, "chaos-" + name);
    t.setDaemon(true);
    return t;
  }

  private static void sleepQuietly(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
