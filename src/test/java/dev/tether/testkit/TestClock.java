package dev.tether.testkit;

import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.concurrent.atomic.AtomicLong;

/** A clock that stands still until the test moves it (together with ManualTime, say). */
public final class TestClock extends Clock {
  private final AtomicLong millis;
  private final ZoneId zone;

  public TestClock(Instant start) {
    this(new AtomicLong(start.toEpochMilli()), ZoneOffset.UTC);
  }

  private TestClock(AtomicLong millis, ZoneId zone) {
    this.millis = millis;
    this.zone = zone;
  }

  public void advance(Duration amount) {
    millis.addAndGet(amount.toMillis());
  }

  @Override
  public long millis() {
    return millis.get();
  }

  @Override
  public Instant instant() {
    return Instant.ofEpochMilli(millis.get());
  }

  @Override
  public ZoneId getZone() {
    return zone;
  }

  @Override
  public Clock withZone(ZoneId zone) {
    return new TestClock(millis, zone);
  }
}
