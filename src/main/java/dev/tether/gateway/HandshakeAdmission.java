package dev.tether.gateway;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

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
 * <p><b>The limit follows the node's pace</b> (when a target turn time is set): a fixed number of
 * places is right only for the speed it was chosen for. On a node that completes 500 handshakes
 * a second, 128 places mean a quarter of a second each; on an overloaded cluster completing 8 a
 * second per node, the same 128 places mean 16 s each, longer than the session's answer may take
 * (2 x ask-timeout, then 1011), so the node finishes work whose client has already been told to
 * go away. So the limit is additive-increase, multiplicative-decrease on the time turns take
 * (the way TCP finds a link's capacity): a turn that took longer than the target cuts the limit
 * by a tenth (at most once per target time, the time a cut takes to show), a turn within the
 * target while the places were in use raises it by about one per limit's worth of turns, between
 * the minimum and the maximum. What no place is found for waits in line, which costs nothing,
 * and is turned away with 503/1013 at the queue timeout, before the client's own deadline.
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
  private final int minInProgress;
  private final long targetTurnNanos; // 0: the limit stays at maxInProgress
  private final LongSupplier nanoClock;
  /** The places now; a fraction so that each fast turn can raise it by 1/limit. */
  private double limit;
  private long lastCutNanos;
  /** Turns being worked on, with when each began. */
  private final Map<Waiter, Long> inProgress = new HashMap<>();
  private final LinkedHashSet<Waiter> waitingSessions = new LinkedHashSet<>();
  private final LinkedHashSet<Waiter> waitingUpgrades = new LinkedHashSet<>();
  private final LongAdder refusedBusy = new LongAdder();
  // Read by the metrics' gauges without the lock.
  private volatile int inProgressCount;
  private volatile int waitingCount;
  private volatile int limitNow;

  /** A fixed limit. @param maxInProgress handshakes worked on at once; 0 = 64 per available processor */
  public HandshakeAdmission(int maxInProgress) {
    this(maxInProgress, 1, Duration.ZERO, System::nanoTime);
  }

  /**
   * @param maxInProgress the most handshakes worked on at once (where the limit starts); 0 = 64
   *     per available processor
   * @param minInProgress the fewest, however slow turns are (at most {@code maxInProgress})
   * @param targetTurnTime how long a turn may take before the limit is cut; zero: a fixed limit
   */
  public HandshakeAdmission(int maxInProgress, int minInProgress, Duration targetTurnTime, LongSupplier nanoClock) {
    if (maxInProgress < 0) throw new IllegalArgumentException("max handshakes in progress must be >= 0, not " + maxInProgress);
    this.maxInProgress = maxInProgress == 0 ? 64 * Runtime.getRuntime().availableProcessors() : maxInProgress;
    if (minInProgress < 1) throw new IllegalArgumentException("min handshakes in progress must be >= 1, not " + minInProgress);
    if (targetTurnTime.isNegative()) throw new IllegalArgumentException("target turn time must not be negative");
    // A maximum set below the default minimum (a small node, a test) caps the minimum too.
    this.minInProgress = Math.min(minInProgress, this.maxInProgress);
    this.targetTurnNanos = targetTurnTime.toNanos();
    this.nanoClock = nanoClock;
    this.limit = this.maxInProgress;
    this.limitNow = this.maxInProgress;
    this.lastCutNanos = nanoClock.getAsLong() - targetTurnNanos;
  }

  public int maxInProgress() {
    return maxInProgress;
  }

  /** How many handshakes may be worked on at once now (the maximum unless turns have been slow). */
  public int limit() {
    return limitNow;
  }

  /**
   * @return true when {@code connection} may go on now; otherwise it waits in line and is told
   *     {@link Waiter#admitted()} when its turn comes
   */
  synchronized boolean enter(Waiter connection, Step step) {
    if (inProgress.containsKey(connection)) return true;
    // (A free place with someone waiting does not last: leave() hands it on at once.)
    if (inProgress.size() < limitNow) {
      inProgress.put(connection, nanoClock.getAsLong());
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
      Long began = inProgress.remove(connection);
      if (began != null) {
        long now = nanoClock.getAsLong();
        adapt(now - began, now);
        while (inProgress.size() < limitNow) {
          Waiter next = pollFirst(waitingSessions);
          if (next == null) next = pollFirst(waitingUpgrades);
          if (next == null) break;
          inProgress.put(next, now);
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

  /** One turn took {@code turnNanos}: the limit follows (see the class comment). Under the lock. */
  private void adapt(long turnNanos, long now) {
    if (targetTurnNanos == 0) return;
    if (turnNanos > targetTurnNanos) {
      if (now - lastCutNanos < targetTurnNanos) return; // the last cut has not shown yet
      lastCutNanos = now;
      limit = Math.max(minInProgress, Math.floor(limit * 0.9));
    } else if (inProgress.size() + 1 >= limitNow / 2) {
      // Only a limit in use is evidence that more places would be used well.
      limit = Math.min(maxInProgress, limit + 1 / limit);
    }
    limitNow = (int) limit;
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
