package dev.tether.testkit;

import dev.tether.TetherNode;
import java.util.HashMap;
import java.util.Map;

/** Starts Tether nodes on random loopback ports against a test database. */
public final class TestNodes {
  private TestNodes() {}

  /** Settings every test node shares: loopback, random ports, the given database. */
  public static Map<String, Object> baseOverrides(String dbUrl) {
    Map<String, Object> o = new HashMap<>(TestDatabase.overridesFor(dbUrl));
    o.put("tether.http.host", "127.0.0.1");
    o.put("tether.http.port", 0);
    o.put("pekko.remote.artery.canonical.hostname", "127.0.0.1");
    o.put("pekko.remote.artery.canonical.port", 0);
    o.put("pekko.coordinated-shutdown.run-by-jvm-shutdown-hook", "off");
    o.put("pekko.loglevel", "WARNING");
    return o;
  }

  public static TetherNode start(String dbUrl, Map<String, Object> extra) {
    Map<String, Object> o = baseOverrides(dbUrl);
    o.putAll(extra);
    return TetherNode.start(o);
  }
}
