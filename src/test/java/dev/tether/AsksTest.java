package dev.tether;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

class AsksTest {
  private static final ActorTestKit testKit = ActorTestKit.create("AsksTest");

  record Ping(ActorRef<String> replyTo) {}

  @AfterAll
  static void stop() {
    testKit.shutdownTestKit();
  }

  record Due(Ping ping) {}

  /** Asks an actor that answers 200 ms later, so the test's continuation is registered first. */
  private static CompletionStage<String> askEcho() {
    ActorRef<Object> echo =
        testKit.spawn(
            Behaviors.withTimers(
                timers ->
                    Behaviors.receiveMessage(
                        message -> {
                          if (message instanceof Ping ping) timers.startSingleTimer(new Due(ping), Duration.ofMillis(200));
                          if (message instanceof Due due) due.ping().replyTo().tell("pong");
                          return Behaviors.same();
                        })));
    return AskPattern.ask(echo, Ping::new, Duration.ofSeconds(3), testKit.scheduler());
  }

  @Test
  void continuationsRunWhereTheAnswerArrivesNotOnAFreshThread() throws Exception {
    // pekko's own stage would run this on the JDK's async executor: a new "Thread-N" per call on
    // a two-core machine, a common-pool worker on a bigger one.
    String thread = Asks.direct(askEcho()).thenApply(reply -> Thread.currentThread().getName()).get(5, TimeUnit.SECONDS);

    assertFalse(thread.startsWith("Thread-"), thread);
    assertFalse(thread.contains("ForkJoinPool.commonPool"), thread);
    assertTrue(thread.startsWith("AsksTest-pekko.actor"), "ran on the actor system's dispatcher: " + thread);
  }

  @Test
  void answersAndFailuresPassThrough() throws Exception {
    assertEquals("pong", Asks.direct(askEcho()).get(5, TimeUnit.SECONDS));

    ActorRef<Ping> silent = testKit.spawn(Behaviors.ignore());
    CompletionStage<String> unanswered = AskPattern.ask(silent, Ping::new, Duration.ofMillis(100), testKit.scheduler());
    ExecutionException failed =
        assertThrows(ExecutionException.class, () -> Asks.direct(unanswered).get(5, TimeUnit.SECONDS));
    assertInstanceOf(TimeoutException.class, failed.getCause());
  }
}
