package dev.tether.session;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Subscribe;

/**
 * Tells the sessions of this node when another node leaves the cluster, so that a session whose
 * connection was on that node detaches and starts its grace period.
 *
 * <p>Why not pekko's death watch of each connection: watching an actor on another node costs a
 * system message when the watch starts and two more (with their acknowledgements) when the
 * connection stops, all on the link's control stream, the one that also carries the cluster's
 * heartbeats, whose queue and unacknowledged buffer are bounded (20,000 each; overflowing either
 * ends the link). A whole node's clients leaving at once put tens of thousands of them there.
 * (The heartbeats that arrived late in such a mass close had another cause, pekko-io's selector:
 * see application.conf and docs/BENCHMARKS.md, sixteenth session.) What a session needs from
 * the watch is only "the connection's node is gone"; the connection's own stop is reported by its
 * Detach, re-sent until the session answers {@link ToConnection.Released}. So the sessions of a
 * node share one subscription to the cluster's {@code MemberRemoved} events, the same event that
 * would have fired their remote watches.
 *
 * <p>Thread-safe (sessions subscribe from their own actors); one per node, local on purpose: it
 * knows nothing about other nodes' sessions.
 */
public final class NodeDepartures {

  /** What one session asked for: {@code onDeparture} runs at most once, unless cancelled first. */
  public static final class Subscription {
    private final Address node;
    private final Runnable onDeparture;

    private Subscription(Address node, Runnable onDeparture) {
      this.node = node;
      this.onDeparture = onDeparture;
    }
  }

  private final Map<Address, Set<Subscription>> subscriptions = new HashMap<>();
  // Nodes removed from the cluster, until a node at the same address joins again (a restart):
  // a subscription for one of them is answered at once.
  private final Set<Address> departed = new HashSet<>();

  /**
   * Runs {@code onDeparture} (once) when {@code node} leaves the cluster, or right away when it
   * already has.
   */
  public Subscription subscribe(Address node, Runnable onDeparture) {
    Subscription subscription = new Subscription(node, onDeparture);
    synchronized (this) {
      if (!departed.contains(node)) {
        subscriptions.computeIfAbsent(node, n -> new LinkedHashSet<>()).add(subscription);
        return subscription;
      }
    }
    onDeparture.run();
    return subscription;
  }

  /** The session no longer needs to hear about that node (its connection was let go). */
  public synchronized void cancel(Subscription subscription) {
    Set<Subscription> forNode = subscriptions.get(subscription.node);
    if (forNode == null) return;
    forNode.remove(subscription);
    if (forNode.isEmpty()) subscriptions.remove(subscription.node);
  }

  /** {@code node} was removed from the cluster: every session that subscribed to it is told. */
  public void departed(Address node) {
    List<Subscription> toTell;
    synchronized (this) {
      departed.add(node);
      Set<Subscription> forNode = subscriptions.remove(node);
      toTell = forNode == null ? List.of() : new ArrayList<>(forNode);
    }
    // Outside the lock: each action is a message to a session actor.
    for (Subscription subscription : toTell) subscription.onDeparture.run();
  }

  /** A node that joined (again, after a restart at the same address) is no longer departed. */
  synchronized void joined(Address node) {
    departed.remove(node);
  }

  /** Sessions currently subscribed, over all nodes (for tests). */
  public synchronized int subscribed() {
    int count = 0;
    for (Set<Subscription> forNode : subscriptions.values()) count += forNode.size();
    return count;
  }

  /** Feeds {@code departures} from the cluster's membership events, for the life of the system. */
  public static void follow(ActorSystem<?> system, NodeDepartures departures) {
    system.systemActorOf(listener(departures), "node-departures", org.apache.pekko.actor.typed.Props.empty());
  }

  private static Behavior<ClusterEvent.MemberEvent> listener(NodeDepartures departures) {
    return Behaviors.setup(
        context -> {
          Cluster.get(context.getSystem())
              .subscriptions()
              .tell(Subscribe.create(context.getSelf(), ClusterEvent.MemberEvent.class));
          return Behaviors.receive(ClusterEvent.MemberEvent.class)
              .onMessage(
                  ClusterEvent.MemberRemoved.class,
                  removed -> {
                    context.getLog().info("node {} left the cluster: its connections' sessions detach", removed.member().address());
                    departures.departed(removed.member().address());
                    return Behaviors.same();
                  })
              // A node restarted at the same address joins again: its new connections are live.
              .onMessage(ClusterEvent.MemberJoined.class, joined -> rejoined(departures, joined))
              .onMessage(ClusterEvent.MemberWeaklyUp.class, weaklyUp -> rejoined(departures, weaklyUp))
              .onMessage(ClusterEvent.MemberUp.class, up -> rejoined(departures, up))
              .onAnyMessage(event -> Behaviors.same())
              .build();
        });
  }

  private static Behavior<ClusterEvent.MemberEvent> rejoined(NodeDepartures departures, ClusterEvent.MemberEvent event) {
    departures.joined(event.member().address());
    return Behaviors.same();
  }
}
