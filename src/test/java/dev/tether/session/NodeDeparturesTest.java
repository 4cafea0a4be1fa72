package dev.tether.session;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.actor.Address;
import org.junit.jupiter.api.Test;

/** The node-local registry that stands in for a remote death watch per connection. */
class NodeDeparturesTest {
  private static final Address NODE_A = new Address("pekko", "tether", "10.0.0.1", 25520);
  private static final Address NODE_B = new Address("pekko", "tether", "10.0.0.2", 25520);

  private final NodeDepartures departures = new NodeDepartures();

  @Test
  void aDepartureTellsEachSubscriberOfThatNodeOnce() {
    AtomicInteger onA = new AtomicInteger();
    AtomicInteger onB = new AtomicInteger();
    departures.subscribe(NODE_A, onA::incrementAndGet);
    departures.subscribe(NODE_A, onA::incrementAndGet);
    departures.subscribe(NODE_B, onB::incrementAndGet);
    assertEquals(3, departures.subscribed());

    departures.departed(NODE_A);
    departures.departed(NODE_A); // the same event twice tells nobody twice

    assertEquals(2, onA.get());
    assertEquals(0, onB.get());
    assertEquals(1, departures.subscribed());
  }

  @Test
  void aCancelledSubscriptionIsNotTold() {
    AtomicInteger told = new AtomicInteger();
    NodeDepartures.Subscription subscription = departures.subscribe(NODE_A, told::incrementAndGet);
    departures.cancel(subscription);
    departures.cancel(subscription); // cancelling twice is harmless

    departures.departed(NODE_A);

    assertEquals(0, told.get());
    assertEquals(0, departures.subscribed());
  }

  @Test
  void subscribingToANodeThatAlreadyLeftIsAnsweredAtOnceUntilItJoinsAgain() {
    departures.departed(NODE_A);
    AtomicInteger told = new AtomicInteger();

    departures.subscribe(NODE_A, told::incrementAndGet);
    assertEquals(1, told.get());
    assertEquals(0, departures.subscribed());

    // Restarted at the same address: its new connections are followed again.
    departures.joined(NODE_A);
    departures.subscribe(NODE_A, told::incrementAndGet);
    assertEquals(1, told.get());
    assertEquals(1, departures.subscribed());
  }
}
