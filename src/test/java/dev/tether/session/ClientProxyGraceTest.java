package dev.tether.session;

import static dev.tether.testkit.Eventually.awaitAssert;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tether.persistence.Database;
import dev.tether.session.ClientProxy.Attached;
import dev.tether.session.ClientProxy.Command;
import dev.tether.session.ClientProxy.Detach;
import dev.tether.session.ClientProxy.Detached;
import dev.tether.session.ClientProxy.Ended;
import dev.tether.session.ClientProxy.Enqueue;
import dev.tether.session.ClientProxy.EnqueueResult;
import dev.tether.session.ClientProxy.Enqueued;
import dev.tether.session.ClientProxy.Event;
import dev.tether.session.ClientProxy.NotDelivered;
import dev.tether.session.ClientProxy.Open;
import dev.tether.session.ClientProxy.Resume;
import dev.tether.session.ClientProxy.State;
import dev.tether.session.ClientProxy.Status;
import dev.tether.session.ClientProxy.UserIndexed;
import dev.tether.testkit.GatedExecutor;
import dev.tether.testkit.TestClock;
import dev.tether.testkit.TestDatabase;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.ManualTime;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.persistence.testkit.javadsl.EventSourcedBehaviorTestKit;
import org.apache.pekko.persistence.testkit.javadsl.EventSourcedBehaviorTestKit.CommandResult;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The grace period under manual time: a detached session lives exactly {@code grace}, a resume
 * within it cancels the expiry, and a restarted session keeps its deadline.
 */
class ClientProxyGraceTest {
  private static final Duration GRACE = Duration.ofSeconds(30);
  private static final ClientProxySettings SETTINGS =
      new ClientProxySettings(GRACE, 100, 64 * 1024, 200, Duration.ofDays(7), Duration.ofSeconds(3));
  private static final String TOKEN_HASH = ClientProxy.hashToken("r_grace-token");
  private static final Duration WAIT = Duration.ofSeconds(10);
  private static final AtomicInteger counter = new AtomicInteger();

  private static ActorTestKit testKit;
  private static ManualTime manualTime;
  private static Database database;
  private static String dbUrl;
  private static Delivery delivery;

  private final TestClock clock = new TestClock(Instant.parse("2025-11-21T22:43:20Z"));
  private final GatedExecutor storeExecutor = new GatedExecutor(ForkJoinPool.commonPool());
  private String sessionId;
  private String user;
  private TestProbe<ToConnection> connection;
  private EventSourcedBehaviorTestKit<Command, Event, State> session;

  @BeforeAll
  static void startCluster() {
    dbUrl = TestDatabase.newDatabase();
    database = Database.connect(dbUrl, "postgres", "postgres");
    // One shard: once it is allocated, sharding needs no more timer ticks from the manual clock.
    testKit = ActorTestKit.create("ClientProxyGraceTest", ManualTime.config().withFallback(SessionTestSystems.config(1)));
    manualTime = ManualTime.get(testKit.system());
    SessionTestSystems.joinSelf(testKit.system());
    Membership.init(testKit.system(), Duration.ofSeconds(30));
    delivery = new Delivery(testKit.system(), SETTINGS.askTimeout());
    warmUpSharding();
  }

  /** Lets the cluster and the shard coordinator run their first ticks (their timers are manual too). */
  private static void warmUpSharding() {
    TestProbe<Membership.Members> probe = testKit.createTestProbe();
    ClusterSharding.get(testKit.system())
        .entityRefFor(Membership.ENTITY_TYPE_KEY, "warm-up")
        .tell(new Membership.GetMembers(probe.getRef()));
    for (int attempt = 0; ; attempt++) {
      manualTime.timePasses(Duration.ofMillis(200));
      try {
        probe.receiveMessage(Duration.ofMillis(100));
        return;
      } catch (AssertionError notYet) {
        if (attempt > 300) throw notYet;
      }
    }
  }

  @AfterAll
  static void stopCluster() throws Exception {
    if (testKit != null) {
      // Coordinated shutdown waits on timers, which only the manual clock moves.
      testKit.system().terminate();
      var terminated = testKit.system().getWhenTerminated().toCompletableFuture();
      for (int attempt = 0; !terminated.isDone() && attempt < 200; attempt++) {
        manualTime.timePasses(Duration.ofMillis(500));
        try {
          terminated.get(50, TimeUnit.MILLISECONDS);
        } catch (TimeoutException notYet) {
          // keep the clock moving
        }
      }
      assertTrue(terminated.isDone(), "actor system terminated");
    }
    if (database != null) database.close();
  }

  @BeforeEach
  void newSession() {
    int n = counter.incrementAndGet();
    sessionId = "s_grace_" + n;
    user = "gina-" + n;
    connection = testKit.createTestProbe(ToConnection.class);
    SessionStore store = new SessionStore(database.dataSource(), storeExecutor);
    session =
        EventSourcedBehaviorTestKit.create(
            testKit.system(),
            ClientProxy.create(sessionId, new ClientProxy.Dependencies(SETTINGS, store, delivery, clock), null));
  }

  @AfterEach
  void releaseStore() {
    storeExecutor.release();
  }

