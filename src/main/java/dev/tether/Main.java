package dev.tether;

import java.util.Map;
import org.apache.pekko.actor.CoordinatedShutdown;

/** Starts one Tether node with application.conf and the TETHER_* environment. */
public final class Main {
  private Main() {}

  public static void main(String[] args) {
    // Before any logger exists: pick the log format (logback.xml reads tether.log.format).
    String format = System.getenv().getOrDefault("TETHER_LOG_FORMAT", "text");
    System.setProperty("tether.log.format", format.trim().equalsIgnoreCase("json") ? "json" : "text");

    TetherNode node = TetherNode.start(Map.of());
    stopOnSignal(node, "TERM");
    stopOnSignal(node, "INT");
    node.system().getWhenTerminated().toCompletableFuture().join();
    node.close(); // closes the database before the JVM's exit hooks run (the embedded one has a hook)
    // Stopped for any other reason (the split brain resolver downed this node, it was removed
    // from the cluster): exit non-zero so a supervisor (systemd, Kubernetes) restarts it.
    boolean asked =
        CoordinatedShutdown.get(node.system())
            .getShutdownReason()
            .map(reason -> reason instanceof SignalReason || reason instanceof CoordinatedShutdown.JvmExitReason$)
            .orElse(false);
    System.exit(asked ? 0 : 1);
  }

  /** Why the node stopped: SIGTERM or SIGINT (Ctrl-C); logged as "signal SIGTERM". */
  private record SignalReason(String signal) implements CoordinatedShutdown.Reason {
    @Override
    public String toString() {
      return "signal SIG" + signal;
    }
  }

  /**
   * SIGTERM and Ctrl-C run the whole CoordinatedShutdown (unbind, close the sockets, let the
   * sessions persist that they are detached, hand off the shards, leave the cluster, close the
   * database) before the JVM starts exiting. Left to the JVM, the signal would run every shutdown
   * hook at once, and the embedded PostgreSQL's own hook would stop the database while sessions
   * were still writing (seen in the benchmarks: hundreds of failed persists on each stop).
   */
  private static void stopOnSignal(TetherNode node, String signal) {
    try {
      sun.misc.Signal.handle(
          new sun.misc.Signal(signal), s -> CoordinatedShutdown.get(node.system()).runAll(new SignalReason(signal)));
    } catch (IllegalArgumentException e) {
      // The platform reserves this signal (e.g. under some debuggers): the JVM's hooks still run.
      // (A signal ignored when the JVM started, like SIGINT for a job started with `&` by a
      // non-interactive shell, stays ignored: stop such a process with SIGTERM.)
    }
  }
}
