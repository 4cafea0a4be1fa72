package dev.tether.reliability;

import dev.tether.testkit.Publisher;
import dev.tether.testkit.RecordingClient;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.function.BooleanSupplier;

/** What the reliability tests check about delivery, and the waiting they share. */
final class Deliveries {
  private Deliveries() {}

  /**
   * Everything wrong with what {@code client} received, given the publishes the service answered
   * 202 for its session: the stream must be exactly seq 1, 2, 3, ... (no gap, no duplicate, no
   * reordering, across all its connections), reach at least the highest accepted seq, and carry
   * at each accepted seq the very message that was accepted as it (and no message twice).
   * Seqs that were not answered 202 (publishes cut off by the crash) may be there or not.
   */
  static List<String> problems(RecordingClient client, Publisher publisher) {
    List<String> problems = new ArrayList<>(client.violations());
    String who = client.user() + "/" + client.sessionId() + ": ";
    NavigableMap<Long, Publisher.Accepted> accepted = publisher.accepted(client.sessionId());
    List<RecordingClient.Msg> received = client.received();
    Map<String, Long> seenMarkers = new HashMap<>();
    for (int i = 0; i < received.size(); i++) {
      RecordingClient.Msg m = received.get(i);
      if (m.seq() != i + 1) {
        problems.add(who + "message #" + (i + 1) + " processed has seq " + m.seq());
        break;
      }
      String marker = m.data() == null ? null : m.data().path("p").asText(null);
      Long before = marker == null ? null : seenMarkers.putIfAbsent(marker, m.seq());
      if (before != null) problems.add(who + "message " + marker + " delivered twice, as seq " + before + " and " + m.seq());
    }
    long highest = accepted.isEmpty() ? 0 : accepted.lastKey();
    if (received.size() < highest) {
      problems.add(
          who + "received up to seq " + received.size() + " but seq " + highest + " was accepted (202); missing "
              + missing(received.size(), accepted));
    }
    for (var e : accepted.entrySet()) {
      long seq = e.getKey();
      if (seq > received.size()) break;
      RecordingClient.Msg m = received.get((int) seq - 1);
      String got = m.data() == null ? null : m.data().path("p").asText(null);
      if (!e.getValue().marker().equals(got)) {
        problems.add(who + "seq " + seq + " was accepted (202) for " + e.getValue().marker() + " but delivered " + m.data());
      }
    }
    return problems;
  }

  private static String missing(long receivedUpTo, NavigableMap<Long, Publisher.Accepted> accepted) {
    var tail = accepted.tailMap(receivedUpTo, false);
    List<String> shown = new ArrayList<>();
    for (var e : tail.entrySet()) {
      if (shown.size() == 8) {
        shown.add("... (" + tail.size() + " in all)");
        break;
      }
      shown.add(e.getKey() + "=" + e.getValue().marker());
    }
    return shown.toString();
  }

  /** Waits until every client has processed at least the highest seq accepted for its session. */
  static boolean awaitAllDelivered(List<RecordingClient> clients, Publisher publisher, Duration max) {
    return await(
        max,
        () -> clients.stream()
            .allMatch(c -> {
              var accepted = publisher.accepted(c.sessionId());
              return accepted.isEmpty() || c.lastSeq() >= accepted.lastKey();
            }));
  }

  static boolean await(Duration max, BooleanSupplier condition) {
    long deadline = System.nanoTime() + max.toNanos();
    while (true) {
      if (condition.getAsBoolean()) return true;
      if (System.nanoTime() - deadline > 0) return false;
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return false;
      }
    }
  }

  /** Runs the tasks on {@code pool} and returns their results in order; the first failure is rethrown. */
  static <T> List<T> all(ExecutorService pool, List<Callable<T>> tasks) throws Exception {
    List<Future<T>> futures = pool.invokeAll(tasks);
    List<T> results = new ArrayList<>();
    for (Future<T> f : futures) {
      try {
        results.add(f.get());
      } catch (java.util.concurrent.ExecutionException e) {
        throw e.getCause() instanceof Exception cause ? cause : e;
      }
    }
    return results;
  }

  /** At most {@code n} lines of a report. */
  static String firstLines(List<String> lines, int n) {
    if (lines.size() <= n) return String.join("\n  ", lines);
    return String.join("\n  ", lines.subList(0, n)) + "\n  ... (" + lines.size() + " in all)";
  }

  static String seconds(long nanos) {
    return String.format("%.2f s", nanos / 1e9);
  }
}
