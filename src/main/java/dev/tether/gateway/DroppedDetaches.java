package dev.tether.gateway;

import dev.tether.session.ClientProxy;
import dev.tether.session.ToConnection;
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
 */
public final class DroppedDetaches {
  private DroppedDetaches() {}

  public static void follow(ActorSystem<?> system) {
    system.systemActorOf(listener(), "dropped-detaches", Props.empty());
  }

  private static Behavior<Dropped> listener() {
    return Behaviors.setup(
        context -> {
          context.getSystem().eventStream().tell(new EventStream.Subscribe<>(Dropped.class, context.getSelf()));
          return Behaviors.receiveMessage(
              dropped -> {
                Object message = dropped.message();
                // Sent through sharding (to the session's next incarnation) it travels in an envelope.
                if (message instanceof ShardingEnvelope<?> envelope) message = envelope.message();
                if (message instanceof ClientProxy.Detach detach && detach.replyTo() != null) {
                  detach.replyTo().tell(new ToConnection.DetachDropped());
                }
                return Behaviors.same();
              });
        });
  }
}
