package dev.tether.testkit;

import java.time.Duration;

/** Polls an assertion until it holds or the deadline passes (for effects that complete asynchronously). */
public final class Eventually {
  private Eventually() {}

  @FunctionalInterface
  public interface Check<T> {
    T get() throws Exception;
  }

  @FunctionalInterface
  public interface Assertion {
    void run() throws Exception;
  }

  public static <T> T awaitAssert(Duration max, Check<T> check) {
    long deadline = System.nanoTime() + max.toNanos();
    while (true) {
      try {
        return check.get();
      } catch (AssertionError | Exception e) {
        if (System.nanoTime() - deadline > 0) {
          throw new AssertionError("Not satisfied within " + max + ": " + e.getMessage(), e);
        }
      }
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new AssertionError("Interrupted while waiting", e);
      }
    }
  }

  /** Lets time pass (for checks that something does *not* happen during it). */
  public static void pause(Duration duration) {
    try {
      Thread.sleep(duration.toMillis());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("Interrupted while pausing", e);
    }
  }

  public static void awaitAssert(Duration max, Assertion assertion) {
    awaitAssert(
        max,
        () -> {
          assertion.run();
          return null;
        });
  }
}
