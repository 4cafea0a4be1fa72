package dev.tether.session;

import com.typesafe.config.Config;
import dev.tether.telemetry.TetherMetrics;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletionStage;
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
 * lag the journal by a moment: a session it still shows detached may have resumed (the session
 * then ignores the wake) or already expired (a second wake of an ended session does nothing).
 */
public final class GraceSweeper extends AbstractBehavior<GraceSweeper.Command> {

  /** Where the sweeper finds overdue sessions: detached, deadline before {@code now}, oldest first. */
  @FunctionalInterface
  public interface OverdueSessions {
    CompletionStage<List<String>> find(Instant now, int limit);
  }

  /** From {@code tether.session.grace-sweeper}. */
  public record Settings(Duration interval, int batch) {
    public static Settings from(Config config) {
      Config c = config.getConfig("tether.session.grace-sweeper");
      return new Settings(c.getDuration("interval"), c.getInt("batch"));
    }
  }

  /** Only ever sent by the sweeper to itself. */
  public interface Command {}

  private enum Sweep implements Command {
    INSTANCE
  }

  private record Found(List<String> sessionIds, Throwable failure) implements Command {}

  public static void init(
      ActorSystem<?> system, OverdueSessions overdue, Settings settings, TetherMetrics metrics, Clock clock) {
    ClusterSingleton.get(system)
        .init(
            SingletonActor.of(
                Behaviors.supervise(create(overdue, settings, metrics, clock)).onFailure(SupervisorStrategy.restart()),
                "grace-sweeper"));
  }

  static Behavior<Command> create(OverdueSessions overdue, Settings settings, TetherMetrics metrics, Clock clock) {
    return Behaviors.setup(
        context ->
            Behaviors.withTimers(
                timers -> {
                  timers.startTimerWithFixedDelay(Sweep.INSTANCE, settings.interval());
                  return new GraceSweeper(context, overdue, settings, metrics, clock);
                }));
  }

  private final OverdueSessions overdue;
  private final Settings settings;
  private final TetherMetrics metrics;
  private final Clock clock;
  private final ClusterSharding sharding;
  /** A query is in flight: a slow database never piles up sweeps. */
  private boolean sweeping;

  private GraceSweeper(
      ActorContext<Command> context, OverdueSessions overdue, Settings settings, TetherMetrics metrics, Clock clock) {
    super(context);
    this.overdue = overdue;
    this.settings = settings;
    this.metrics = metrics;
    this.clock = clock;
    this.sharding = ClusterSharding.get(context.getSystem());
  }

  @Override
  public Receive<Command> createReceive() {
    return newReceiveBuilder().onMessage(Sweep.class, s -> onSweep()).onMessage(Found.class, this::onFound).build();
  }

  private Behavior<Command> onSweep() {
    if (sweeping) return this;
    sweeping = true;
    getContext().pipeToSelf(overdue.find(clock.instant(), settings.batch()), Found::new);
    return this;
  }

  private Behavior<Command> onFound(Found found) {
    sweeping = false;
    if (found.failure() != null) {
      getContext().getLog().warn("Grace sweep failed; trying again in {}", settings.interval(), found.failure());
      return this;
    }
    for (String sessionId : found.sessionIds()) {
      sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, sessionId).tell(new ClientProxy.ExpireIfDue());
    }
    if (!found.sessionIds().isEmpty()) {
      metrics.sweeperWoke(found.sessionIds().size());
      getContext().getLog().debug("Woke {} sessions past their grace deadline", found.sessionIds().size());
    }
    return this;
  }
}
