package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import com.typesafe.config.ConfigFactory;
import dev.tether.session.ClientProxy;
import dev.tether.session.ToConnection;
import dev.tether.telemetry.TetherMetrics;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.LoggingTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.Dropped;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.eventstream.EventStream;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.Entity;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Join;
import org.apache.pekko.stream.QueueOfferResult;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A closed connection's Detach is re-sent until the session answers Released: a session on
 * another node does not watch the connection, so a Detach dropped between nodes would otherwise
 * leave it attached with no grace deadline. The "session" here is a probe behind sharding.
 */
class ConnectionDetachTest {
  private static ActorTestKit testKit;
  private static TestProbe<ToEntity> sessionsBehindSharding;

  /** What sharding delivered to the entity {@code sessionId}. */
  private record ToEntity(String sessionId, ClientProxy.Command command) {}
  /** A Detach merely unanswered is sent again after 2 s here (30 s by default). */
  private static final GatewaySettings QUICK_RESEND = settings("2s");
  /** ...and here not within any test's time: only a reported drop sends it again. */
  private static final GatewaySettings SLOW_RESEND = settings("10m");

  private static GatewaySettings settings(String detachResendAfter) {
    return GatewaySettings.from(
        ConfigFactory.parseString("tether.gateway.detach-resend-after = " + detachResendAfter)
            .withFallback(ConfigFactory.load()));
  }

  @BeforeAll
  static void start() {
    testKit =
        ActorTestKit.create(
            "ConnectionDetachTest",
            ConfigFactory.parseString(
                    """
                    pekko.actor.provider = cluster
                    pekko.remote.artery.canonical.hostname = "127.0.0.1"
                    pekko.remote.artery.canonical.port = 0
                    pekko.cluster.jmx.multi-mbeans-in-same-jvm = on
                    pekko.coordinated-shutdown.run-by-jvm-shutdown-hook = off
                    """)
                .withFallback(ConfigFactory.parseResources("serialization.conf"))
                .withFallback(ConfigFactory.load()));
    Cluster cluster = Cluster.get(testKit.system());
    cluster.manager().tell(Join.create(cluster.selfMember().address()));
    sessionsBehindSharding = testKit.createTestProbe(ToEntity.class);
    ActorRef<ToEntity> forward = sessionsBehindSharding.getRef();
    ClusterSharding.get(testKit.system())
        .init(
            Entity.of(
                ClientProxy.ENTITY_TYPE_KEY,
                ctx ->
                    Behaviors.receiveMessage(
                        command -> {
                          forward.tell(new ToEntity(ctx.getEntityId(), command));
                          return Behaviors.same();
                        })));
  }

  @AfterAll
  static void stop() {
    testKit.shutdownTestKit();
  }

  /** A socket that takes every frame. */
  private static final class OpenOutbox implements SocketOutbox {
    @Override
    public QueueOfferResult offer(String json) {
      return QueueOfferResult.enqueued();
    }

    @Override
    public void complete() {}

    @Override
    public void abort() {}
  }

  private record Attached(ActorRef<Connection.Command> connection, ActorRef<ToConnection> adapter, TetherMetrics metrics) {
    double detachResends(String reason) {
      return metrics.registry().get("tether_detach_resends").tag("reason", reason).counter().count();
    }
  }

  /** A connection whose hello was welcomed by {@code session}. */
  private static Attached attachedTo(ActorRef<ClientProxy.Command> session, GatewaySettings settings) {
    TetherMetrics metrics = new TetherMetrics();
    var deps =
        new Connection.Dependencies(
            settings,
            new Authenticator(settings),
            ClusterSharding.get(testKit.system()),
            null,
            metrics,
            new FailedResumeLimiter(10, 10),
            new LiveConnections(),
            new HandshakeAdmission(4));
    ActorRef<Connection.Command> connection =
        testKit.spawn(Connection.create(deps, new OpenOutbox(), new CloseSignal(), "192.0.2.1", Duration.ZERO));
    TestProbe<Connection.StreamAck> ack = testKit.createTestProbe();
    connection.tell(new Connection.FrameReceived(new ClientFrame.Hello("dana", null, null), ack.getRef()));
    ToEntity toEntity = sessionsBehindSharding.expectMessageClass(ToEntity.class, Duration.ofSeconds(30));
    ClientProxy.Open open = (ClientProxy.Open) toEntity.command();
    open.connection()
        .tell(
            new ToConnection.Welcome(
                session, toEntity.sessionId(), "dana", 1, false, 0, 0, 0, 0, 60_000, List.of(), Map.of()));
    return new Attached(connection, open.connection(), metrics);
  }

