package dev.tether;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import org.apache.pekko.dispatch.OnComplete;
import scala.jdk.javaapi.FutureConverters;

/**
 * Answers of pekko's Java {@code ask} (and other Scala futures seen from Java) as plain
 * {@link CompletableFuture}s whose continuations run where the answer arrives.
 *
 * <p>Why: pekko hands such answers out as Scala's {@code FutureConvertersImpl.CF}, which turns
 * every {@code thenApply}, {@code thenCompose}, {@code whenComplete}, {@code handle} (and
 * {@code ActorContext.pipeToSelf}, which uses {@code whenComplete}) into its {@code ...Async}
 * twin on the JDK's default executor. On a machine with two cores the common fork-join pool has a
 * parallelism of 1, and the JDK then runs each async task on a <em>new thread</em>: a thread
 * started and torn down for every room member a message fans out to, every user index on
 * {@code hello}, every batch entry (found in the benchmark's profile: thousands of
 * {@code Thread-N} per second). Tether's continuations are short (build an answer, tell an
 * actor), so running them on the thread that completes the answer is both cheaper and safe.
 *
 * <p>That thread is whoever completes the ask: the replying actor's dispatcher thread, Artery's
 * inbound thread for a reply from another node, or pekko's scheduler thread when the ask times
 * out. A continuation that does real work (more than a fan-out of tells or building one answer)
 * must hop to a dispatcher with an {@code ...Async} variant and an explicit executor.
 */
public final class Asks {
  private Asks() {}

  public static <T> CompletableFuture<T> direct(CompletionStage<T> answer) {
    CompletableFuture<T> plain = new CompletableFuture<>();
    FutureConverters.asScala(answer)
        .onComplete(
            new OnComplete<T>() {
              @Override
              public void onComplete(Throwable failure, T value) {
                if (failure != null) plain.completeExceptionally(failure);
                else plain.complete(value);
              }
            },
            // Runs the callback on the thread that completes the answer.
            scala.concurrent.ExecutionContext.parasitic$.MODULE$);
    return plain;
  }
}
