package dev.tether.telemetry;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * Per actor class counters fed by {@link InstrumentedMailbox} (queue depth) and {@link
 * TelemetryInterceptor} (messages processed, time spent). Mailboxes are created by Pekko through
 * reflection, so this is a JVM-wide registry keyed by the actor class name; {@link TetherMetrics}
 * exports it. (Several nodes in one JVM, as in tests, share it.)
 */
public final class ActorTelemetry {
  private static final Map<String, ActorTelemetry> BY_CLASS = new ConcurrentHashMap<>();

  private final String actorClass;
  private final LongAdder queued = new LongAdder();
  private final LongAdder enqueued = new LongAdder();
  private final LongAdder processed = new LongAdder();
  private final LongAdder processingNanos = new LongAdder();

  private ActorTelemetry(String actorClass) {
    this.actorClass = actorClass;
  }

  public static ActorTelemetry of(String actorClass) {
    return BY_CLASS.computeIfAbsent(actorClass, ActorTelemetry::new);
  }

  static Map<String, ActorTelemetry> all() {
    return BY_CLASS;
  }

  public String actorClass() {
    return actorClass;
  }

  void onEnqueue() {
    queued.increment();
    enqueued.increment();
  }

  void onDequeue() {
    queued.decrement();
  }

  void onProcessed(long nanos) {
    processed.increment();
    processingNanos.add(nanos);
  }

  /** Messages waiting in the mailboxes of all actors of this class right now. */
  public long mailboxDepth() {
    return queued.sum();
  }

  public long enqueuedTotal() {
    return enqueued.sum();
  }

  public long processedTotal() {
    return processed.sum();
  }

  public double processingSecondsTotal() {
    return processingNanos.sum() / 1e9;
  }
}
