package dev.tether.session;

import com.typesafe.config.Config;
import dev.tether.telemetry.TetherMetrics;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionStage;
import java.util.function.Consumer;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.SupervisorStrategy;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.typed.ClusterSingleton;
import org.apache.pekko.cluster.typed.SingletonActor;

/**
 * The durable half of the grace timer. A session in memory ends itself when its grace timer
 * fires; a detached session that was passivated (or whose node died after it passivated) has no
 * timer any more. The sweeper looks in the session read model for detached sessions past their
 * deadline and wakes each one with {@link ClientProxy.ExpireIfDue}; the session checks its own
 * deadline and ends itself.
 *
 * <p>One per cluster (a cluster singleton, so it moves when its node leaves). The read model may
 * lag the journal: a session it still shows detached may have resumed (the session then ignores
 * the wake) or already expired (a second wake of an ended session does nothing, but brings it back
 * from the journal to find that out). So a session is woken at most once per {@code rewake-after}:
 * under load the read model can fall minutes behind, and waking the same thousand sessions every
 * few seconds recovered each of them from the journal again and again (docs/BENCHMARKS.md,
 * twelfth session). The sweeper pages through the overdue sessions in (deadline, id) order with a
 * cursor, so sessions it just woke and that still show as overdue do not hide the ones behind
 * them; after the last page it starts again from the oldest.
 */
public final class GraceSweeper extends AbstractBehavior<GraceSweeper.Command> {

  /** A session the read model shows detached, with its grace deadline. */
  public record Overdue(String sessionId, Instant graceDeadline) {}

  /** Where the sweeper finds overdue sessions. */
  @FunctionalInterface
  public interface OverdueSessions {
    /**
     * Sessions shown detached with a deadline before {@code now}, in (deadline, session id) order,
     * starting after {@code after} ({@code null}: from the oldest), at most {@code limit}.
     */
    CompletionStage<List<Overdue>> find(Instant now, Overdue after, int limit);
  }

  /** From {@code tether.session.grace-sweeper}. */
  public record Settings(Duration interval, int batch, Duration rewakeAfter) {
    public static Settings from(Config config) {
      Config c = config.getConfig("tether.session.grace-sweeper");
      return new Settings(c.getDuration("interval"), c.getInt("batch"), c.getDuration("rewake-after"));
    }
  }

  /** Only ever sent by the sweeper to itself. */
  public interface Command {}

  private enum Sweep implements Command {
    INSTANCE
  }

  private record Found(List<Overdue> sessions, Throwable failure) implements Command {}

  public static void init(
      ActorSystem<?> system, OverdueSessions overdue, Settings settings, TetherMetrics metrics, Clock clock) {
    ClusterSharding sharding = ClusterSharding.get(system);
    Consumer<String> wake =
        sessionId -> sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(new ClientProxy.ExpireIfDue());
    ClusterSingleton.get(system)
        .init(
            SingletonActor.of(
                Behaviors.supervise(create(overdue, wake, settings, metrics, clock))
                    .onFailure(SupervisorStrategy.restart()),
                "grace-sweeper"));
  }

  /** {@code wake} sends {@link ClientProxy.ExpireIfDue} to a session (through sharding in a node). */
  static Behavior<Command> create(
      OverdueSessions overdue, Consumer<String> wake, Settings settings, TetherMetrics metrics, Clock clock) {
    return Behaviors.setup(
        context ->
            Behaviors.withTimers(
                timers -> {
                  timers.startTimerWithFixedDelay(Sweep.INSTANCE, settings.interval());
                  return new GraceSweeper(context, overdue, wake, settings, metrics, clock);
                }));
  }

  private final OverdueSessions overdue;
  private final Consumer<String> wake;
  private final Settings settings;
  private final TetherMetrics metrics;
  private final Clock clock;
  /** A query is in flight: a slow database never piles up sweeps. */
  private boolean sweeping;
  /** Where the next page starts; {@code null}: from the oldest overdue session. */
  private Overdue cursor;
  /**
   * When each session was last woken (epoch ms), oldest first. Bounded: entries leave after
   * {@code rewakeAfter}, and at most {@code batch} are added per sweep.
   */
  private final LinkedHashMap<String, Long> recentlyWoken = new LinkedHashMap<>();

  private GraceSweeper(
      ActorContext<Command> context,
      OverdueSessions overdue,
      Consumer<String> wake,
      Settings settings,
      TetherMetrics metrics,
      Clock clock) {
    super(context);
    this.overdue = overdue;
    this.wake = wake;
    this.settings = settings;
    this.metrics = metrics;
    this.clock = clock;
  }

  @Override
  public Receive<Command> createReceive() {
    return newReceiveBuilder().onMessage(Sweep.class, s -> onSweep()).onMessage(Found.class, this::onFound).build();
  }

  private Behavior<Command> onSweep() {
    if (sweeping) return this;
    sweeping = true;
    getContext().pipeToSelf(overdue.find(clock.instant(), cursor, settings.batch()), Found::new);
    return this;
  }

  private Behavior<Command> onFound(Found found) {
    sweeping = false;
    if (found.failure() != null) {
      getContext().getLog().warn("Grace sweep failed; trying again in {}", settings.interval(), found.failure());
      return this;
    }
    long now = clock.millis();
    forgetWokenBefore(now - settings.rewakeAfter().toMillis());
    int woken = 0;
    for (Overdue session : found.sessions()) {
      // Still shown overdue after a recent wake: the read model has not caught up with its end
      // (or its resume) yet. Waking it again would only recover it from the journal once more.
      if (recentlyWoken.containsKey(session.sessionId())) continue;
      wake.accept(session.sessionId());
      recentlyWoken.put(session.sessionId(), now);
      woken++;
    }
    // A full page: more may follow it. A short one was the last: start from the oldest again.
    List<Overdue> page = found.sessions();
    cursor = page.size() >= settings.batch() ? page.get(page.size() - 1) : null;
    if (woken > 0) {
      metrics.sweeperWoke(woken);
      getContext().getLog().debug("Woke {} sessions past their grace deadline", woken);
    }
    return this;
  }

  private void forgetWokenBefore(long cutoff) {
    Iterator<Map.Entry<String, Long>> oldestFirst = recentlyWoken.entrySet().iterator();
    while (oldestFirst.hasNext() && oldestFirst.next().getValue() < cutoff) oldestFirst.remove();
  }
}
