package dev.tether.testkit;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;

/**
 * An executor that can hold its tasks back: a test closes the gate to look at a session between
 * "ended" and "erased", then opens it. The held work is real (it runs against the real database),
 * only its start is delayed.
 */
public final class GatedExecutor implements Executor {
  private final Executor delegate;
  private final List<Runnable> held = new ArrayList<>();
  private boolean open = true;

  public GatedExecutor(Executor delegate) {
    this.delegate = delegate;
  }

  @Override
  public void execute(Runnable task) {
    synchronized (this) {
      if (!open) {
        held.add(task);
        return;
      }
    }
    delegate.execute(task);
  }

  /** From now on tasks wait until {@link #release()}. */
  public synchronized void hold() {
    open = false;
  }

  /** Runs every held task and lets later ones through at once. */
  public void release() {
    List<Runnable> toRun;
    synchronized (this) {
      open = true;
      toRun = new ArrayList<>(held);
      held.clear();
    }
    toRun.forEach(delegate::execute);
  }

  /** How many tasks are waiting for the gate. */
  public synchronized int heldCount() {
    return held.size();
  }
}
