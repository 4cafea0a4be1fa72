package dev.tether.testkit;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

/**
 * Backend load for fault tests: threads publishing {@code POST /api/sessions/{id}/messages} to a
 * set of sessions, round robin, through whichever gateway ports {@code ports} names at the time.
 * Each message carries a unique marker {@code {"p":"<session index>-<n>"}}; every publish answered
 * 202 is recorded with the {@code seq} the server gave it. Those are the messages the service has
 * promised to deliver. Failures (refused connections, resets, 503s) are only counted: such a
 * message may or may not have been queued.
 */
public final class Publisher implements AutoCloseable {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** A publish answered 202: its marker, when it was sent and answered (System.nanoTime), through which port. */
  public record Accepted(String marker, long sentAtNanos, long answeredAtNanos, int port) {}

  private final List<String> sessions;
  private final Supplier<List<Integer>> ports;
  private final Duration pause;
  private final HttpClient http =
      HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(2)).build();
  private final Map<String, ConcurrentSkipListMap<Long, Accepted>> accepted = new ConcurrentHashMap<>();
  private final Map<String, AtomicLong> counters = new ConcurrentHashMap<>();
  private final Map<String, AtomicLong> outcomes = new ConcurrentHashMap<>();
  private final List<String> violations = Collections.synchronizedList(new ArrayList<>());
  private final List<Thread> threads = new ArrayList<>();
  private volatile boolean running = true;

  /**
   * Starts {@code threadCount} threads; thread t publishes to the sessions whose index is t
   * modulo {@code threadCount}, pausing {@code pause} after each publish.
   */
  public Publisher(List<String> sessions, Supplier<List<Integer>> ports, int threadCount, Duration pause) {
    this.sessions = List.copyOf(sessions);
    this.ports = ports;
    this.pause = pause;
    for (String s : sessions) {
      accepted.put(s, new ConcurrentSkipListMap<>());
      counters.put(s, new AtomicLong());
    }
    for (int t = 0; t < threadCount; t++) {
      int slot = t;
      Thread thread = new Thread(() -> run(slot, threadCount), "publisher-" + t);
      thread.setDaemon(true);
      threads.add(thread);
      thread.start();
    }
  }

  private void run(int slot, int threadCount) {
    List<Integer> mine = new ArrayList<>();
    for (int i = slot; i < sessions.size(); i += threadCount) mine.add(i);
    long round = 0;
    while (running && !mine.isEmpty()) {
      int index = mine.get((int) (round % mine.size()));
      List<Integer> available = ports.get();
      if (available.isEmpty()) {
        sleep(100);
        continue;
      }
      int port = available.get((int) ((round / mine.size() + index) % available.size()));
      publish(index, port);
      round++;
      if (!pause.isZero()) sleep(pause.toMillis());
    }
  }

  private void publish(int index, int port) {
    String sessionId = sessions.get(index);
    String marker = index + "-" + counters.get(sessionId).incrementAndGet();
    HttpRequest request =
        HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/api/sessions/" + sessionId + "/messages"))
            .timeout(Duration.ofSeconds(10))
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString("{\"data\":{\"p\":\"" + marker + "\"}}"))
            .build();
    long sent = System.nanoTime();
    try {
      HttpResponse<String> r = http.send(request, HttpResponse.BodyHandlers.ofString());
      count("http-" + r.statusCode());
      if (r.statusCode() == 202) {
        long seq = JSON.readTree(r.body()).get("seq").asLong();
        Accepted mine = new Accepted(marker, sent, System.nanoTime(), port);
        Accepted earlier = accepted.get(sessionId).putIfAbsent(seq, mine);
        if (earlier != null) {
          violations.add(sessionId + ": seq " + seq + " answered 202 twice, for " + earlier.marker() + " and " + marker);
        }
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      running = false;
    } catch (Exception e) {
      count(e.getClass().getSimpleName());
      sleep(50); // the gateway is down or unreachable: do not spin
    }
  }

  private void count(String outcome) {
    outcomes.computeIfAbsent(outcome, k -> new AtomicLong()).incrementAndGet();
  }

  /** Stops publishing and waits for the requests in flight. */
  public void stop() {
    running = false;
    for (Thread t : threads) {
      try {
        t.join(Duration.ofSeconds(20).toMillis());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
  }

  @Override
  public void close() {
    stop();
  }

  /** The messages of {@code sessionId} answered 202, by seq. */
  public NavigableMap<Long, Accepted> accepted(String sessionId) {
    return new TreeMap<>(accepted.get(sessionId));
  }

  public long acceptedTotal() {
    return accepted.values().stream().mapToLong(Map::size).sum();
  }

  /** Publishes answered 202 whose request was sent after {@code nanos}. */
  public long acceptedSentAfter(long nanos) {
    return accepted.values().stream()
        .flatMap(m -> m.values().stream())
        .filter(a -> a.sentAtNanos() - nanos > 0)
        .count();
  }

  /** Outcome counts: {@code http-202}, {@code http-503}, exception names. */
  public Map<String, Long> outcomes() {
    Map<String, Long> copy = new TreeMap<>();
    outcomes.forEach((k, v) -> copy.put(k, v.get()));
    return copy;
  }

  public List<String> violations() {
    synchronized (violations) {
      return List.copyOf(violations);
    }
  }

  private void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      running = false;
    }
  }
}
