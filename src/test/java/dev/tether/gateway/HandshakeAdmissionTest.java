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
}
