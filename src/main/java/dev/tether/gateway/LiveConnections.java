package dev.tether.gateway;

import java.time.Duration;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.Done;
import org.apache.pekko.actor.typed.ActorRef;

/**
 * The WebSocket connections open on this node, so that a graceful stop can close them all before
 * the shards hand their sessions off: each session then persists that it is detached (with its
 * grace deadline) while the journal is still there, and each client is told to resume (1012)
 * instead of finding its socket reset when the process exits.
 *
 * <p>Local to one node on purpose: it is not a session registry (sharding locates sessions), only
 * the list of sockets this process must close.
 */
public final class LiveConnections {
  private final Set<ActorRef<Connection.Command>> open = ConcurrentHashMap.newKeySet();
  private final CompletableFuture<Done> allClosed = new CompletableFuture<>();
  private volatile boolean closing;

  /** @return true when this node is already closing its connections: the new one must close too */
  boolean add(ActorRef<Connection.Command> connection) {
    open.add(connection);
    return closing;
  }

  /** Called when a connection actor stops, however it stops. */
  void remove(ActorRef<Connection.Command> connection) {
    open.remove(connection);
    if (closing && open.isEmpty()) allClosed.complete(Done.getInstance());
  }

  /**
   * Tells every open connection the server is stopping (it closes with 1012 and releases its
   * session); completes when all of them have stopped, or after {@code max}.
   */
  public CompletionStage<Done> closeAll(Duration max) {
    closing = true;
    for (ActorRef<Connection.Command> connection : open) connection.tell(Connection.ServerStopping.INSTANCE);
    if (open.isEmpty()) allClosed.complete(Done.getInstance());
    return allClosed.completeOnTimeout(Done.getInstance(), max.toMillis(), TimeUnit.MILLISECONDS);
  }
}
