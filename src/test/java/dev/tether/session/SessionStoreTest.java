package dev.tether.session;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tether.persistence.Database;
import dev.tether.testkit.TestDatabase;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ForkJoinPool;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The SQL beside the journal: the tombstone purge, and erasing only once the read model caught up. */
class SessionStoreTest {
  private static String dbUrl;
  private static Database database;

  @BeforeAll
  static void connect() {
    dbUrl = TestDatabase.newDatabase();
    database = Database.connect(dbUrl, "postgres", "postgres");
  }

  @AfterAll
  static void close() {
    if (database != null) database.close();
  }

  /** A snapshot saved just after the erase (pekko saves them asynchronously) goes with the purge. */
  @Test
  void thePurgeDeletesSnapshotsLeftBehindByErasedSessions() throws Exception {
    SessionStore store = new SessionStore(database.dataSource(), ForkJoinPool.commonPool());
    store.erase("s_gone", "ann", "ended", false).toCompletableFuture().get();
    insertSnapshot(ClientProxy.persistenceIdOf("s_gone"), 200); // landed after the erase
    insertSnapshot(ClientProxy.persistenceIdOf("s_alive"), 200);

    store.purgeTombstones(Duration.ofDays(7)).toCompletableFuture().get();

    assertEquals(List.of(ClientProxy.persistenceIdOf("s_alive")), snapshotOwners());
  }

  /** Erasing waits for the read model's projection of the session's tag to pass its last event. */
  @Test
  void eraseWaitsUntilTheReadModelHasSeenTheLastEvent() throws Exception {
    SessionStore store = new SessionStore(database.dataSource(), ForkJoinPool.commonPool(), "the-read-model");
    String id = "s_waiting";
    String pid = ClientProxy.persistenceIdOf(id);
    insertEvent(pid, 1);
    insertEvent(pid, 2);
    long last = insertEvent(pid, 3);

    assertEquals(SessionStore.Erased.READ_MODEL_BEHIND, store.erase(id, "bea", "ended", true).toCompletableFuture().get());
    setOffset(ClientProxy.tagFor(id), last - 1);
    assertEquals(SessionStore.Erased.READ_MODEL_BEHIND, store.erase(id, "bea", "ended", true).toCompletableFuture().get());
    assertEquals(3, count("SELECT count(*) FROM event_journal WHERE persistence_id = '" + pid + "'"));

    setOffset(ClientProxy.tagFor(id), last);
    assertEquals(SessionStore.Erased.ERASED, store.erase(id, "bea", "ended", true).toCompletableFuture().get());
    assertEquals(0, count("SELECT count(*) FROM event_journal WHERE persistence_id = '" + pid + "'"));
    assertEquals(1, count("SELECT count(*) FROM session_tombstones WHERE session_id = '" + id + "'"));
  }

  /** Not waiting (any more), the erase does not look at the read model. */
  @Test
  void eraseThatNoLongerWaitsIgnoresTheReadModel() throws Exception {
    SessionStore store = new SessionStore(database.dataSource(), ForkJoinPool.commonPool(), "the-read-model");
    String pid = ClientProxy.persistenceIdOf("s_impatient");
    insertEvent(pid, 1);
    assertEquals(SessionStore.Erased.ERASED, store.erase("s_impatient", "cid", "expired", false).toCompletableFuture().get());
    assertEquals(0, count("SELECT count(*) FROM event_journal WHERE persistence_id = '" + pid + "'"));
  }

  private static void insertSnapshot(String persistenceId, long seq) throws Exception {
    update(
        "INSERT INTO snapshot(persistence_id, sequence_number, created, snapshot_ser_id, snapshot_ser_manifest, snapshot_payload) "
            + "VALUES (?, ?, 0, 1, '', '\\x01')",
        persistenceId,
        seq);
  }

  /** Appends a journal row; returns its ordering. */
  private static long insertEvent(String persistenceId, long seq) throws Exception {
    return TestDatabase.queryLong(
        dbUrl,
        "INSERT INTO event_journal(persistence_id, sequence_number, deleted, writer, write_timestamp, "
            + "adapter_manifest, event_ser_id, event_ser_manifest, event_payload) "
            + "VALUES (?, ?, false, 'test', 0, '', 1, '', '\\x01') RETURNING ordering",
        persistenceId,
        seq);
  }

  private static void setOffset(String tag, long offset) throws Exception {
    update(
        "INSERT INTO pekko_projection_offset_store(projection_name, projection_key, current_offset, manifest, mergeable, last_updated) "
            + "VALUES ('the-read-model', ?, ?, 'SEQ', false, 0) "
            + "ON CONFLICT (projection_name, projection_key) DO UPDATE SET current_offset = EXCLUDED.current_offset",
        tag,
        Long.toString(offset));
  }

  private static List<String> snapshotOwners() throws Exception {
    List<String> owners = new ArrayList<>();
    try (Connection c = database.dataSource().getConnection();
        Statement st = c.createStatement();
        ResultSet rs = st.executeQuery("SELECT persistence_id FROM snapshot ORDER BY persistence_id")) {
      while (rs.next()) owners.add(rs.getString(1));
    }
    return owners;
  }

  private static long count(String sql) {
    return TestDatabase.count(dbUrl, sql);
  }

  private static void update(String sql, Object... params) {
    TestDatabase.update(dbUrl, sql, params);
  }
}
