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
    // Ctrl-C or SIGTERM: the JVM shutdown hook runs CoordinatedShutdown (unbind, leave the
    // cluster, stop the sessions, close the database).
    node.system().getWhenTerminated().toCompletableFuture().join();
    // Stopped for any other reason (the split brain resolver downed this node, it was removed
    // from the cluster): exit non-zero so a supervisor (systemd, Kubernetes) restarts it.
    boolean byJvmExit =
        CoordinatedShutdown.get(node.system())
            .getShutdownReason()
            .map(reason -> reason instanceof CoordinatedShutdown.JvmExitReason$)
            .orElse(false);
    if (!byJvmExit) System.exit(1);
  }
}
