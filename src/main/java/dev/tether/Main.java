package dev.tether;

import java.util.Map;

/** Starts one Tether node with application.conf and the TETHER_* environment. */
public final class Main {
  private Main() {}

  public static void main(String[] args) {
    TetherNode node = TetherNode.start(Map.of());
    // Ctrl-C: the JVM shutdown hook runs CoordinatedShutdown (unbind, leave the cluster, stop
    // the sessions, close the database).
    node.system().getWhenTerminated().toCompletableFuture().join();
  }
}
