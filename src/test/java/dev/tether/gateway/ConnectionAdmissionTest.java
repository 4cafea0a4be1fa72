package dev.tether.gateway;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import dev.tether.telemetry.TetherMetrics;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.stream.QueueOfferResult;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

/**
 * A connection actor waiting for its handshake's turn, on its own (no socket, no sharding: the
 * only place is held by the test, so the session is never asked).
 */
class ConnectionAdmissionTest {
  private static final ActorTestKit testKit = ActorTestKit.create();
  private static final GatewaySettings SETTINGS = GatewaySettings.from(ConfigFactory.load());
  private static final Duration AWAIT = Duration.ofSeconds(5);

  @AfterAll
  static void stop() {
    testKit.shutdownTestKit();
  }

  /** A socket whose client reads nothing: every frame offered is dropped (its queue is full). */
  private static final class FullOutbox implements SocketOutbox {
    final AtomicBoolean closed = new AtomicBoolean();

    @Override
    public QueueOfferResult offer(String json) {
      return QueueOfferResult.dropped();
    }

    @Override
    public void complete() {
      closed.set(true);
    }

    @Override
    public void abort() {
      closed.set(true);
    }
  }

  private static ActorRef<Connection.Command> connection(
      HandshakeAdmission admission, SocketOutbox out, CloseSignal closeSignal, Duration upgradeWaited) {
    var deps =
        new Connection.Dependencies(
            SETTINGS,
            new Authenticator(SETTINGS),
            null,
            null,
            new TetherMetrics(),
            new FailedResumeLimiter(10, 10),
            new LiveConnections(),
            admission);
    return testKit.spawn(Connection.create(deps, out, closeSignal, "192.0.2.1", upgradeWaited));
  }

  private static void send(ActorRef<Connection.Command> connection, ClientFrame frame) {
    TestProbe<Connection.StreamAck> ack = testKit.createTestProbe();
    connection.tell(new Connection.FrameReceived(frame, ack.ref()));
    ack.expectMessage(Connection.StreamAck.INSTANCE);
  }

  @Test
  void aClientOverflowingItsQueueWhileWaitingLeavesTheLine() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    HandshakeAdmission.Waiter test = () -> {};
    admission.enter(test, HandshakeAdmission.Step.SESSION); // the only place
    FullOutbox out = new FullOutbox();
    ActorRef<Connection.Command> connection = connection(admission, out, new CloseSignal(), Duration.ZERO);
    send(connection, new ClientFrame.Hello("waiter", null, null));
    awaitAssert(AWAIT, () -> assertEquals(1, admission.waiting()));

    // Its pong cannot be queued: a slow consumer, closing (4009) while it waits for its turn.
    send(connection, new ClientFrame.Ping());
    awaitAssert(AWAIT, () -> assertEquals(0, admission.waiting()));
    admission.leave(test);
    // The freed place must not go to the closing connection.
    awaitAssert(AWAIT, () -> assertEquals(0, admission.inProgress()));
    assertTrue(out.closed.get());
  }

  @Test
  void theHelloWaitsOnlyWhatIsLeftOfTheBudgetAfterTheUpgradesWait() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    HandshakeAdmission.Waiter test = () -> {};
    admission.enter(test, HandshakeAdmission.Step.SESSION);
    CloseSignal closeSignal = new CloseSignal();
    FullOutbox out = new FullOutbox();
    // The upgrade waited all but 300 ms of the 8 s budget.
    Duration upgradeWaited = SETTINGS.handshakeQueueTimeout().minusMillis(300);
    ActorRef<Connection.Command> connection = connection(admission, out, closeSignal, upgradeWaited);
    long start = System.nanoTime();
    send(connection, new ClientFrame.Hello("late", null, null));
    awaitAssert(
        Duration.ofSeconds(3),
        () -> {
          assertNotNull(closeSignal.get());
          assertEquals(1013, closeSignal.get().code());
        });
    long waitedMs = Duration.ofNanos(System.nanoTime() - start).toMillis();
    assertTrue(waitedMs < 3000, "closed after " + waitedMs + " ms, not after the whole 8 s");
    assertEquals(0, admission.waiting());
    assertEquals(1, admission.refusedBusyCount());
    admission.leave(test);
  }
}
