package dev.tether.testkit;

import dev.tether.TetherNode;
import dev.tether.persistence.Database;
import java.util.Map;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One gateway node on its own fresh database for a whole test class: started before the class's
 * first test, closed after its last. Declare it as
 * {@code @RegisterExtension static final OneNode node = new OneNode(Map.of(...settings));}.
 */
public final class OneNode implements BeforeAllCallback, AfterAllCallback {
  private final Map<String, Object> settings;
  private TetherNode node;
  private Api api;

  public OneNode() {
    this(Map.of());
  }

  public OneNode(Map<String, Object> settings) {
    this.settings = settings;
  }

  @Override
  public void beforeAll(ExtensionContext context) {
    node = TestNodes.start(TestDatabase.newDatabase(), settings);
    api = new Api(node.port());
  }

  @Override
  public void afterAll(ExtensionContext context) {
    if (node != null) node.close();
  }

  public int port() {
    return node.port();
  }

  /** The node's HTTP API, as a backend calls it. */
  public Api api() {
    return api;
  }

  public Database database() {
    return node.database();
  }

  public dev.tether.telemetry.TetherMetrics metrics() {
    return node.metrics();
  }
}