  @Test
  void expiresAfterGrace() {
    ToConnection.Welcome welcome = open();
    long deadline = clock.millis() + GRACE.toMillis();

    CommandResult<Command, Event, State> detached = session.runCommand(new Detach(welcome.generation(), null));

    assertEquals(List.of(new Detached(deadline)), detached.events());
    assertEquals(Status.DETACHED, detached.state().status());
    assertEquals(deadline, detached.state().graceDeadline());

    // Just short of the grace: still there, still queuing.
    timePasses(GRACE.minusMillis(1));
    assertEquals(Status.DETACHED, session.getState().status());
    assertEquals(
        new Enqueued(1, false),
        session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null), r)).reply());

    storeExecutor.hold();
    timePasses(Duration.ofMillis(2));

    State state = session.getState();
    assertEquals(Status.ENDED, state.status());
    assertEquals("expired", state.endReason());
    assertTrue(state.outbox().isEmpty());
    assertEquals(new Ended("expired", clock.millis()), lastEvent());
    connection.expectNoMessage();

    // A resume now learns that the grace ran out, and changes nothing.
    TestProbe<ToConnection> late = testKit.createTestProbe(ToConnection.class);
    CommandResult<Command, Event, State> resumed =
        session.runCommand(new Resume(user, TOKEN_HASH, 0, late.getRef()));
    assertTrue(resumed.hasNoEvents());
    assertEquals("expired", ((ToConnection.ResumeRejected) late.receiveMessage()).reason());
    assertEquals(
        new NotDelivered("ended"),
        session.<EnqueueResult>runCommand(r -> new Enqueue(Draft.fromBackend("{}", null), r)).reply());

    // Its data goes, a tombstone stays.
    assertEquals(1, storeExecutor.heldCount());
    storeExecutor.release();
    testKit.createTestProbe().expectTerminated(welcome.session(), WAIT);
    assertEquals(
        1,
        TestDatabase.count(
            dbUrl,
            "SELECT count(*) FROM session_tombstones WHERE session_id = ? AND reason = 'expired'",
            sessionId));
  }

  @Test
  void resumeWithinGraceCancelsTheExpiry() {
    ToConnection.Welcome welcome = open();
    session.runCommand(new Detach(welcome.generation(), null));
    timePasses(GRACE.dividedBy(2));

    TestProbe<ToConnection> back = testKit.createTestProbe(ToConnection.class);
    CommandResult<Command, Event, State> resumed = session.runCommand(new Resume(user, TOKEN_HASH, 0, back.getRef()));
    assertEquals(List.of(new Attached(2, true, false, clock.millis())), resumed.events());
    assertTrue(back.expectMessageClass(ToConnection.Welcome.class).resumed());

    timePasses(GRACE.multipliedBy(3));

    State state = session.getState();
    assertEquals(Status.ATTACHED, state.status());
    assertEquals(0, state.graceDeadline());
    assertFalse(journal().stream().anyMatch(e -> e instanceof Ended), "no Ended event");
    back.expectNoMessage();

    // A later drop starts a fresh, full grace period.
    long deadline = clock.millis() + GRACE.toMillis();
    assertEquals(List.of(new Detached(deadline)), session.runCommand(new Detach(2, null)).events());
    timePasses(GRACE.minusMillis(1));
    assertEquals(Status.DETACHED, session.getState().status());
    storeExecutor.hold();
    timePasses(Duration.ofMillis(1));
    assertEquals(Status.ENDED, session.getState().status());
    assertEquals(new Ended("expired", deadline), lastEvent());
  }

  @Test
  void restartedSessionKeepsItsDeadline() {
    ToConnection.Welcome welcome = open();
    long deadline = clock.millis() + GRACE.toMillis();
    session.runCommand(new Detach(welcome.generation(), null));
    timePasses(Duration.ofSeconds(20));

    // A new incarnation (a node died, the shard moved) recovers the deadline from the journal.
    State recovered = session.restart().state();
    assertEquals(Status.DETACHED, recovered.status());
    assertEquals(deadline, recovered.graceDeadline());

    timePasses(Duration.ofSeconds(10).minusMillis(1));
    assertEquals(Status.DETACHED, session.getState().status());
    storeExecutor.hold();
    timePasses(Duration.ofMillis(1));
    assertEquals(Status.ENDED, session.getState().status());
    assertEquals("expired", session.getState().endReason());
  }

  @Test
  void restartWhileAttachedDetachesAndStartsTheGrace() {
    open();
    timePasses(Duration.ofSeconds(5));

    // The connection's node is gone with the old incarnation: nobody holds the session now.
    session.restart();
    long deadline = clock.millis() + GRACE.toMillis();
    awaitAssert(WAIT, () -> assertEquals(new Detached(deadline), lastEvent()));
    assertEquals(Status.DETACHED, session.getState().status());
    assertEquals(deadline, session.getState().graceDeadline());

    timePasses(GRACE.minusMillis(1));
    assertEquals(Status.DETACHED, session.getState().status());
    storeExecutor.hold();
    timePasses(Duration.ofMillis(1));
    assertEquals(Status.ENDED, session.getState().status());
  }

  // ---------------------------------------------------------------------------------------------

  private ToConnection.Welcome open() {
    CommandResult<Command, Event, State> result = session.runCommand(new Open(user, TOKEN_HASH, connection.getRef()));
    assertEquals(Status.ATTACHED, result.state().status());
    ToConnection.Welcome welcome = connection.expectMessageClass(ToConnection.Welcome.class);
    assertEquals(GRACE.toMillis(), welcome.graceMillis());
    // The user index is written before any time passes, so no ask timeout can fire meanwhile.
    awaitAssert(WAIT, () -> assertEquals(new UserIndexed(), lastEvent()));
    return welcome;
  }

  /** Moves the session's clock and its timers together. */
  private void timePasses(Duration amount) {
    clock.advance(amount);
    manualTime.timePasses(amount);
  }

  private Object lastEvent() {
    List<Object> journal = journal();
    return journal.get(journal.size() - 1);
  }

  private List<Object> journal() {
    return session.persistenceTestKit().persistedInStorage("ClientProxy|" + sessionId);
  }
}
