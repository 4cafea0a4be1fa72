package dev.tether.session;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.persistence.Database;
import dev.tether.session.ClientProxy.Ack;
import dev.tether.session.ClientProxy.Acked;
import dev.tether.session.ClientProxy.Attached;
import dev.tether.session.ClientProxy.Command;
import dev.tether.session.ClientProxy.Detach;
import dev.tether.session.ClientProxy.Detached;
import dev.tether.session.ClientProxy.Ended;
import dev.tether.session.ClientProxy.Enqueue;
import dev.tether.session.ClientProxy.EnqueueAll;
import dev.tether.session.ClientProxy.EnqueuedAll;
import dev.tether.session.ClientProxy.EnqueueResult;
import dev.tether.session.ClientProxy.Enqueued;
import dev.tether.session.ClientProxy.Event;
import dev.tether.session.ClientProxy.GetState;
import dev.tether.session.ClientProxy.Join;
import dev.tether.session.ClientProxy.JoinedRoom;
import dev.tether.session.ClientProxy.Kick;
import dev.tether.session.ClientProxy.KickResult;
import dev.tether.session.ClientProxy.Leave;
import dev.tether.session.ClientProxy.LeftRoom;
import dev.tether.session.ClientProxy.Logout;
import dev.tether.session.ClientProxy.MessageQueued;
import dev.tether.session.ClientProxy.NotDelivered;
import dev.tether.session.ClientProxy.Open;
import dev.tether.session.ClientProxy.Opened;
import dev.tether.session.ClientProxy.Resume;
import dev.tether.session.ClientProxy.SendUpstream;
import dev.tether.session.ClientProxy.SessionView;
import dev.tether.session.ClientProxy.State;
import dev.tether.session.ClientProxy.StateReply;
import dev.tether.session.ClientProxy.Status;
import dev.tether.session.ClientProxy.UpstreamAccepted;
import dev.tether.session.ClientProxy.UpstreamDelivered;
import dev.tether.session.ClientProxy.UpstreamRefused;
import dev.tether.session.ClientProxy.UserIndexed;
import dev.tether.telemetry.TetherMetrics;
import dev.tether.testkit.GatedExecutor;
import dev.tether.testkit.TestDatabase;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorRefResolver;
import org.apache.pekko.cluster.sharding.ShardRegion;
import org.apache.pekko.cluster.sharding.typed.GetShardRegionState;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityRef;
import org.apache.pekko.persistence.testkit.javadsl.EventSourcedBehaviorTestKit;
import org.apache.pekko.persistence.testkit.javadsl.EventSourcedBehaviorTestKit.CommandResult;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Every command of the session actor, one scenario per behaviour: the reply, the events and the
 * state, and what the connection hears. Rooms and user indexes are real {@link Membership}
 * entities behind Cluster Sharding; erasure writes to a real PostgreSQL.
 */
class ClientProxyTest {
  private static final Instant NOW = Instant.parse("2025-11-21T22:43:20Z");
  private static final long NOW_MS = NOW.toEpochMilli();
  private static final Clock CLOCK = Clock.fixed(NOW, ZoneOffset.UTC);
  private static final Duration GRACE = Duration.ofSeconds(120);
  private static final ClientProxySettings SETTINGS =
      new ClientProxySettings(GRACE, 100, 64 * 1024, 200, Duration.ofDays(7), Duration.ofSeconds(3));
  /** A tiny outbox: three messages or 1000 bytes (a 300-character body costs 364). */
  private static final ClientProxySettings SMALL_OUTBOX =
      new ClientProxySettings(GRACE, 3, 1000, 200, Duration.ofDays(7), Duration.ofSeconds(3));

  private static final String TOKEN_HASH = ClientProxy.hashToken("r_the-right-token");
  private static final String WRONG_HASH = ClientProxy.hashToken("r_a-wrong-token");
  private static final Duration WAIT = Duration.ofSeconds(10);
  private static final AtomicInteger counter = new AtomicInteger();

  private static ActorTestKit testKit;
  private static Database database;
  private static String dbUrl;
  private static Delivery delivery;
  private static ClusterSharding sharding;

  private final GatedExecutor storeExecutor = new GatedExecutor(ForkJoinPool.commonPool());
  private String sessionId;
  private String user;
  private TestProbe<ToConnection> connection;
  private NodeDepartures nodeDepartures;
  private EventSourcedBehaviorTestKit<Command, Event, State> session;

  @BeforeAll
  static void startCluster() throws Exception {
    dbUrl = TestDatabase.newDatabase();
    database = Database.connect(dbUrl, "postgres", "postgres");
    testKit = ActorTestKit.create("ClientProxyTest", SessionTestSystems.config(10));
    SessionTestSystems.joinSelf(testKit.system());
    Membership.init(testKit.system(), Duration.ofSeconds(30));
    delivery = new Delivery(testKit.system(), SETTINGS.askTimeout());
    // Other sessions (the peers of upstream messages) live behind sharding, as in production.
    ClientProxy.init(
        testKit.system(),
        new ClientProxy.Dependencies(
            SETTINGS, new SessionStore(database.dataSource(), ForkJoinPool.commonPool()), delivery, CLOCK));
    sharding = ClusterSharding.get(testKit.system());
    // Sharding answers once the cluster is up and the coordinator runs.
    sharding
        .entityRefFor(Membership.ENTITY_TYPE_KEY, "warm-up")
        .<Membership.Members>ask(Membership.GetMembers::new, Duration.ofSeconds(30))
        .toCompletableFuture()
        .get(40, TimeUnit.SECONDS);
  }

  @AfterAll
  static void stopCluster() {
    if (testKit != null) testKit.shutdownTestKit();
    if (database != null) database.close();
  }

  @BeforeEach
  void newSession() {
    int n = counter.incrementAndGet();
    sessionId = "s_unit_" + n;
    user = "alice-" + n;
    connection = testKit.createTestProbe(ToConnection.class);
    nodeDepartures = new NodeDepartures();
    session = sessionWith(SETTINGS);
  }

  @AfterEach
  void releaseStore() {
    storeExecutor.release();
  }

  // ---------------------------------------------------------------------------------------------
  // Open

  @Test
  void openPersistsOpenedAndAttachedAndWelcomesTheConnection() throws Exception {
    CommandResult<Command, Event, State> result =
        session.runCommand(new Open(user, TOKEN_HASH, connection.getRef()));

    assertEquals(
        List.of(new Opened(sessionId, user, TOKEN_HASH, NOW_MS), new Attached(1, false, false, NOW_MS)),
        result.events().subList(0, 2));
    State state = result.state();
    assertEquals(Status.ATTACHED, state.status());
    assertEquals(user, state.userId());
    assertEquals(TOKEN_HASH, state.tokenHash());
    assertEquals(1, state.generation());
    assertEquals(0, state.lastSeq());

    ToConnection.Welcome welcome = connection.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(
        new ToConnection.Welcome(
            welcome.session(), sessionId, user, 1, false, 0, 0, 0, 0, GRACE.toMillis(), List.of(), Map.of()),
        welcome);

    // The user index learns of the session, so user:<id> messages reach it.
    awaitJournalEndsWith(new UserIndexed());
    assertTrue(session.getState().userIndexed());
    assertEquals(List.of(sessionId), members(Membership.userId(user)));
    assertEquals(
        List.of(
            new Opened(sessionId, user, TOKEN_HASH, NOW_MS),
            new Attached(1, false, false, NOW_MS),
            new UserIndexed()),
        journal());
  }

  @Test
  void openOfALiveSessionIsIgnored() {
    open();
    TestProbe<ToConnection> intruder = testKit.createTestProbe(ToConnection.class);

    CommandResult<Command, Event, State> result =
        session.runCommand(new Open("mallory", WRONG_HASH, intruder.getRef()));

    assertTrue(result.hasNoEvents());
    assertEquals(user, result.state().userId());
    assertEquals(TOKEN_HASH, result.state().tokenHash());
    assertEquals(1, result.state().generation());
    intruder.expectNoMessage();
    connection.expectNoMessage();
  }

  @Test
  void abandonByTheOpenerEndsTheNewSessionAlsoWhenItsStopArrivedFirst() {
    open();
    // The connection's stop overtook its Abandon (the watch is direct, Abandon comes through
    // sharding): the session detached first.
    session.runCommand(new Detach(1, null));

    CommandResult<Command, Event, State> result = session.runCommand(new ClientProxy.Abandon(connection.getRef()));

    assertEquals(List.of(new Ended("abandoned", NOW_MS)), result.events());
    assertEquals(Status.ENDED, result.state().status());
  }

