package dev.tether.gateway;

import dev.tether.session.ClientProxy;
import dev.tether.session.ToConnection;
import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;
import org.apache.pekko.actor.Dropped;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.eventstream.EventStream;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.sharding.typed.ShardingEnvelope;

/**
 * Tells a connection when pekko dropped its {@link ClientProxy.Detach} on the way to another node,
 * so that it sends it again a second later rather than after {@code detach-resend-after}.
 *
 * <p>Pekko delivers messages between nodes at most once: when a link's send queue is full it
 * drops the message and publishes {@link Dropped} on the sending node's event stream. A mass
 * disconnect is when that happens (10,000 sockets of a node closing at once overflowed pekko's
 * default queue: docs/BENCHMARKS.md, fourteenth session), and also when sessions answer slowly;
 * following the drops themselves makes the lost Detach messages go again at once without
 * re-sending the thousands that are only waiting for a busy session.
 *
 * <p>The drops are also logged, at most once per {@link #LOG_EVERY}, counted by the reason pekko
 * gives (a full send queue, a full shard buffer, ...), so that an operator sees why they happen.
 */
public final class DroppedDetaches {
  private DroppedDetaches() {}

  public static void follow(ActorSystem<?> system) {
    follow(system, LOG_EVERY);
  }

  static void follow(ActorSystem<?> system, Duration logEvery) {
    system.systemActorOf(listener(logEvery), "dropped-detaches", Props.empty());
  }

  static final Duration LOG_EVERY = Duration.ofSeconds(10);

  private enum LogDrops {
    INSTANCE
  }

  private static Behavior<Object> listener(Duration logEvery) {
    return Behaviors.setup(
        context ->
            Behaviors.withTimers(
                timers -> {
                  context.getSystem().eventStream().tell(new EventStream.Subscribe<>(Dropped.class, context.getSelf().narrow()));
                  // Detach messages dropped since the last log line, by pekko's reason.
                  Map<String, Integer> dropsByReason = new TreeMap<>();
                  return Behaviors.receive(Object.class)
                      .onMessage(
                          Dropped.class,
                          dropped -> {
                            Object message = dropped.message();
                            // Sent through sharding (to the session's next incarnation) it travels in an envelope.
                            if (message instanceof ShardingEnvelope<?> envelope) message = envelope.message();
                            if (message instanceof ClientProxy.Detach detach && detach.replyTo() != null) {
                              detach.replyTo().tell(new ToConnection.DetachDropped());
                              if (dropsByReason.isEmpty()) timers.startSingleTimer(LogDrops.INSTANCE, logEvery);
                              dropsByReason.merge(String.valueOf(dropped.reason()), 1, Integer::sum);
                            }
                            return Behaviors.same();
                          })
                      .onMessageEquals(
                          LogDrops.INSTANCE,
                          () -> {
                            context
                                .getLog()
                                .warn(
                                    "pekko dropped {} Detach messages in {} s, each sent again; by reason: {}",
                                    dropsByReason.values().stream().mapToInt(Integer::intValue).sum(),
                                    logEvery.toSeconds(),
                                    dropsByReason);
                            dropsByReason.clear();
                            return Behaviors.same();
                          })
                      .build();
                }));
  }
}
