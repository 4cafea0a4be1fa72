package dev.tether.telemetry;

import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.BehaviorInterceptor;
import org.apache.pekko.actor.typed.TypedActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;

/** Counts the messages an actor processes and the time it spends on them, per actor class. */
public final class TelemetryInterceptor<T> extends BehaviorInterceptor<T, T> {
  private final ActorTelemetry telemetry;

  private TelemetryInterceptor(ActorTelemetry telemetry, Class<T> messageClass) {
    super(messageClass);
    this.telemetry = telemetry;
  }

  /** Wraps {@code behavior} so its message handling is measured under {@code actorClass}. */
  public static <T> Behavior<T> instrument(String actorClass, Class<T> messageClass, Behavior<T> behavior) {
    ActorTelemetry telemetry = ActorTelemetry.of(actorClass);
    return Behaviors.intercept(() -> new TelemetryInterceptor<>(telemetry, messageClass), behavior);
  }

  @Override
  public Behavior<T> aroundReceive(TypedActorContext<T> ctx, T msg, ReceiveTarget<T> target) {
    long start = System.nanoTime();
    try {
      return target.apply(ctx, msg);
    } finally {
      telemetry.onProcessed(System.nanoTime() - start);
    }
  }

  @Override
  public boolean isSame(BehaviorInterceptor<Object, Object> other) {
    return other instanceof TelemetryInterceptor<?> o && o.telemetry == telemetry;
  }
}