  @Test
  void abandonFromAnotherConnectionOrAfterAResumeIsIgnored() {
    open();
    TestProbe<ToConnection> stranger = testKit.createTestProbe(ToConnection.class);
    assertTrue(session.runCommand(new ClientProxy.Abandon(stranger.getRef())).hasNoEvents(), "not its opener");

    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, second.getRef()));
    second.expectMessageClass(ToConnection.Welcome.class);
    // Resumed: the client holds the token, whatever its first connection says late.
    CommandResult<Command, Event, State> late = session.runCommand(new ClientProxy.Abandon(connection.getRef()));
    assertTrue(late.hasNoEvents());
    assertEquals(Status.ATTACHED, late.state().status());
  }

  // ---------------------------------------------------------------------------------------------
  // Resume

  @Test
  void resumeWithTheRightTokenTakesOverAndReplaysUnackedMessagesInOrder() {
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}", "{\"n\":3}");
    expectDelivered(connection, 1, 2, 3);
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);

    CommandResult<Command, Event, State> result =
        session.runCommand(new Resume(user, TOKEN_HASH, 1, second.getRef()));

    assertEquals(List.of(new Acked(1), new Attached(2, true, true, NOW_MS)), result.events());
    assertEquals(new ToConnection.Kicked("taken-over"), connection.receiveMessage());
    ToConnection.Welcome welcome = second.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(
        new ToConnection.Welcome(
            welcome.session(), sessionId, user, 2, true, 2, 3, 0, 0, GRACE.toMillis(), List.of(), Map.of()),
        welcome);
    assertEquals(new ToConnection.Deliver(backendMessage(2, "{\"n\":2}")), second.receiveMessage());
    assertEquals(new ToConnection.Deliver(backendMessage(3, "{\"n\":3}")), second.receiveMessage());
    second.expectNoMessage();

    State state = result.state();
    assertEquals(Status.ATTACHED, state.status());
    assertEquals(2, state.generation());
    assertEquals(1, state.ackedSeq());
    assertEquals(List.of(2L, 3L), new ArrayList<>(state.outbox().keySet()));
    assertEquals(1, state.resumes());
    assertEquals(1, state.takeovers());

    // Live messages now go to the new connection only.
    enqueueBackend("{\"n\":4}");
    assertEquals(new ToConnection.Deliver(backendMessage(4, "{\"n\":4}")), second.receiveMessage());
    connection.expectNoMessage();
  }

  @Test
  void aHandshakeRepeatedByTheHoldingConnectionChangesNothing() {
    open();
    enqueueBackend("{\"n\":1}");
    expectDelivered(connection, 1);
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, second.getRef()));
    connection.expectMessageClass(ToConnection.Kicked.class);
    second.expectMessageClass(ToConnection.Welcome.class);
    second.expectMessageClass(ToConnection.Deliver.class);

    // The connection did not see an answer in time and re-sent its resume (and a hello's Open).
    CommandResult<Command, Event, State> again = session.runCommand(new Resume(user, TOKEN_HASH, 0, second.getRef()));
    assertEquals(List.of(), again.events(), "no takeover of itself");
    CommandResult<Command, Event, State> open = session.runCommand(new ClientProxy.Open(user, TOKEN_HASH, second.getRef()));
    assertEquals(List.of(), open.events());
    second.expectNoMessage();
    assertEquals(2, again.state().generation());
    assertEquals(1, again.state().takeovers());
  }

  /**
   * A connection re-sends its handshake every second until it hears a welcome. A copy sent just
   * before its welcome, arriving after another connection took the session over, must not take
   * the session back (and kick the newer one with 4002, after which SDKs do not reconnect).
   */
  @Test
  void aHandshakeRepeatedByAConnectionThatLostTheSessionIsIgnored() {
    open(); // the first connection (a hello)
    TestProbe<ToConnection> resumed = testKit.createTestProbe(ToConnection.class);
    TestProbe<ToConnection> newest = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, resumed.getRef()));
    resumed.expectMessageClass(ToConnection.Welcome.class);
    connection.expectMessageClass(ToConnection.Kicked.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, newest.getRef()));
    newest.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(new ToConnection.Kicked("taken-over"), resumed.receiveMessage());

    // Late copies from both former holders: the resume and the hello's Open.
    CommandResult<Command, Event, State> lateResume = session.runCommand(new Resume(user, TOKEN_HASH, 0, resumed.getRef()));
    CommandResult<Command, Event, State> lateOpen = session.runCommand(new Open(user, TOKEN_HASH, connection.getRef()));

    assertEquals(List.of(), lateResume.events());
    assertEquals(List.of(), lateOpen.events());
    newest.expectNoMessage();
    resumed.expectNoMessage();
    assertEquals(3, lateOpen.state().generation());
    assertEquals(2, lateOpen.state().takeovers());

    // A connection that lost the session by detaching is a former holder too.
    session.runCommand(new ClientProxy.Detach(3, null));
    assertEquals(List.of(), session.runCommand(new Resume(user, TOKEN_HASH, 0, newest.getRef())).events());
    newest.expectNoMessage();
    assertEquals(Status.DETACHED, session.getState().status());
  }

  /**
   * The Open re-sent by a hello's connection can reach a new incarnation of the session (the
   * first welcome died with its node) after messages were queued for it: they are replayed, and
   * the welcome says where the replay starts, as a resume's does, so the connection writes them.
   */
  @Test
  void aRepeatedOpenOnANewIncarnationReplaysAfterWhatTheWelcomeSays() {
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}", "{\"n\":3}");
    expectDelivered(connection, 1, 2, 3); // in the scenario these died with the node, unseen
    session.restart();

    session.runCommand(new Open(user, TOKEN_HASH, connection.getRef()));
    ToConnection.Welcome welcome = connection.expectMessageClass(ToConnection.Welcome.class);
    assertFalse(welcome.resumed());
    assertEquals(3, welcome.replay());
    assertEquals(0, welcome.replayAfter());
    for (long seq = 1; seq <= 3; seq++) {
      ToConnection.Deliver deliver = connection.expectMessageClass(ToConnection.Deliver.class);
      assertEquals(seq, deliver.message().seq());
      assertTrue(deliver.message().seq() > welcome.replayAfter(), "the connection writes what comes after replayAfter");
    }
  }

  @Test
  void resumeOfADetachedSessionIsNotATakeover() {
    ToConnection.Welcome first = open();
    String room = "lobby-" + sessionId;
    join(first.generation(), room);
    session.runCommand(
        new SendUpstream(first.generation(), 1, new Target(Target.Kind.USER, "nobody-" + sessionId), "{}", true));
    connection.expectMessage(new ToConnection.UpstreamConfirmed(1));
    awaitJournalEndsWith(new UpstreamDelivered(1));
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    expectDelivered(connection, 1, 2);
    session.runCommand(new Detach(first.generation(), null));
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);

    // No user named: the resume token alone authenticates.
    CommandResult<Command, Event, State> result =
        session.runCommand(new Resume(null, TOKEN_HASH, 0, second.getRef()));

    assertEquals(List.of(new Attached(2, true, false, NOW_MS)), result.events());
    ToConnection.Welcome welcome = second.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(
        new ToConnection.Welcome(
            welcome.session(), sessionId, user, 2, true, 2, 2, 1, 0, GRACE.toMillis(), List.of(room), Map.of()),
        welcome);
    expectDelivered(second, 1, 2);
    connection.expectNoMessage();
    assertEquals(Status.ATTACHED, result.state().status());
    assertEquals(0, result.state().graceDeadline());
    assertEquals(0, result.state().ackedSeq());
    assertEquals(1, result.state().resumes());
    assertEquals(0, result.state().takeovers());
  }

  @Test
  void resumeClaimingMoreThanExistsIsHeldToWhatExists() {
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    expectDelivered(connection, 1, 2);
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);

    CommandResult<Command, Event, State> result =
        session.runCommand(new Resume(user, TOKEN_HASH, 99, second.getRef()));

    assertEquals(List.of(new Acked(2), new Attached(2, true, true, NOW_MS)), result.events());
    ToConnection.Welcome welcome = second.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(0, welcome.replay());
    assertEquals(2, welcome.lastSeq());
    assertEquals(0, welcome.lost());
    second.expectNoMessage();
    assertTrue(result.state().outbox().isEmpty());
  }

  @Test
  void resumeWithAWrongTokenIsRejectedAndTouchesNothing() {
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    expectDelivered(connection, 1, 2);
    SessionView before = session.getState().view();
    TestProbe<ToConnection> attacker = testKit.createTestProbe(ToConnection.class);

    // lastSeq 2 would be an implicit ack, were the resume accepted.
    CommandResult<Command, Event, State> result =
        session.runCommand(new Resume(user, WRONG_HASH, 2, attacker.getRef()));

    assertTrue(result.hasNoEvents());
    assertEquals("invalid-token", ((ToConnection.ResumeRejected) attacker.receiveMessage()).reason());
    attacker.expectNoMessage();
    assertEquals(before, result.state().view());
    assertEquals(TOKEN_HASH, result.state().tokenHash());
    // The connection that holds the session is not disturbed and still gets live messages.
    enqueueBackend("{\"n\":3}");
    expectDelivered(connection, 3);
  }

  @Test
  void resumeByAnotherUserIsRejectedEvenWithTheRightToken() {
    open();
    SessionView before = session.getState().view();
    TestProbe<ToConnection> other = testKit.createTestProbe(ToConnection.class);

    CommandResult<Command, Event, State> result =
        session.runCommand(new Resume("mallory", TOKEN_HASH, 0, other.getRef()));

    assertTrue(result.hasNoEvents());
    assertEquals("invalid-token", ((ToConnection.ResumeRejected) other.receiveMessage()).reason());
    assertEquals(before, result.state().view());
    connection.expectNoMessage();
  }

  @Test
  void unknownSessionRejectsResumeAndStaysEmpty() {
    CommandResult<Command, Event, State> resumed =
        session.runCommand(new Resume(user, TOKEN_HASH, 0, connection.getRef()));

    assertTrue(resumed.hasNoEvents());
    assertEquals("unknown", ((ToConnection.ResumeRejected) connection.receiveMessage()).reason());
    assertEquals(Status.NEW, resumed.state().status());

    var enqueued = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null), r));
    assertEquals(new NotDelivered("unknown"), enqueued.reply());
    assertTrue(enqueued.hasNoEvents());

    var kicked = session.<KickResult>runCommand(Kick::new);
    assertEquals(new KickResult(false), kicked.reply());
    assertTrue(kicked.hasNoEvents());

    var state = session.<StateReply>runCommand(GetState::new);
    assertEquals(new StateReply(null), state.reply());

    for (Command ignored :
        List.of(
            new Detach(0, null),
            new Ack(0, 1),
            new SendUpstream(0, 1, new Target(Target.Kind.USER, "bob"), "{}", true),
            new Join(0, "lobby"),
            new Leave(0, "lobby"),
            new Logout(0))) {
      assertTrue(session.runCommand(ignored).hasNoEvents(), () -> "persisted on " + ignored);
    }
    assertEquals(Status.NEW, session.getState().status());
    connection.expectNoMessage();
  }

  // ---------------------------------------------------------------------------------------------
  // Detach

  @Test
  void detachOfTheCurrentConnectionStartsTheGracePeriodAndIsAnswered() {
    ToConnection.Welcome welcome = open();
    TestProbe<ToConnection> closedConnection = testKit.createTestProbe(ToConnection.class);

    CommandResult<Command, Event, State> result =
        session.runCommand(new Detach(welcome.generation(), closedConnection.getRef()));
    // The connection sends its Detach again until this answer.
    closedConnection.expectMessage(new ToConnection.Released());

    long deadline = NOW_MS + GRACE.toMillis();
    assertEquals(List.of(new Detached(deadline)), result.events());
    assertEquals(Status.DETACHED, result.state().status());
    assertEquals(deadline, result.state().graceDeadline());
    assertEquals(1, result.state().generation());
    var view = session.<StateReply>runCommand(GetState::new).reply().view();
    assertEquals("detached", view.state());
    assertEquals(deadline, view.graceDeadline());
  }

  @Test
  void detachOfAStaleConnectionIsIgnored() {
    ToConnection.Welcome first = open();
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, second.getRef()));
    second.expectMessageClass(ToConnection.Welcome.class);

    // The taken-over socket closes after the takeover: its Detach must not detach the new one,
    // and is answered at once, so that it stops re-sending it.
    TestProbe<ToConnection> takenOver = testKit.createTestProbe(ToConnection.class);
    CommandResult<Command, Event, State> stale = session.runCommand(new Detach(first.generation(), takenOver.getRef()));
    takenOver.expectMessage(new ToConnection.Released());

    assertTrue(stale.hasNoEvents());
    assertEquals(Status.ATTACHED, stale.state().status());
    assertEquals(2, stale.state().generation());
    enqueueBackend("{\"n\":1}");
    expectDelivered(second, 1);

    // A second Detach of the same connection changes nothing either (the deadline stays).
    assertEquals(List.of(new Detached(NOW_MS + GRACE.toMillis())), session.runCommand(new Detach(2, null)).events());
    assertTrue(session.runCommand(new Detach(2, null)).hasNoEvents());
  }

  @Test
  void aConnectionThatStopsWithoutDetachLeavesTheSessionDetached() {
    open();
    TestProbe<ToConnection> second = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, second.getRef()));
    second.expectMessageClass(ToConnection.Welcome.class);

    // The taken-over connection stopping means nothing: it no longer holds the session.
    connection.stop();
    enqueueBackend("{\"n\":1}");
    expectDelivered(second, 1);
    assertEquals(Status.ATTACHED, session.getState().status());

    // The holder stopping (a connection on this node is watched) starts the grace period.
    second.stop();
    awaitJournalEndsWith(new Detached(NOW_MS + GRACE.toMillis()));
    assertEquals(Status.DETACHED, session.getState().status());
    assertEquals(2, session.getState().generation());
  }

  @Test
  void aConnectionOnAnotherNodeIsFollowedThroughThatNodesDeparture() {
    // Refs to connections on a node this test's system never reaches (nothing listens there):
    // what the session is told is lost, as it would be to a dead node.
    Address otherNode = new Address("pekko", "tether", "127.0.0.1", 9);
    ActorRefResolver resolver = ActorRefResolver.get(testKit.system());
    ActorRef<ToConnection> first = resolver.resolveActorRef(otherNode + "/system/ws-1/$$a-adapter");
    ActorRef<ToConnection> second = resolver.resolveActorRef(otherNode + "/system/ws-2/$$a-adapter");

    session.runCommand(new Open(user, TOKEN_HASH, first));
    awaitJournalEndsWith(new UserIndexed());
    assertEquals(1, nodeDepartures.subscribed(), "no pekko watch: one subscription to the node's departure");

    // Its Detach ends the subscription; the next connection (same node) has its own.
    session.runCommand(new Detach(1, null));
    assertEquals(0, nodeDepartures.subscribed());
    session.runCommand(new Resume(user, TOKEN_HASH, 0, second));
    assertEquals(Status.ATTACHED, session.getState().status());
    assertEquals(1, nodeDepartures.subscribed());

    // The node leaves the cluster without a Detach: the session detaches, its grace starts.
    nodeDepartures.departed(otherNode);
    awaitJournalEndsWith(new Detached(NOW_MS + GRACE.toMillis()));
    assertEquals(Status.DETACHED, session.getState().status());
    assertEquals(2, session.getState().generation());
    assertEquals(0, nodeDepartures.subscribed());
  }

  @Test
  void detachedSessionKeepsQueuingForItsResume() {
    ToConnection.Welcome welcome = open();
    session.runCommand(new Detach(welcome.generation(), null));

    assertEquals(List.of(new Enqueued(1, false), new Enqueued(2, false)), enqueueBackend("{\"n\":1}", "{\"n\":2}"));
    connection.expectNoMessage();
    assertEquals(Status.DETACHED, session.getState().status());

    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef()));
    assertEquals(2, back.expectMessageClass(ToConnection.Welcome.class).replay());
    expectDelivered(back, 1, 2);
  }

  // ---------------------------------------------------------------------------------------------
  // Enqueue

  @Test
  void enqueueNumbersMessagesFromOneUpByOne() {
    open();

    for (int seq = 1; seq <= 3; seq++) {
      String data = "{\"n\":" + seq + "}";
      var result =
          session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend(data, null), r));
      assertEquals(new Enqueued(seq, false), result.reply());
      assertEquals(
          List.of(new MessageQueued(backendMessage(seq, data), null, 0, 0)), result.events());
      assertEquals(seq, result.state().lastSeq());
      assertEquals(new ToConnection.Deliver(backendMessage(seq, data)), connection.receiveMessage());
    }
    State state = session.getState();
    assertEquals(List.of(1L, 2L, 3L), new ArrayList<>(state.outbox().keySet()));
    assertEquals(3 * ("{\"n\":1}".length() + 64L), state.outboxBytes());
    assertEquals(0, state.lost());
  }

  @Test
  void outboxOverflowByCountDropsTheOldestAndCountsThemLost() {
    session = sessionWith(SMALL_OUTBOX);
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}", "{\"n\":3}");

    var fourth = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{\"n\":4}", null), r));
    assertEquals(new Enqueued(4, false), fourth.reply());
    assertEquals(List.of(new MessageQueued(backendMessage(4, "{\"n\":4}"), null, 0, 1)), fourth.events());
    var fifth = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{\"n\":5}", null), r));
    assertEquals(List.of(new MessageQueued(backendMessage(5, "{\"n\":5}"), null, 0, 2)), fifth.events());

    State state = fifth.state();
    assertEquals(List.of(3L, 4L, 5L), new ArrayList<>(state.outbox().keySet()));
    assertEquals(3 * ("{\"n\":1}".length() + 64L), state.outboxBytes());
    assertEquals(2, state.lost());
    assertEquals(5, state.lastSeq());

    // A client that saw nothing learns at its resume that two messages are gone.
    session.runCommand(new Detach(1, null));
    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef()));
    ToConnection.Welcome welcome = back.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(2, welcome.lost());
    assertEquals(3, welcome.replay());
    expectDelivered(back, 3, 4, 5);
  }

  @Test
  void enqueueAllPersistsTheRunTogetherAndEvictsAcrossIt() {
    session = sessionWith(SMALL_OUTBOX); // at most 3 messages
    ToConnection.Welcome welcome = open();
    String room = "lounge-" + sessionId;
    join(welcome.generation(), room);
    enqueueBackend("{\"n\":1}", "{\"n\":2}");

    var result =
        session.<EnqueuedAll>runCommand(
            r ->
                new EnqueueAll(
                    List.of(
                        Draft.fromBackend("{\"n\":3}", null, "k-3"),
                        Draft.fromBackend("{\"n\":4}", "not-my-room"),
                        Draft.fromBackend("{\"n\":5}", room),
                        Draft.fromBackend("{\"n\":3}", null, "k-3"),
                        Draft.fromBackend("{\"n\":6}", null)),
                    r));

    assertEquals(
        List.of(new Enqueued(3, false), new NotDelivered("not-member"), new Enqueued(4, false), new Enqueued(3, true), new Enqueued(5, false)),
        result.reply().outcomes().stream().map(EnqueuedAll.Outcome::result).toList());
    // One persist for the three new messages; each names the oldest it pushes out of an outbox of
    // three, counting the run's own earlier messages.
    assertEquals(
        List.of(
            new MessageQueued(new OutboxMessage(3, "{\"n\":3}", "backend", null, NOW_MS), "api:k-3", 1, 0),
            new MessageQueued(new OutboxMessage(4, "{\"n\":5}", "backend", room, NOW_MS), null, 0, 1),
            new MessageQueued(new OutboxMessage(5, "{\"n\":6}", "backend", null, NOW_MS), null, 0, 2)),
        result.events());
    assertEquals(List.of(3L, 4L, 5L), new ArrayList<>(result.state().outbox().keySet()));
    assertEquals(2, result.state().lost());
    expectDelivered(connection, 1, 2, 3, 4, 5);
  }

  @Test
  void writesTheClientDoesNotAcknowledgeMakeTheSessionTellTheConnectionHowFarItWrote() {
    Duration checkAfter = Duration.ofMillis(300);
    session =
        sessionWith(
            new ClientProxySettings(
                GRACE, 100, 64 * 1024, 200, Duration.ofDays(7), Duration.ofSeconds(3), Duration.ofSeconds(30), Duration.ZERO, checkAfter));
    ToConnection.Welcome welcome = open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    expectDelivered(connection, 1, 2);
    // Not acknowledged: a connection that wrote less would know the rest was dropped on the way.
    assertEquals(new ToConnection.WrittenUpTo(2), connection.receiveMessage(WAIT));

    // Acknowledged in time: nothing to check.
    enqueueBackend("{\"n\":3}");
    expectDelivered(connection, 3);
    session.runCommand(new Ack(welcome.generation(), 3));
    connection.expectNoMessage(checkAfter.multipliedBy(3));
  }

  @Test
  void onlyTheAdditionThatEvictsSaysSoInARun() {
    // Bounded by bytes (1000), not by count (10): a large message is pushed out by the run's
    // first addition, and the second fits without evicting anything.
    session = sessionWith(new ClientProxySettings(GRACE, 10, 1000, 200, Duration.ofDays(7), Duration.ofSeconds(3)));
    open();
    String large = "\"" + "x".repeat(834) + "\""; // 900 bytes in the outbox
    String medium = "\"" + "y".repeat(134) + "\""; // 200 bytes
    enqueueBackend(large);

    var result =
        session.<EnqueuedAll>runCommand(
            r -> new EnqueueAll(List.of(Draft.fromBackend(medium, null), Draft.fromBackend("{\"n\":3}", null)), r));

    assertEquals(
        List.of(
            new MessageQueued(backendMessage(2, medium), null, 0, 1),
            new MessageQueued(backendMessage(3, "{\"n\":3}"), null, 0, 0)),
        result.events());
    assertEquals(List.of(2L, 3L), new ArrayList<>(result.state().outbox().keySet()));
    assertEquals(1, result.state().lost());
  }

  @Test
  void enqueueAllForAnUnknownSessionAnswersEveryEntry() {
    var result =
        session.<EnqueuedAll>runCommand(
            r -> new EnqueueAll(List.of(Draft.fromBackend("1", null), Draft.fromBackend("2", null)), r));

    assertTrue(result.hasNoEvents());
    assertEquals(
        List.of(new NotDelivered("unknown"), new NotDelivered("unknown")),
        result.reply().outcomes().stream().map(EnqueuedAll.Outcome::result).toList());
  }

  @Test
  void outboxBytesAreUtf8BytesNotCharacters() {
    session = sessionWith(SMALL_OUTBOX);
    open();
    // 150 euro signs: 150 characters, 450 bytes in UTF-8 (514 in the outbox with the envelope).
    // Counted as characters two would fit in 1000; as bytes the second already overflows.
    String euros = "\u20ac".repeat(150);
    enqueueBackend(euros);
    assertEquals(514, session.getState().outboxBytes());

    var second = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend(euros, null), r));

    assertEquals(List.of(new MessageQueued(backendMessage(2, euros), null, 0, 1)), second.events());
    assertEquals(514, second.state().outboxBytes());
    assertEquals(1, second.state().lost());
  }

  @Test
  void utf8LengthMatchesTheEncoder() {
    for (String text :
        List.of("", "plain", "caf\u00e9", "\u20ac", "\ud83d\ude00 smile", "\u4f60\u597d", "lone \ud83d high", "lone \ude00 low")) {
      assertEquals(
          text.getBytes(java.nio.charset.StandardCharsets.UTF_8).length,
          OutboxMessage.utf8Length(text),
          text);
    }
  }

  @Test
  void outboxOverflowByBytesDropsTheOldest() {
    session = sessionWith(SMALL_OUTBOX);
    open();
    String big = "x".repeat(300); // 364 bytes in the outbox; three of them exceed 1000
    enqueueBackend(big, big);
    assertEquals(728, session.getState().outboxBytes());

    var third = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend(big, null), r));

    assertEquals(new Enqueued(3, false), third.reply());
    assertEquals(List.of(new MessageQueued(backendMessage(3, big), null, 0, 1)), third.events());
    assertEquals(List.of(2L, 3L), new ArrayList<>(third.state().outbox().keySet()));
    assertEquals(728, third.state().outboxBytes());
    assertEquals(1, third.state().lost());
  }

  @Test
  void aRetriedDeliveryFromTheSameOriginIsQueuedOnce() {
    open();
    Draft fromBob = new Draft("{\"hi\":1}", "user:bob", null, "s_bob", 7);

    var first = session.<EnqueueResult>runCommand(r -> new Enqueue(fromBob, r));
    assertEquals(new Enqueued(1, false), first.reply());
    assertEquals(
        List.of(new MessageQueued(new OutboxMessage(1, "{\"hi\":1}", "user:bob", null, NOW_MS), "s_bob", 7, 0)),
        first.events());
    connection.expectMessageClass(ToConnection.Deliver.class);

    // A retry is answered with the seq the original was queued as.
    var retry = session.<EnqueueResult>runCommand(r -> new Enqueue(fromBob, r));
    assertEquals(new Enqueued(1, true), retry.reply());
    assertTrue(retry.hasNoEvents());
    var older =
        session.<EnqueueResult>runCommand(r -> new Enqueue(new Draft("{}", "user:bob", null, "s_bob", 6), r));
    assertTrue(((Enqueued) older.reply()).duplicate());
    assertTrue(older.hasNoEvents());
    assertEquals(1, session.getState().lastSeq());
    connection.expectNoMessage();

    // The next message of that origin, and the same originSeq from another origin, are new.
    var next = session.<EnqueueResult>runCommand(r -> new Enqueue(new Draft("{}", "user:bob", null, "s_bob", 8), r));
    assertEquals(new Enqueued(2, false), next.reply());
    var otherOrigin =
        session.<EnqueueResult>runCommand(r -> new Enqueue(new Draft("{}", "user:carol", null, "s_carol", 7), r));
    assertEquals(new Enqueued(3, false), otherOrigin.reply());
  }

  @Test
  void aBackendRetryWithTheSameIdempotencyKeyIsQueuedOnce() {
    open();

    var first = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null, "key-1"), r));
    var retry = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null, "key-1"), r));
    var other = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null, "key-2"), r));

    assertEquals(new Enqueued(1, false), first.reply());
    assertEquals(new Enqueued(1, true), retry.reply());
    assertTrue(retry.hasNoEvents());
    assertEquals(new Enqueued(2, false), other.reply());
    expectDelivered(connection, 1, 2);
    connection.expectNoMessage();
  }

  @Test
  void aRoomMessageForANonMemberIsNotDelivered() {
    ToConnection.Welcome welcome = open();
    String room = "lobby-" + sessionId;

    var refused = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", room), r));

    assertEquals(new NotDelivered("not-member"), refused.reply());
    assertTrue(refused.hasNoEvents());
    assertEquals(0, refused.state().lastSeq());
    connection.expectNoMessage();

    join(welcome.generation(), room);
    var accepted = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", room), r));
    assertEquals(new Enqueued(1, false), accepted.reply());
    assertEquals(
        new ToConnection.Deliver(new OutboxMessage(1, "{}", "backend", room, NOW_MS)), connection.receiveMessage());
  }

  // ---------------------------------------------------------------------------------------------
  // Ack

  @Test
  void ackIsCumulativeAndFreesTheOutbox() {
    ToConnection.Welcome welcome = open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}", "{\"n\":3}");
    long gen = welcome.generation();

    CommandResult<Command, Event, State> acked = session.runCommand(new Ack(gen, 2));
    assertEquals(List.of(new Acked(2)), acked.events());
    assertEquals(2, acked.state().ackedSeq());
    assertEquals(List.of(3L), new ArrayList<>(acked.state().outbox().keySet()));
    assertEquals("{\"n\":3}".length() + 64L, acked.state().outboxBytes());

    assertTrue(session.runCommand(new Ack(gen, 1)).hasNoEvents(), "an older ack changes nothing");
    assertTrue(session.runCommand(new Ack(gen, 2)).hasNoEvents(), "a repeated ack changes nothing");

    // An ack beyond what exists is held to the last seq.
    CommandResult<Command, Event, State> all = session.runCommand(new Ack(gen, 50));
    assertEquals(List.of(new Acked(3)), all.events());
    assertTrue(all.state().outbox().isEmpty());
    assertEquals(0, all.state().outboxBytes());
    assertEquals(3, all.state().ackedSeq());
    assertEquals(0, all.state().lost());
  }

  @Test
  void ackFromAStaleGenerationIsIgnored() {
    open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}");

    CommandResult<Command, Event, State> result = session.runCommand(new Ack(7, 2));

    assertTrue(result.hasNoEvents());
    assertEquals(0, result.state().ackedSeq());
    assertEquals(2, result.state().outbox().size());
  }

  // ---------------------------------------------------------------------------------------------
  // SendUpstream

  @Test
  void sendUpstreamAcceptsTheNextCseqDurablyAndConfirms() {
    ToConnection.Welcome welcome = open();
    Target nobody = new Target(Target.Kind.USER, "nobody-" + sessionId);

    CommandResult<Command, Event, State> result =
        session.runCommand(new SendUpstream(welcome.generation(), 1, nobody, "{\"t\":1}", true));

    assertEquals(new UpstreamAccepted(1, nobody, "{\"t\":1}", true, NOW_MS), result.events().get(0));
    assertEquals(new ToConnection.UpstreamConfirmed(1), connection.receiveMessage());
    assertEquals(1, result.state().clientSeq());
    // Handed to its (zero) recipients, the message leaves the pending list.
    awaitJournalEndsWith(new UpstreamDelivered(1));
    assertTrue(session.getState().pendingUpstream().isEmpty());
  }

  @Test
  void aResentCseqIsConfirmedAgainAndNotAcceptedTwice() {
    ToConnection.Welcome welcome = open();
    Target nobody = new Target(Target.Kind.USER, "nobody-" + sessionId);
    session.runCommand(new SendUpstream(welcome.generation(), 1, nobody, "{}", true));
    connection.expectMessage(new ToConnection.UpstreamConfirmed(1));
    awaitJournalEndsWith(new UpstreamDelivered(1));

    CommandResult<Command, Event, State> resent =
        session.runCommand(new SendUpstream(welcome.generation(), 1, nobody, "{}", true));

    assertTrue(resent.hasNoEvents());
    assertEquals(new ToConnection.UpstreamConfirmed(1), connection.receiveMessage());
    assertEquals(1, resent.state().clientSeq());
    assertTrue(resent.state().pendingUpstream().isEmpty());
  }

  @Test
  void aCseqThatSkipsAheadIsRejectedOutOfOrder() {
    ToConnection.Welcome welcome = open();
    Target nobody = new Target(Target.Kind.USER, "nobody-" + sessionId);

    CommandResult<Command, Event, State> result =
        session.runCommand(new SendUpstream(welcome.generation(), 3, nobody, "{}", true));

    assertTrue(result.hasNoEvents());
    ToConnection.UpstreamRejected rejected = connection.expectMessageClass(ToConnection.UpstreamRejected.class);
    assertEquals(3, rejected.cseq());
    assertEquals("out-of-order", rejected.code());
    assertEquals(0, result.state().clientSeq());
  }

  @Test
  void sendingToARoomNotJoinedIsRefusedButUsesTheCseq() {
    ToConnection.Welcome welcome = open();
    Target room = new Target(Target.Kind.ROOM, "lobby-" + sessionId);

    CommandResult<Command, Event, State> result =
        session.runCommand(new SendUpstream(welcome.generation(), 1, room, "{}", true));

    assertEquals(List.of(new UpstreamRefused(1, "not-in-room")), result.events());
    ToConnection.UpstreamRejected rejected = connection.expectMessageClass(ToConnection.UpstreamRejected.class);
    assertEquals(1, rejected.cseq());
    assertEquals("not-in-room", rejected.code());
    assertEquals(1, result.state().clientSeq());
    assertTrue(result.state().pendingUpstream().isEmpty());
  }

  /**
   * A refusal uses up its cseq, so welcome.clientSeq covers it: were its error frame lost in a
   * drop, the client could take the send for accepted. The welcome lists recent refusals, and a
   * re-sent refused cseq is refused again, never confirmed. Both survive a restart.
   */
  @Test
  void aRefusedSendIsReportedAsRefusedAfterADropAndWhenSentAgain() {
    ToConnection.Welcome welcome = open();
    Target room = new Target(Target.Kind.ROOM, "lobby-" + sessionId);
    session.runCommand(new SendUpstream(welcome.generation(), 1, room, "{}", true));
    connection.expectMessageClass(ToConnection.UpstreamRejected.class);
    session.restart();

    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef()));
    ToConnection.Welcome resumed = back.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(1, resumed.clientSeq());
    assertEquals(Map.of(1L, "not-in-room"), resumed.refusedUpstream());

    CommandResult<Command, Event, State> again =
        session.runCommand(new SendUpstream(resumed.generation(), 1, room, "{}", true));
    assertTrue(again.hasNoEvents());
    assertEquals("not-in-room", back.expectMessageClass(ToConnection.UpstreamRejected.class).code());
  }

  @Test
  void sendUpstreamFromAStaleGenerationIsIgnored() {
    open();

    CommandResult<Command, Event, State> result =
        session.runCommand(new SendUpstream(9, 1, new Target(Target.Kind.USER, "bob"), "{}", true));

    assertTrue(result.hasNoEvents());
    assertEquals(0, result.state().clientSeq());
    connection.expectNoMessage();
  }

  @Test
  void upstreamToAnotherSessionIsQueuedThere() {
    ToConnection.Welcome welcome = open();
    Peer peer = openPeer();

    session.runCommand(
        new SendUpstream(welcome.generation(), 1, new Target(Target.Kind.SESSION, peer.id), "{\"hi\":1}", true));

    connection.expectMessage(new ToConnection.UpstreamConfirmed(1));
    ToConnection.Deliver delivered = peer.connection.expectMessageClass(ToConnection.Deliver.class, WAIT);
    assertEquals(new OutboxMessage(1, "{\"hi\":1}", "user:" + user, null, NOW_MS), delivered.message());
    awaitJournalEndsWith(new UpstreamDelivered(1));

    // Re-sent after a reconnect: confirmed, not delivered twice.
    session.runCommand(
        new SendUpstream(welcome.generation(), 1, new Target(Target.Kind.SESSION, peer.id), "{\"hi\":1}", true));
    connection.expectMessage(new ToConnection.UpstreamConfirmed(1));
    peer.connection.expectNoMessage(Duration.ofMillis(300));
    assertEquals(1, peerState(peer).lastSeq());
  }

  @Test
  void upstreamToARoomReachesTheOtherMembersAndNotTheSenderWithoutEcho() {
    ToConnection.Welcome welcome = open();
    String room = "lounge-" + sessionId;
    Peer peer = openPeer();
    peer.ref.tell(new Join(peer.generation, room));
    peer.connection.expectMessage(WAIT, new ToConnection.RoomJoined(room));
    join(welcome.generation(), room);

    session.runCommand(
        new SendUpstream(welcome.generation(), 1, new Target(Target.Kind.ROOM, room), "{\"hi\":2}", false));

    connection.expectMessage(new ToConnection.UpstreamConfirmed(1));
    ToConnection.Deliver delivered = peer.connection.expectMessageClass(ToConnection.Deliver.class, WAIT);
    assertEquals(new OutboxMessage(1, "{\"hi\":2}", "user:" + user, room, NOW_MS), delivered.message());
    awaitJournalEndsWith(new UpstreamDelivered(1));
    connection.expectNoMessage();
    assertEquals(0, session.getState().lastSeq());
  }

  // ---------------------------------------------------------------------------------------------
  // Join / Leave

  @Test
  void joinAddsTheRoomToTheSessionAndTheSessionToTheRoom() throws Exception {
    ToConnection.Welcome welcome = open();
    String room = "lobby-" + sessionId;

    session.runCommand(new Join(welcome.generation(), room));

    assertEquals(new ToConnection.RoomJoined(room), connection.receiveMessage(WAIT));
    assertEquals(List.of(room), List.copyOf(session.getState().rooms()));
    List<Object> journal = journal();
    assertEquals(new JoinedRoom(room), journal.get(journal.size() - 1));
    assertEquals(List.of(sessionId), members(Membership.roomId(room)));

    // Joining again is answered, and persists nothing.
    int eventsBefore = journal().size();
    session.runCommand(new Join(welcome.generation(), room));
    assertEquals(new ToConnection.RoomJoined(room), connection.receiveMessage(WAIT));
    assertEquals(eventsBefore, journal().size());

    // A stale connection cannot join.
    session.runCommand(new Join(welcome.generation() + 5, "elsewhere-" + sessionId));
    connection.expectNoMessage(Duration.ofMillis(300));
    assertEquals(List.of(room), List.copyOf(session.getState().rooms()));
    assertEquals(eventsBefore, journal().size());
  }

  /**
   * A client need not wait for {@code joined}: a send to the room and a leave that it sent right
   * after the join are handled after it, in its order, while the room confirms the member.
   */
  @Test
  void framesSentRightAfterAJoinWaitForIt() {
    Peer client = openPeer(); // a real entity behind sharding: the frames arrive back to back
    String room = "pipelined-" + sessionId;
    client.ref().tell(new Join(client.generation(), room));
    client.ref().tell(new SendUpstream(client.generation(), 1, new Target(Target.Kind.ROOM, room), "{\"t\":1}", false));
    client.ref().tell(new Leave(client.generation(), room));
    client.ref().tell(new Join(client.generation(), room));

    assertEquals(new ToConnection.RoomJoined(room), client.connection().receiveMessage(WAIT));
    assertEquals(new ToConnection.UpstreamConfirmed(1), client.connection().receiveMessage(WAIT));
    assertEquals(new ToConnection.RoomLeft(room), client.connection().receiveMessage(WAIT));
    assertEquals(new ToConnection.RoomJoined(room), client.connection().receiveMessage(WAIT));
    assertEquals(List.of(room), List.copyOf(peerState(client).rooms()));
  }

  @Test
  void leaveRemovesTheRoom() throws Exception {
    ToConnection.Welcome welcome = open();
    String room = "lobby-" + sessionId;
    join(welcome.generation(), room);

    CommandResult<Command, Event, State> left = session.runCommand(new Leave(welcome.generation(), room));

    assertEquals(List.of(new LeftRoom(room)), left.events());
    assertEquals(new ToConnection.RoomLeft(room), connection.receiveMessage());
    assertTrue(left.state().rooms().isEmpty());
    awaitAssert(WAIT, () -> assertEquals(List.of(), members(Membership.roomId(room))));
    var refused = session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", room), r));
    assertEquals(new NotDelivered("not-member"), refused.reply());

    // Leaving a room one is not in is refused.
    CommandResult<Command, Event, State> again = session.runCommand(new Leave(welcome.generation(), room));
    assertTrue(again.hasNoEvents());
    ToConnection.RoomRejected rejected = connection.expectMessageClass(ToConnection.RoomRejected.class);
    assertEquals(room, rejected.room());
    assertEquals("not-in-room", rejected.code());
  }

  // ---------------------------------------------------------------------------------------------
  // Logout

  @Test
  void logoutEndsTheSessionAtOnceAndErasesIt() throws Exception {
    ToConnection.Welcome welcome = open();
    String room = "lobby-" + sessionId;
    join(welcome.generation(), room);
    enqueueBackend("{\"n\":1}");
    expectDelivered(connection, 1);
    storeExecutor.hold();

    CommandResult<Command, Event, State> result = session.runCommand(new Logout(welcome.generation()));

    assertEquals(List.of(new Ended("logout", NOW_MS)), result.events());
    assertEquals(new ToConnection.LoggedOut(), connection.receiveMessage());
    State state = result.state();
    assertEquals(Status.ENDED, state.status());
    assertEquals("logout", state.endReason());
    assertTrue(state.outbox().isEmpty(), "no grace, outbox deleted");
    assertEquals(0, state.outboxBytes());
    assertEquals(1, storeExecutor.heldCount(), "erasure requested");

    // Ended: a resume learns so, nothing more is queued, nothing more can be kicked.
    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    assertTrue(session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef())).hasNoEvents());
    assertEquals("ended", ((ToConnection.ResumeRejected) back.receiveMessage()).reason());
    assertEquals(
        new NotDelivered("ended"),
        session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null), r)).reply());
    assertEquals(new KickResult(false), session.<KickResult>runCommand(Kick::new).reply());
    assertEquals("ended", session.<StateReply>runCommand(GetState::new).reply().view().state());

    // The room and the user index forget the session.
    awaitAssert(WAIT, () -> assertFalse(members(Membership.roomId(room)).contains(sessionId)));
    awaitAssert(WAIT, () -> assertFalse(members(Membership.userId(user)).contains(sessionId)));

    // Erased: a tombstone says why, and the session stops.
    storeExecutor.release();
    TestProbe<Object> watcher = testKit.createTestProbe();
    watcher.expectTerminated(welcome.session(), WAIT);
    assertEquals(1, tombstones(sessionId, "ended"));
  }

  /**
   * An ended session waits for the inspection read model before it is erased, but not for ever:
   * here nothing projects its events, and it is erased once the wait (1 s) is over.
   */
  @Test
  void anEndedSessionIsErasedAfterTheReadModelWaitEvenIfTheProjectionNeverCatchesUp() throws Exception {
    ClientProxySettings waiting =
        new ClientProxySettings(GRACE, 100, 64 * 1024, 200, Duration.ofDays(7), Duration.ofSeconds(3), Duration.ofSeconds(30), Duration.ofSeconds(1), Duration.ofSeconds(10));
    session = sessionWith(waiting, new SessionStore(database.dataSource(), storeExecutor, "a-projection-that-never-runs"));
    ToConnection.Welcome welcome = open();
    // A journal row in the database the read model has not passed (the test kit keeps its own journal).
    TestDatabase.update(
        dbUrl,
        "INSERT INTO event_journal(persistence_id, sequence_number, writer, event_ser_id, event_ser_manifest, event_payload) "
            + "VALUES (?, 1, 'test', 1, '', '\\x01')",
        ClientProxy.persistenceIdOf(sessionId));
    long ended = System.nanoTime();

    session.runCommand(new Logout(welcome.generation()));

    TestProbe<Object> watcher = testKit.createTestProbe();
    watcher.expectTerminated(welcome.session(), WAIT);
    long tookMillis = Duration.ofNanos(System.nanoTime() - ended).toMillis();
    assertTrue(tookMillis >= 900, "waited for the read model first: " + tookMillis + " ms");
    // Its looks at the read model space out (250 ms, 500 ms, 1 s, ...), but the last one comes at
    // the end of the wait: without that it would be 1.75 s.
    assertTrue(tookMillis < 1700, "erased when the wait was over: " + tookMillis + " ms");
    assertEquals(1, tombstones(sessionId, "ended"));
    assertEquals(
        0, TestDatabase.count(dbUrl, "SELECT count(*) FROM event_journal WHERE persistence_id = ?", ClientProxy.persistenceIdOf(sessionId)));
  }

  /** A bye sent right after a join, just before the socket closed, still ends the session. */
  @Test
  void aByeRightAfterAJoinIsNotOvertakenByTheDetach() {
    Peer client = openPeer();
    String room = "join-then-bye-" + sessionId;
    client.ref().tell(new Join(client.generation(), room));
    client.ref().tell(new Logout(client.generation()));
    client.ref().tell(new Detach(client.generation(), null));

    assertEquals(new ToConnection.RoomJoined(room), client.connection().receiveMessage(WAIT));
    assertEquals(new ToConnection.LoggedOut(), client.connection().receiveMessage(WAIT));
    assertEquals("ended", peerState(client).state());
  }

  @Test
  void logoutFromAStaleGenerationIsIgnored() {
    open();

    CommandResult<Command, Event, State> result = session.runCommand(new Logout(4));

    assertTrue(result.hasNoEvents());
    assertEquals(Status.ATTACHED, result.state().status());
    connection.expectNoMessage();
  }

  // ---------------------------------------------------------------------------------------------
  // Kick

  @Test
  void kickEndsTheSessionAndTellsTheConnection() throws Exception {
    ToConnection.Welcome welcome = open();
    storeExecutor.hold();

    var result = session.<KickResult>runCommand(Kick::new);

    assertEquals(new KickResult(true), result.reply());
    assertEquals(List.of(new Ended("kicked", NOW_MS)), result.events());
    assertEquals(Status.ENDED, result.state().status());
    assertEquals("kicked", result.state().endReason());
    assertEquals(new ToConnection.Kicked("kicked"), connection.receiveMessage());

    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef()));
    assertEquals("ended", ((ToConnection.ResumeRejected) back.receiveMessage()).reason());
    awaitAssert(WAIT, () -> assertFalse(members(Membership.userId(user)).contains(sessionId)));

    storeExecutor.release();
    testKit.createTestProbe().expectTerminated(welcome.session(), WAIT);
    assertEquals(1, tombstones(sessionId, "ended"));
  }

  @Test
  void kickOfADetachedSessionEndsItWithoutAConnection() {
    ToConnection.Welcome welcome = open();
    session.runCommand(new Detach(welcome.generation(), null));
    storeExecutor.hold();

    var result = session.<KickResult>runCommand(Kick::new);

    assertEquals(new KickResult(true), result.reply());
    assertEquals(List.of(new Ended("kicked", NOW_MS)), result.events());
    assertEquals(0, result.state().graceDeadline());
    connection.expectNoMessage();
  }

  // ---------------------------------------------------------------------------------------------
  // GetState

  @Test
  void getStateDescribesTheSession() {
    ToConnection.Welcome welcome = open();
    long gen = welcome.generation();
    String room = "lobby-" + sessionId;
    join(gen, room);
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    session.runCommand(new Ack(gen, 1));
    session.runCommand(new SendUpstream(gen, 1, new Target(Target.Kind.USER, "nobody-" + sessionId), "{}", true));
    awaitJournalEndsWith(new UpstreamDelivered(1));

    var attached = session.<StateReply>runCommand(GetState::new);

    assertTrue(attached.hasNoEvents());
    assertEquals(
        new SessionView(
            sessionId, user, "attached", 2, 1, 1, "{\"n\":2}".length() + 64L, 1, List.of(room), null, 0, 0, 0, 1,
            NOW_MS),
        attached.reply().view());

    session.runCommand(new Detach(gen, null));
    SessionView detached = session.<StateReply>runCommand(GetState::new).reply().view();
    assertEquals("detached", detached.state());
    assertEquals(NOW_MS + GRACE.toMillis(), detached.graceDeadline());
  }

  // ---------------------------------------------------------------------------------------------
  // Recovery

  @Test
  void recoversTheSameStateFromASnapshotAndTheEventsAfterIt() {
    session = sessionWith(new ClientProxySettings(GRACE, 100, 64 * 1024, 5, Duration.ofDays(7), Duration.ofSeconds(3)));
    ToConnection.Welcome welcome = open();
    long gen = welcome.generation();
    join(gen, "lobby-" + sessionId);
    session.<EnqueueResult>runCommand(r -> new Enqueue(new Draft("{}", "user:bob", null, "s_bob", 4), r));
    enqueueBackend("{\"n\":2}", "{\"n\":3}", "{\"n\":4}", "{\"n\":5}", "{\"n\":6}", "{\"n\":7}", "{\"n\":8}");
    session.runCommand(new Ack(gen, 2));
    session.runCommand(new SendUpstream(gen, 1, new Target(Target.Kind.USER, "nobody-" + sessionId), "{}", true));
    awaitJournalEndsWith(new UpstreamDelivered(1));
    session.runCommand(new Detach(gen, null)); // the 17th event: snapshots at 5, 10, 15
    // Events before the older of the two kept snapshots are deleted, Opened among them.
    awaitAssert(WAIT, () -> assertFalse(journal().stream().anyMatch(e -> e instanceof Opened)));
    assertFalse(session.snapshotTestKit().orElseThrow().persistedInStorage("ClientProxy|" + sessionId).isEmpty());
    State before = session.getState();
    SessionView view = before.view();
    var outbox = new java.util.TreeMap<>(before.outbox());
    var origins = new java.util.HashMap<>(before.origins);

    State after = session.restart().state();

    assertEquals(view, after.view());
    assertEquals(outbox, after.outbox());
    assertEquals(origins, after.origins);
    assertEquals(TOKEN_HASH, after.tokenHash());
    assertTrue(after.userIndexed());
    // ... and it still behaves: a duplicate is still recognised, the next seq follows on.
    var retry = session.<EnqueueResult>runCommand(r -> new Enqueue(new Draft("{}", "user:bob", null, "s_bob", 4), r));
    assertEquals(new Enqueued(1, true), retry.reply());
    assertEquals(new Enqueued(9, false), enqueueBackend("{\"n\":9}").get(0));
  }

  // ---------------------------------------------------------------------------------------------
  // GetReceipt

  @Test
  void getReceiptTellsWhatBecameOfAMessage() {
    session = sessionWith(SMALL_OUTBOX);
    assertEquals(new ClientProxy.Receipt("no-session"), receipt(1));
    ToConnection.Welcome welcome = open();
    enqueueBackend("{\"n\":1}", "{\"n\":2}");
    expectDelivered(connection, 1, 2);
    session.runCommand(new Ack(welcome.generation(), 1));
    session.runCommand(new Detach(welcome.generation(), null));
    // While detached: 3, 4 and 5 wait in the outbox, and push 2 out of it (three messages at most).
    enqueueBackend("{\"n\":3}", "{\"n\":4}", "{\"n\":5}");
    assertEquals(List.of(3L, 4L, 5L), new ArrayList<>(session.getState().outbox().keySet()));

    assertEquals(new ClientProxy.Receipt("unknown"), receipt(0));
    assertEquals(new ClientProxy.Receipt("acked"), receipt(1));
    assertEquals(new ClientProxy.Receipt("lost"), receipt(2));
    assertEquals(new ClientProxy.Receipt("queued"), receipt(3));
    assertEquals(new ClientProxy.Receipt("queued"), receipt(5));
    assertEquals(new ClientProxy.Receipt("unknown"), receipt(6));

    // Replayed to a resumed connection: handed to its socket.
    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    session.runCommand(new Resume(user, TOKEN_HASH, 1, back.getRef()));
    back.expectMessageClass(ToConnection.Welcome.class);
    expectDelivered(back, 3, 4, 5);
    assertEquals(new ClientProxy.Receipt("written"), receipt(3));
    assertEquals(new ClientProxy.Receipt("written"), receipt(5));

    storeExecutor.hold();
    session.runCommand(new Logout(2));
    assertEquals(new ClientProxy.Receipt("no-session"), receipt(3));
  }

  // ---------------------------------------------------------------------------------------------
  // Stray messages for sessions that do not exist. Sessions are remembered entities, which are
  // never passivated automatically: an entity a stray message starts must go away by itself, or
  // it runs (and is restarted after every node restart) for good.

  @Test
  void aStrayResumeLeavesNoEntityBehind() {
    Peer live = openPeer();
    String ghost = "s_ghost_" + counter.incrementAndGet();

    sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, ghost).tell(new Resume(null, TOKEN_HASH, 0, connection.getRef()));

    assertEquals("unknown", ((ToConnection.ResumeRejected) connection.receiveMessage(WAIT)).reason());
    awaitAssert(Duration.ofSeconds(3), () -> assertFalse(runningSessions().contains(ghost), "stray entity stopped"));
    assertTrue(runningSessions().contains(live.id), "live sessions keep running");
  }

  @Test
  void aStrayEnqueueLeavesNoEntityBehind() throws Exception {
    String ghost = "s_ghost_" + counter.incrementAndGet();

    EnqueueResult result = delivery.toSession(ghost, Draft.fromBackend("{}", null)).toCompletableFuture().get(10, TimeUnit.SECONDS);

    assertEquals(new NotDelivered("unknown"), result);
    awaitAssert(Duration.ofSeconds(3), () -> assertFalse(runningSessions().contains(ghost), "stray entity stopped"));
  }

  /** The backend API's questions about a session id it does not know (GET, DELETE, receipts). */
  @ParameterizedTest(name = "{0}")
  @ValueSource(strings = {"GetState", "Kick", "GetReceipt"})
  void aQuestionAboutAnUnknownSessionLeavesNoEntityBehind(String question) throws Exception {
    String ghost = "s_ghost_" + counter.incrementAndGet();
    EntityRef<Command> ref = sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, ghost);

    Object answer =
        switch (question) {
          case "GetState" -> ref.<StateReply>ask(GetState::new, WAIT).toCompletableFuture().get(15, TimeUnit.SECONDS);
          case "Kick" -> ref.<KickResult>ask(Kick::new, WAIT).toCompletableFuture().get(15, TimeUnit.SECONDS);
          default -> ref.<ClientProxy.Receipt>ask(r -> new ClientProxy.GetReceipt(1, r), WAIT)
              .toCompletableFuture()
              .get(15, TimeUnit.SECONDS);
        };

    assertEquals(
        switch (question) {
          case "GetState" -> new StateReply(null);
          case "Kick" -> new KickResult(false);
          default -> new ClientProxy.Receipt("no-session");
        },
        answer);
    awaitAssert(Duration.ofSeconds(3), () -> assertFalse(runningSessions().contains(ghost), "stray entity stopped"));
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  private EventSourcedBehaviorTestKit<Command, Event, State> sessionWith(ClientProxySettings settings) {
    return sessionWith(settings, new SessionStore(database.dataSource(), storeExecutor));
  }

  private EventSourcedBehaviorTestKit<Command, Event, State> sessionWith(ClientProxySettings settings, SessionStore store) {
    ClientProxy.Dependencies deps =
        new ClientProxy.Dependencies(settings, store, delivery, CLOCK, new TetherMetrics(), nodeDepartures);
    // The test kit would serialize the state from the test's thread after every command, while
    // the session's own follow-up messages (an upstream delivery's result) may be changing it:
    // the state is mutable and owned by the actor, so that check raced (a rare
    // ConcurrentModificationException). Commands, events and replies are still checked here;
    // the state's serialization is SerializationTest's job.
    return EventSourcedBehaviorTestKit.create(
        testKit.system(),
        ClientProxy.create(sessionId, deps, null),
        EventSourcedBehaviorTestKit.enabledSerializationSettings().withVerifyState(false));
  }

  /** Opens the session and waits until its side work (the user index) is done. */
  private ToConnection.Welcome open() {
    CommandResult<Command, Event, State> result = session.runCommand(new Open(user, TOKEN_HASH, connection.getRef()));
    assertEquals(
        List.of(new Opened(sessionId, user, TOKEN_HASH, NOW_MS), new Attached(1, false, false, NOW_MS)),
        result.events().subList(0, 2));
    ToConnection.Welcome welcome = connection.expectMessageClass(ToConnection.Welcome.class);
    awaitJournalEndsWith(new UserIndexed());
    assertTrue(session.getState().userIndexed());
    return welcome;
  }

  private void join(long generation, String room) {
    session.runCommand(new Join(generation, room));
    assertEquals(new ToConnection.RoomJoined(room), connection.receiveMessage(WAIT));
    awaitJournalEndsWith(new JoinedRoom(room));
    assertTrue(session.getState().rooms().contains(room));
  }

  private ClientProxy.Receipt receipt(long seq) {
    var result = session.<ClientProxy.Receipt>runCommand(r -> new ClientProxy.GetReceipt(seq, r));
    assertTrue(result.hasNoEvents());
    return result.reply();
  }

  private List<EnqueueResult> enqueueBackend(String... bodies) {
    List<EnqueueResult> replies = new ArrayList<>();
    for (String body : bodies) {
      replies.add(session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend(body, null), r)).reply());
    }
    return replies;
  }

  private static void expectDelivered(TestProbe<ToConnection> probe, long... seqs) {
    for (long seq : seqs) {
      ToConnection.Deliver deliver = probe.expectMessageClass(ToConnection.Deliver.class);
      assertEquals(seq, deliver.message().seq());
    }
  }

  private static OutboxMessage backendMessage(long seq, String data) {
    return new OutboxMessage(seq, data, "backend", null, NOW_MS);
  }

  /**
   * Waits until asynchronous work has been persisted. The journal, not the state, is what to wait
   * for: the state object shows an event before its write completes.
   */
  private void awaitJournalEndsWith(Event event) {
    awaitAssert(
        WAIT,
        () -> {
          List<Object> journal = journal();
          assertEquals(event, journal.get(journal.size() - 1));
        });
  }

  private List<Object> journal() {
    return session.persistenceTestKit().persistedInStorage("ClientProxy|" + sessionId);
  }

  private static List<String> members(String groupId) throws Exception {
    return sharding
        .entityRefFor(Membership.ENTITY_TYPE_KEY, groupId)
        .<Membership.Members>ask(Membership.GetMembers::new, WAIT)
        .toCompletableFuture()
        .get(WAIT.toSeconds() + 1, TimeUnit.SECONDS)
        .sessionIds();
  }

  private static long tombstones(String sessionId, String reason) {
    return TestDatabase.count(
        dbUrl, "SELECT count(*) FROM session_tombstones WHERE session_id = ? AND reason = ?", sessionId, reason);
  }

  /** The session entities this node's shard region is running. */
  private static Set<String> runningSessions() {
    TestProbe<ShardRegion.CurrentShardRegionState> probe = testKit.createTestProbe();
    sharding.shardState().tell(new GetShardRegionState(ClientProxy.ENTITY_TYPE_KEY, probe.getRef()));
    return probe.receiveMessage(WAIT).getShards().stream()
        .flatMap(shard -> shard.getEntityIds().stream())
        .collect(Collectors.toSet());
  }

  /** Another client's session, behind sharding as in production. */
  private record Peer(String id, EntityRef<Command> ref, TestProbe<ToConnection> connection, long generation) {}

  private Peer openPeer() {
    String id = "s_peer_" + counter.incrementAndGet();
    TestProbe<ToConnection> peerConnection = testKit.createTestProbe(ToConnection.class);
    EntityRef<Command> ref = sharding.entityRefFor(ClientProxy.ENTITY_TYPE_KEY, id);
    ref.tell(new Open("bob-" + id, TOKEN_HASH, peerConnection.getRef()));
    ToConnection.Welcome welcome = peerConnection.expectMessageClass(ToConnection.Welcome.class, WAIT);
    return new Peer(id, ref, peerConnection, welcome.generation());
  }

  private static SessionView peerState(Peer peer) {
    try {
      SessionView view =
          peer.ref
              .<StateReply>ask(GetState::new, WAIT)
              .toCompletableFuture()
              .get(WAIT.toSeconds() + 1, TimeUnit.SECONDS)
              .view();
      assertNotNull(view, "peer session exists");
      return view;
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }
}
