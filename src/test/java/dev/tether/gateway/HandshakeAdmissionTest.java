package dev.tether.gateway;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

/** The turn-taking of session handshakes, on its own: places, arrival order, leaving. */
class HandshakeAdmissionTest {
  private static final ActorTestKit testKit = ActorTestKit.create();
  private static final Duration QUIET = Duration.ofMillis(200);

  @AfterAll
  static void stop() {
    testKit.shutdownTestKit();
  }

  /** A handshake in line: its probe hears Admitted when its turn comes. */
  private record Turn(TestProbe<Connection.Command> probe) implements HandshakeAdmission.Waiter {
    @Override
    public void admitted() {
      probe.ref().tell(Connection.Admitted.INSTANCE);
    }

    void expectAdmitted() {
      probe.expectMessage(Connection.Admitted.INSTANCE);
    }

    void expectNotAdmitted() {
      probe.expectNoMessage(QUIET);
    }
  }

  private static Turn connection() {
    return new Turn(testKit.createTestProbe(Connection.Command.class));
  }

  /** {@code count} connections entering in this order; the first {@code limit} are admitted at once. */
  private static List<Turn> line(HandshakeAdmission admission, int count) {
    List<Turn> line = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      Turn turn = connection();
      assertEquals(i < admission.maxInProgress(), admission.enter(turn, HandshakeAdmission.Step.UPGRADE), "entering #" + i);
      line.add(turn);
    }
    return line;
  }

  @Test
  void admitsUpToTheLimitThenTheWaitingInArrivalOrder() {
    HandshakeAdmission admission = new HandshakeAdmission(2);
    List<Turn> line = line(admission, 4);
    Turn a = line.get(0), b = line.get(1), c = line.get(2), d = line.get(3);
    assertEquals(2, admission.inProgress());
    assertEquals(2, admission.waiting());

    admission.leave(a);
    c.expectAdmitted(); // c came before d
    d.expectNotAdmitted();
    assertEquals(2, admission.inProgress());
    assertEquals(1, admission.waiting());

    admission.leave(b);
    d.expectAdmitted();
    admission.leave(c);
    admission.leave(d);
    assertEquals(0, admission.inProgress());
    assertEquals(0, admission.waiting());
  }

  @Test
  void aConnectionThatLeavesWhileWaitingGivesUpItsPlaceInLine() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    List<Turn> line = line(admission, 3);
    Turn a = line.get(0), b = line.get(1), c = line.get(2);

    admission.leave(b); // b's socket closed while it waited
    assertEquals(1, admission.waiting());
    admission.leave(a);
    c.expectAdmitted();
    b.expectNotAdmitted();
  }

  @Test
  void leavingTwiceFreesOnePlaceOnly() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    List<Turn> line = line(admission, 3);
    Turn a = line.get(0), b = line.get(1), c = line.get(2);

    // A connection gives its place back when welcomed and again when it stops: the second must
    // not admit one more handshake than the limit.
    admission.leave(a);
    admission.leave(a);
    b.expectAdmitted();
    c.expectNotAdmitted();
    assertEquals(1, admission.inProgress());
    assertEquals(1, admission.waiting());
  }

  @Test
  void aWaitingSessionHandshakeGoesBeforeWaitingUpgrades() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    List<Turn> line = line(admission, 3); // a in progress; two upgrades waiting
    Turn a = line.get(0), upgrade1 = line.get(1), upgrade2 = line.get(2);
    Turn session = connection();
    assertFalse(admission.enter(session, HandshakeAdmission.Step.SESSION));

    admission.leave(a);
    session.expectAdmitted(); // came last, but its client is already upgraded and counting down
    upgrade1.expectNotAdmitted();
    admission.leave(session);
    upgrade1.expectAdmitted(); // then the upgrades, in their order
    upgrade2.expectNotAdmitted();
  }

  @Test
  void aFreedPlaceGoesToTheFirstInLineNotToANewcomer() {
    HandshakeAdmission admission = new HandshakeAdmission(1);
    List<Turn> line = line(admission, 2);
    Turn a = line.get(0), b = line.get(1), c = connection();
    admission.leave(a); // b is admitted; the place is taken again at once
    b.expectAdmitted();
    assertFalse(admission.enter(c, HandshakeAdmission.Step.UPGRADE));
    assertTrue(admission.enter(b, HandshakeAdmission.Step.UPGRADE), "entering again while in progress keeps the place");
    assertEquals(1, admission.inProgress());
  }

  @Test
  void zeroMeansSixtyFourPerProcessorAndNegativeIsRefused() {
    assertEquals(64 * Runtime.getRuntime().availableProcessors(), new HandshakeAdmission(0).maxInProgress());
    assertThrows(IllegalArgumentException.class, () -> new HandshakeAdmission(-1));
  }

  // --- The limit that follows the node's pace ---------------------------------------------------

  /** A turn that only counts how often it was admitted after waiting (no actor needed). */
  private static final class Counted implements HandshakeAdmission.Waiter {
    int admittedLater;

    @Override
    public void admitted() {
      admittedLater++;
    }
  }

  private static final Duration TARGET = Duration.ofSeconds(1);

  private static final class FakeClock {
    long nanos = 1_000_000_000L;

    void advance(Duration d) {
      nanos += d.toNanos();
    }
  }

  private static List<Counted> fill(HandshakeAdmission admission, int count) {
    List<Counted> turns = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      Counted turn = new Counted();
      admission.enter(turn, HandshakeAdmission.Step.SESSION);
      turns.add(turn);
    }
    return turns;
  }

  /** A limit of 20 (minimum 4) after twenty turns of 2 s each, one per cut: down at the minimum. */
  private static HandshakeAdmission cutToTheMinimum(FakeClock clock) {
    HandshakeAdmission admission = new HandshakeAdmission(20, 4, TARGET, () -> clock.nanos);
    for (Counted turn : fill(admission, 20)) {
      clock.advance(Duration.ofSeconds(2));
      admission.leave(turn);
    }
    assertEquals(4, admission.limit());
    return admission;
  }

  @Test
  void slowTurnsCutTheLimitByATenthAtMostOncePerTargetTime() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = new HandshakeAdmission(20, 4, TARGET, () -> clock.nanos);
    List<Counted> working = fill(admission, 20);
    assertEquals(20, admission.limit());

    clock.advance(Duration.ofSeconds(3)); // every turn has taken three times the target
    admission.leave(working.get(0));
    assertEquals(18, admission.limit(), "20 cut by a tenth");
    admission.leave(working.get(1));
    assertEquals(18, admission.limit(), "one cut per target time: the first has not shown yet");

    // 18 in progress at a limit of 18: a newcomer waits even though fewer than 20 are worked on.
    Counted newcomer = new Counted();
    assertFalse(admission.enter(newcomer, HandshakeAdmission.Step.SESSION));

    clock.advance(TARGET);
    admission.leave(working.get(2));
    assertEquals(16, admission.limit());
    assertEquals(0, newcomer.admittedLater, "17 in progress is over the limit of 16: no place is freed");
    assertEquals(17, admission.inProgress());
  }

  @Test
  void theLimitNeverFallsBelowTheMinimum() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = cutToTheMinimum(clock);
    // With nothing in progress, four are admitted at once and the fifth waits.
    List<Counted> next = fill(admission, 5);
    assertEquals(4, admission.inProgress());
    assertEquals(1, admission.waiting());
    assertEquals(0, next.get(4).admittedLater);
  }

  @Test
  void fastTurnsRaiseACutLimitBackToTheMaximumWhileItsPlacesAreUsed() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = cutToTheMinimum(clock);

    // The node has caught up: turns take 10 ms, and the line always has someone waiting.
    List<Counted> line = new ArrayList<>(fill(admission, 40));
    int limitBefore = admission.limit();
    for (int i = 0; i < 400; i++) {
      clock.advance(Duration.ofMillis(10));
      admission.leave(line.remove(0));
      line.addAll(fill(admission, 1));
      assertTrue(admission.limit() >= limitBefore, "fast turns never cut the limit");
      assertTrue(admission.inProgress() <= admission.limit());
      limitBefore = admission.limit();
    }
    assertEquals(20, admission.limit(), "back at the maximum, and not above it");
    assertEquals(20, admission.inProgress(), "the raised places are used at once by those waiting");
  }

  @Test
  void fastTurnsOnAnIdleNodeDoNotRaiseTheLimit() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = new HandshakeAdmission(20, 4, TARGET, () -> clock.nanos);
    List<Counted> working = fill(admission, 20);
    clock.advance(Duration.ofSeconds(2));
    admission.leave(working.get(0));
    assertEquals(18, admission.limit());
    for (Counted turn : working.subList(1, 20)) admission.leave(turn); // (still within the cut's target time)
    for (int i = 0; i < 100; i++) {
      Counted alone = new Counted();
      assertTrue(admission.enter(alone, HandshakeAdmission.Step.SESSION));
      clock.advance(Duration.ofMillis(10));
      admission.leave(alone);
    }
    assertEquals(18, admission.limit(), "one handshake at a time says nothing about room for more");
  }

  @Test
  void withoutATargetTurnTimeTheLimitIsFixed() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = new HandshakeAdmission(10, 4, Duration.ZERO, () -> clock.nanos);
    List<Counted> working = fill(admission, 10);
    for (Counted turn : working) {
      clock.advance(Duration.ofSeconds(30));
      admission.leave(turn);
    }
    assertEquals(10, admission.limit());
    assertEquals(10, new HandshakeAdmission(10).limit());
  }

  @Test
  void aMaximumBelowTheMinimumCapsItAndBadBoundsAreRefused() {
    FakeClock clock = new FakeClock();
    HandshakeAdmission admission = new HandshakeAdmission(2, 8, TARGET, () -> clock.nanos);
    List<Counted> working = fill(admission, 2);
    clock.advance(Duration.ofSeconds(5));
    admission.leave(working.get(0));
    assertEquals(2, admission.limit(), "min-in-progress 8 with max-in-progress 2 means 2");
    assertThrows(IllegalArgumentException.class, () -> new HandshakeAdmission(2, 0, TARGET, () -> clock.nanos));
    assertThrows(IllegalArgumentException.class, () -> new HandshakeAdmission(2, 1, Duration.ofSeconds(-1), () -> clock.nanos));
  }
}
