package dev.tether.gateway;

import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.Set;
import java.util.concurrent.atomic.LongAdder;

/**
 * How many WebSocket handshakes this node works on at once; the others wait their turn, first
 * come, first served. A handshake takes two turns, each only for the server's own work: the
 * upgrade (from the complete upgrade request to the {@code 101} answer and the connection actor
 * started), then the session handshake (from the {@code hello} or {@code resume} read to the
 * welcome written).
 *
 * <p>Why: in a reconnect storm every client comes back within a second. Worked on all at once,
 * each handshake advances at 1/N of the node's speed, all of them miss their deadlines together
 * (the client's, the server's), the retries add more work, and the sessions' grace runs out:
 * congestion collapse (docs/BENCHMARKS.md, eighth session). Worked on a few at a time, each one
 * finishes in a fraction of a second and the node completes handshakes at its full rate; the
 * wait moves to the queue, which has its own deadline (the client is then closed with 1013, try
 * again later; an upgrade waiting too long is answered 503).
 *
 * <p>No turn covers time spent waiting for the client: one that is slow to send its upgrade
 * request or its {@code hello} holds no place (its own deadlines run meanwhile), so slow or
 * malicious clients cannot fill the node's places.
 *
 * <p>Thread-safe; whoever holds or waits for a turn calls {@link #leave} when done, however it
 * ends (idempotent).
 */
public final class HandshakeAdmission {
  /** One turn's holder: told once, on any thread, that its turn has come. */
  public interface Waiter {
    void admitted();
  }

  private final int maxInProgress;
  private final Set<Waiter> inProgress = new HashSet<>();
  private final LinkedHashSet<Waiter> waiting = new LinkedHashSet<>();
  private final LongAdder refusedBusy = new LongAdder();
  // Read by the metrics' gauges without the lock.
  private volatile int inProgressCount;
  private volatile int waitingCount;

  /** @param maxInProgress handshakes worked on at once; 0 = 64 per available processor */
  public HandshakeAdmission(int maxInProgress) {
    if (maxInProgress < 0) throw new IllegalArgumentException("max handshakes in progress must be >= 0, not " + maxInProgress);
    this.maxInProgress = maxInProgress == 0 ? 64 * Runtime.getRuntime().availableProcessors() : maxInProgress;
  }

  public int maxInProgress() {
    return maxInProgress;
  }

  /**
   * @return true when {@code connection} may go on now; otherwise it waits in line and is told
   *     {@link Waiter#admitted()} when its turn comes
   */
  synchronized boolean enter(Waiter connection) {
    if (inProgress.contains(connection)) return true;
    if (waiting.isEmpty() && inProgress.size() < maxInProgress) {
      inProgress.add(connection);
      updateCounts();
      return true;
    }
    waiting.add(connection);
    updateCounts();
    return false;
  }

  /** A handshake waited longer than the queue timeout and was turned away (1013 or 503). */
  void refusedBusy() {
    refusedBusy.increment();
  }

  /** Handshakes turned away because they waited too long, since the start. */
  public long refusedBusyCount() {
    return refusedBusy.sum();
  }

  /** The turn is over (its work done, failed, or the socket gone), or no longer wanted: the next one's turn. */
  synchronized void leave(Waiter connection) {
    if (inProgress.remove(connection)) {
      var next = waiting.iterator();
      while (inProgress.size() < maxInProgress && next.hasNext()) {
        Waiter admitted = next.next();
        next.remove();
        inProgress.add(admitted);
        admitted.admitted(); // an actor tell or an async callback: it does not run the work here
      }
    } else {
      waiting.remove(connection);
    }
    updateCounts();
  }

  private void updateCounts() {
    inProgressCount = inProgress.size();
    waitingCount = waiting.size();
  }

  /** Handshakes being worked on now. */
  public int inProgress() {
    return inProgressCount;
  }

  /** Handshakes waiting for their turn. */
  public int waiting() {
    return waitingCount;
  }
}
