package dev.tether.session;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.TetherNode;
import dev.tether.session.ClientProxy.Command;
import dev.tether.session.ClientProxy.SessionView;
import dev.tether.testkit.TestDatabase;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityRef;
import org.apache.pekko.japi.function.Function;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Sessions outlive the node that holds them: a real PostgreSQL journal, a node stopped and a new
 * one started on the same database. The session is reached through Cluster Sharding, as the
 * gateway reaches it.
 */
class SessionRecoveryTest {
  private static final String TOKEN = "r_recovery-token";
  private static final Duration WAIT = Duration.ofSeconds(20);
  private static final AtomicInteger counter = new AtomicInteger();

  private final List<TetherNode> running = new ArrayList<>();

  @AfterEach
  void stopNodes() {
    for (TetherNode node : running) node.close();
    running.clear();
  }

  @Test
  void survivesRestart() throws Exception {
    String url = TestDatabase.newDatabase();
    String id = "s_survives_" + counter.incrementAndGet();
    TetherNode first = startNode(url, "60s");

    TestProbe<ToConnection> connection = TestProbe.create(ToConnection.class, first.system());
    session(first, id).tell(new ClientProxy.Open("alice", ClientProxy.hashToken(TOKEN), connection.getRef()));
    long gen = connection.expectMessageClass(ToConnection.Welcome.class, WAIT).generation();
    session(first, id).tell(new ClientProxy.Join(gen, "lobby"));
    connection.expectMessage(WAIT, new ToConnection.RoomJoined("lobby"));
    for (int n = 1; n <= 5; n++) {
      Draft draft = Draft.fromBackend("{\"n\":" + n + "}", n == 5 ? "lobby" : null);
      ClientProxy.EnqueueResult queued = ask(first, id, replyTo -> new ClientProxy.Enqueue(draft, replyTo));
      assertEquals(new ClientProxy.Enqueued(n, false), queued);
      assertEquals(n, connection.expectMessageClass(ToConnection.Deliver.class, WAIT).message().seq());
    }
    session(first, id).tell(new ClientProxy.SendUpstream(gen, 1, new Target(Target.Kind.USER, "nobody"), "{}", true));
    connection.expectMessage(WAIT, new ToConnection.UpstreamConfirmed(1));
    session(first, id).tell(new ClientProxy.Ack(gen, 2));
    session(first, id).tell(new ClientProxy.Detach(gen, null));
    SessionView before =
        awaitAssert(
            WAIT,
            () -> {
              SessionView view = state(first, id);
              assertEquals("detached", view.state());
              assertEquals(2, view.ackedSeq());
              return view;
            });
    assertNotNull(before.graceDeadline());
    assertEquals(5, before.lastSeq());
    assertEquals(3, before.outboxSize());
    assertEquals(1, before.clientSeq());
    assertEquals(List.of("lobby"), before.rooms());

    stop(first);
    TetherNode second = startNode(url, "60s");

    // Everything durable is back, the grace deadline included.
    assertEquals(before, state(second, id));

    // A wrong token is turned away and changes nothing (its lastSeq would otherwise ack).
    TestProbe<ToConnection> attacker = TestProbe.create(ToConnection.class, second.system());
    session(second, id).tell(new ClientProxy.Resume(null, ClientProxy.hashToken("r_wrong"), 5, attacker.getRef()));
    assertEquals("invalid-token", ((ToConnection.ResumeRejected) attacker.receiveMessage(WAIT)).reason());
    assertEquals(before, state(second, id));

    // The right token continues the session, replaying what the client has not processed.
    TestProbe<ToConnection> back = TestProbe.create(ToConnection.class, second.system());
    session(second, id).tell(new ClientProxy.Resume("alice", ClientProxy.hashToken(TOKEN), 2, back.getRef()));
    ToConnection.Welcome welcome = back.expectMessageClass(ToConnection.Welcome.class, WAIT);
    assertEquals(
        new ToConnection.Welcome(
            welcome.session(), id, "alice", 2, true, 3, 5, 1, 0, Duration.ofSeconds(60).toMillis(), List.of("lobby"), java.util.Map.of()),
        welcome);
    for (int n = 3; n <= 5; n++) {
      OutboxMessage message = back.expectMessageClass(ToConnection.Deliver.class, WAIT).message();
      assertEquals(n, message.seq());
      assertEquals("{\"n\":" + n + "}", message.data());
      assertEquals(n == 5 ? "lobby" : null, message.room());
    }
    back.expectNoMessage(Duration.ofMillis(300));
    assertEquals(List.of(id), members(second, Membership.roomId("lobby")));
    assertEquals("attached", state(second, id).state());
  }

