package dev.tether.gateway;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.LongAdder;

/**
 * How many WebSocket handshakes this node works on at once; the others wait their turn, first
 * come, first served (a waiting session handshake before waiting upgrades, see {@link Step}). A
 * handshake takes two turns, each only for the server's own work: the upgrade (from the accepted
 * upgrade request to the {@code 101} answer and the connection actor started), then the session
 * handshake (from the {@code hello} or {@code resume} read to the welcome written). Both waits
 * together last at most the queue timeout.
 *
 * <p>Why: in a reconnect storm every client comes back within a second. Worked on all at once,
 * each handshake advances at 1/N of the node's speed, all of them can miss their deadlines
 * together (the client's, the server's), the retries add more work, and the sessions' grace runs
 * out; and every session handshake persists an event, so the journal would be asked for all of
 * them at once (the eighth session's storm tripped its circuit breaker). Worked on a bounded
 * number at a time, each one finishes in a fraction of a second; the wait moves to the line,
 * which has its own deadline (an upgrade is then answered 503, a hello/resume closed with 1013,
 * try again later). docs/BENCHMARKS.md, ninth session, has what it did and did not change.
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

  /**
   * Which step a turn is for. A waiting session handshake goes before any waiting upgrade: its
   * client was upgraded already and is counting down its own deadline, so work already started
   * is finished first, and a storm's new upgrades wait until the node has caught up with the
   * sockets it upgraded.
   */
  public enum Step {
    UPGRADE,
    SESSION
  }

  private final int maxInProgress;
  private final Set<Waiter> inProgress = new HashSet<>();
  private final LinkedHashSet<Waiter> waitingSessions = new LinkedHashSet<>();
  private final LinkedHashSet<Waiter> waitingUpgrades = new LinkedHashSet<>();
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
  synchronized boolean enter(Waiter connection, Step step) {
    if (inProgress.contains(connection)) return true;
    // (A free place with someone waiting does not last: leave() hands it on at once.)
    if (inProgress.size() < maxInProgress) {
      inProgress.add(connection);
      updateCounts();
      return true;
    }
    (step == Step.SESSION ? waitingSessions : waitingUpgrades).add(connection);
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
  void leave(Waiter connection) {
    List<Waiter> admitted = new ArrayList<>(1);
    synchronized (this) {
      if (inProgress.remove(connection)) {
        while (inProgress.size() < maxInProgress) {
          Waiter next = pollFirst(waitingSessions);
          if (next == null) next = pollFirst(waitingUpgrades);
          if (next == null) break;
          inProgress.add(next);
          admitted.add(next);
        }
      } else if (!waitingSessions.remove(connection)) {
        waitingUpgrades.remove(connection);
      }
      updateCounts();
    }
    // Told outside the lock: a waiter may call back into this admission.
    for (Waiter next : admitted) next.admitted();
  }

  private static Waiter pollFirst(LinkedHashSet<Waiter> line) {
    var first = line.iterator();
    if (!first.hasNext()) return null;
    Waiter next = first.next();
    first.remove();
    return next;
  }

  private void updateCounts() {
    inProgressCount = inProgress.size();
    waitingCount = waitingSessions.size() + waitingUpgrades.size();
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