  @Test
  void theDetachIsSentAgainUntilTheSessionAnswers() {
    TestProbe<ClientProxy.Command> session = testKit.createTestProbe(ClientProxy.Command.class);
    Attached attached = attachedTo(session.getRef(), QUICK_RESEND);

    attached.connection().tell(new Connection.StreamEnded());
    ClientProxy.Detach first = session.expectMessageClass(ClientProxy.Detach.class);
    assertEquals(1, first.generation());
    assertSame(attached.adapter(), first.replyTo());
    // Unanswered (lost on the way, say): sent again detach-resend-after later.
    ClientProxy.Detach again = session.expectMessageClass(ClientProxy.Detach.class, Duration.ofSeconds(4));
    assertEquals(1, again.generation());
    assertEquals(1.0, attached.detachResends("unanswered"));
    assertEquals(0.0, attached.detachResends("dropped"));

    again.replyTo().tell(new ToConnection.Released());
    testKit.createTestProbe().expectTerminated(attached.connection(), Duration.ofSeconds(3));
    session.expectNoMessage(Duration.ofSeconds(3)); // and not sent any more
  }

  @Test
  void aDetachPekkoReportsAsDroppedIsSentAgainAtOnce() {
    DroppedDetaches.follow(testKit.system(), Duration.ofSeconds(1));
    TestProbe<ClientProxy.Command> session = testKit.createTestProbe(ClientProxy.Command.class);
    Attached attached = attachedTo(session.getRef(), SLOW_RESEND);

    attached.connection().tell(new Connection.StreamEnded());
    ClientProxy.Detach first = session.expectMessageClass(ClientProxy.Detach.class);
    session.expectNoMessage(Duration.ofSeconds(1)); // a late answer is no reason to send it again
    // What pekko publishes when a link's send queue to another node is full.
    // The operator is told how many were dropped, and pekko's reason.
    ClientProxy.Detach again =
        LoggingTestKit.warn("pekko dropped 1 Detach messages in 1 s, each sent again; by reason: {Due to overflow of send queue, size [3072]=1}")
            .expect(
                testKit.system(),
                () -> {
                  testKit
                      .system()
                      .eventStream()
                      .tell(
                          new EventStream.Publish<>(
                              new Dropped(first, "Due to overflow of send queue, size [3072]", org.apache.pekko.actor.ActorRef.noSender(), Adapter.toClassic(session.getRef()))));
                  return session.expectMessageClass(ClientProxy.Detach.class, Duration.ofSeconds(3));
                });
    assertEquals(1, again.generation());
    assertEquals(1.0, attached.detachResends("dropped"));
    assertEquals(0.0, attached.detachResends("unanswered"));

    again.replyTo().tell(new ToConnection.Released());
    testKit.createTestProbe().expectTerminated(attached.connection(), Duration.ofSeconds(3));
  }

  @Test
  void aDetachTheStoppedIncarnationCannotAnswerGoesToTheNextThroughSharding() {
    TestProbe<ClientProxy.Command> session = testKit.createTestProbe(ClientProxy.Command.class);
    Attached attached = attachedTo(session.getRef(), SLOW_RESEND);

    attached.connection().tell(new Connection.StreamEnded());
    session.expectMessageClass(ClientProxy.Detach.class);
    // The incarnation stops (its shard moved) before it answered.
    session.stop();
    ClientProxy.Detach viaSharding =
        (ClientProxy.Detach) sessionsBehindSharding.expectMessageClass(ToEntity.class, Duration.ofSeconds(3)).command();
    assertEquals(1, viaSharding.generation());
    assertEquals(1.0, attached.detachResends("session-moved"));

    viaSharding.replyTo().tell(new ToConnection.Released());
    testKit.createTestProbe().expectTerminated(attached.connection(), Duration.ofSeconds(3));
  }
}