  @Test
  void expiresAfterGraceOnANewNodeEvenIfNoClientComesBack() throws Exception {
    String url = TestDatabase.newDatabase();
    String id = "s_expires_" + counter.incrementAndGet();
    String persistenceId = "ClientProxy|" + id;
    TetherNode first = startNode(url, "5s");

    TestProbe<ToConnection> connection = TestProbe.create(ToConnection.class, first.system());
    session(first, id).tell(new ClientProxy.Open("bob", ClientProxy.hashToken(TOKEN), connection.getRef()));
    long gen = connection.expectMessageClass(ToConnection.Welcome.class, WAIT).generation();
    ClientProxy.EnqueueResult queued =
        ask(first, id, replyTo -> new ClientProxy.Enqueue(Draft.fromBackend("{}", null), replyTo));
    assertEquals(new ClientProxy.Enqueued(1, false), queued);
    session(first, id).tell(new ClientProxy.Detach(gen, null));
    long deadline =
        awaitAssert(
            WAIT,
            () -> {
              SessionView view = state(first, id);
              assertEquals("detached", view.state());
              return view.graceDeadline();
            });

    stop(first);
    // The session outlived its node: its journal is still there, nothing is erased yet.
    assertTrue(rows(url, "SELECT count(*) FROM event_journal WHERE persistence_id = ?", persistenceId) > 0);
    assertEquals(0, rows(url, "SELECT count(*) FROM session_tombstones WHERE session_id = ?", id));

    // Nobody sends the session anything: only remember-entities can bring it back to expire.
    startNode(url, "5s");

    awaitAssert(
        Duration.ofSeconds(30),
        () -> {
          assertEquals(1, rows(url, "SELECT count(*) FROM session_tombstones WHERE session_id = ? AND reason = 'expired'", id));
          assertEquals(0, rows(url, "SELECT count(*) FROM event_journal WHERE persistence_id = ?", persistenceId));
          assertEquals(0, rows(url, "SELECT count(*) FROM snapshot WHERE persistence_id = ?", persistenceId));
        });
    // ... and not before its deadline (the database clock and ours are the same machine's).
    assertEquals(
        1,
        rows(
            url,
            "SELECT count(*) FROM session_tombstones WHERE session_id = ? AND ended_at >= to_timestamp(? / 1000.0)",
            id,
            deadline - 100));
  }

  // ---------------------------------------------------------------------------------------------

  private TetherNode startNode(String url, String grace) {
    Map<String, Object> overrides = new HashMap<>(TestDatabase.overridesFor(url));
    overrides.put("tether.http.host", "127.0.0.1");
    overrides.put("tether.http.port", 0);
    overrides.put("pekko.remote.artery.canonical.hostname", "127.0.0.1");
    overrides.put("pekko.remote.artery.canonical.port", 0);
    overrides.put("pekko.coordinated-shutdown.run-by-jvm-shutdown-hook", "off");
    overrides.put("pekko.cluster.jmx.multi-mbeans-in-same-jvm", "on");
    overrides.put("tether.session.grace", grace);
    TetherNode node = TetherNode.start(overrides);
    running.add(node);
    return node;
  }

  private void stop(TetherNode node) {
    running.remove(node);
    node.close();
  }

  private static EntityRef<Command> session(TetherNode node, String id) {
    return ClusterSharding.get(node.system()).entityRefFor(ClientProxy.ENTITY_TYPE_KEY, id);
  }

  private static <R> R ask(TetherNode node, String id, Function<ActorRef<R>, Command> message) throws Exception {
    return session(node, id).ask(message, WAIT).toCompletableFuture().get(WAIT.toSeconds() + 5, TimeUnit.SECONDS);
  }

  private static SessionView state(TetherNode node, String id) throws Exception {
    SessionView view = SessionRecoveryTest.<ClientProxy.StateReply>ask(node, id, ClientProxy.GetState::new).view();
    assertNotNull(view, "session " + id + " exists");
    return view;
  }

  private static List<String> members(TetherNode node, String groupId) throws Exception {
    return ClusterSharding.get(node.system())
        .entityRefFor(Membership.ENTITY_TYPE_KEY, groupId)
        .<Membership.Members>ask(Membership.GetMembers::new, WAIT)
        .toCompletableFuture()
        .get(WAIT.toSeconds() + 5, TimeUnit.SECONDS)
        .sessionIds();
  }

  private static long rows(String url, String sql, Object... params) {
    return TestDatabase.count(url, sql, params);
  }
}
