package dev.tether.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.telemetry.TetherMetrics;
import dev.tether.testkit.Eventually;
import dev.tether.testkit.TestClock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The sweeper against a read model that lags: the overdue sessions it shows never go away (as if
 * their {@code Ended} had not been projected yet). Each is woken once per {@code rewake-after},
 * and a full page of sessions already woken does not hide the ones behind it.
 */
class GraceSweeperTest {
  private static final Instant T0 = Instant.parse("2026-12-02T12:00:00Z");
  private static final Duration REWAKE_AFTER = Duration.ofSeconds(60);

  private final ActorTestKit testKit = ActorTestKit.create();
  private final TestClock clock = new TestClock(T0);
  private final List<String> woken = new CopyOnWriteArrayList<>();
  /** The cursor of every query, in order ("-" for none). */
  private final List<String> cursors = new CopyOnWriteArrayList<>();

  @AfterEach
  void shutDown() {
    testKit.shutdownTestKit();
  }

  /** A read model showing {@code sessions} overdue for good, answering pages as the real query does. */
  private GraceSweeper.OverdueSessions stuckReadModel(List<GraceSweeper.Overdue> sessions) {
    Comparator<GraceSweeper.Overdue> order =
        Comparator.comparing(GraceSweeper.Overdue::graceDeadline).thenComparing(GraceSweeper.Overdue::sessionId);
    List<GraceSweeper.Overdue> sorted = new ArrayList<>(sessions);
    sorted.sort(order);
    return (now, after, limit) -> {
      cursors.add(after == null ? "-" : after.sessionId());
      List<GraceSweeper.Overdue> page = new ArrayList<>();
      for (GraceSweeper.Overdue s : sorted) {
        if (!s.graceDeadline().isBefore(now)) continue;
        if (after != null && order.compare(s, after) <= 0) continue;
        if (page.size() < limit) page.add(s);
      }
      return CompletableFuture.completedFuture(page);
    };
  }

  private void startSweeper(GraceSweeper.OverdueSessions overdue, int batch) {
    GraceSweeper.Settings settings = new GraceSweeper.Settings(Duration.ofMillis(20), batch, REWAKE_AFTER);
    testKit.spawn(GraceSweeper.create(overdue, woken::add, settings, new TetherMetrics(), clock));
  }

  private static GraceSweeper.Overdue overdue(String sessionId, int secondsBeforeT0) {
    return new GraceSweeper.Overdue(sessionId, T0.minusSeconds(secondsBeforeT0));
  }

  private void awaitQueries(int more) {
    int target = cursors.size() + more;
    Eventually.awaitAssert(
        Duration.ofSeconds(5), () -> assertTrue(cursors.size() >= target, "the sweeper keeps sweeping"));
  }

  private List<String> sortedWoken() {
    List<String> copy = new ArrayList<>(woken);
    Collections.sort(copy);
    return copy;
  }

  @Test
  void aSessionStillShownOverdueIsWokenOncePerRewakePeriod() {
    startSweeper(stuckReadModel(List.of(overdue("a", 30), overdue("b", 20), overdue("c", 10))), 1000);
    awaitQueries(10);
    assertEquals(List.of("a", "b", "c"), woken, "each woken once, oldest deadline first, in ten sweeps");

    clock.advance(REWAKE_AFTER.minusSeconds(1));
    awaitQueries(5);
    assertEquals(3, woken.size(), "not again before rewake-after");

    clock.advance(Duration.ofSeconds(2));
    awaitQueries(5);
    assertEquals(List.of("a", "a", "b", "b", "c", "c"), sortedWoken(), "once more after rewake-after");
  }

  @Test
  void aFullPageOfWokenSessionsDoesNotHideTheOnesBehindIt() {
    List<GraceSweeper.Overdue> sessions = new ArrayList<>();
    for (int i = 0; i < 7; i++) sessions.add(overdue("s" + i, 100 - i));
    startSweeper(stuckReadModel(sessions), 3);

    Eventually.awaitAssert(Duration.ofSeconds(5), () -> assertTrue(woken.size() >= 7, "all seven woken"));
    awaitQueries(6);
    assertEquals(List.of("s0", "s1", "s2", "s3", "s4", "s5", "s6"), woken, "each exactly once, in deadline order");
    // Pages of three after the cursor; after the short last page, from the oldest again.
    // A copy first: the sweeper keeps appending, and a live sub-list of it would fail on that.
    assertEquals(List.of("-", "s2", "s5", "-", "s2", "s5", "-"), List.copyOf(cursors).subList(0, 7));
  }

  @Test
  void settingsComeFromTetherSessionGraceSweeper() {
    GraceSweeper.Settings settings =
        GraceSweeper.Settings.from(com.typesafe.config.ConfigFactory.parseResources("tether.conf").resolve());
    assertEquals(Duration.ofSeconds(5), settings.interval());
    assertEquals(1000, settings.batch());
    assertEquals(REWAKE_AFTER, settings.rewakeAfter());
  }
}
