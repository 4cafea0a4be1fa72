package dev.tether.persistence;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import dev.tether.testkit.TestDatabase;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.persistence.jdbc.config.JournalConfig;
import org.apache.pekko.persistence.jdbc.db.SlickDatabase;
import org.apache.pekko.persistence.jdbc.db.SlickExtension;
import org.apache.pekko.persistence.jdbc.db.SlickExtensionImpl;
import org.apache.pekko.persistence.PersistentRepr;
import org.apache.pekko.persistence.jdbc.config.ReadJournalConfig;
import org.apache.pekko.persistence.jdbc.journal.dao.JournalTables.JournalPekkoSerializationRow;
import org.apache.pekko.persistence.jdbc.query.dao.DefaultReadJournalDao;
import org.apache.pekko.persistence.jdbc.query.dao.ReadJournalDao;
import org.apache.pekko.serialization.Serialization;
import org.apache.pekko.serialization.SerializationExtension;
import org.apache.pekko.stream.Materializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import scala.Option;
import scala.Tuple2;
import scala.Tuple3;
import scala.util.Try;
import scala.collection.immutable.Seq;
import scala.collection.immutable.Set;
import scala.jdk.javaapi.CollectionConverters;
import scala.jdk.javaapi.FutureConverters;

/**
 * The journal's SQL against a real PostgreSQL: a batch of many sessions' tagged events is written
 * whole (rows, tags, the order of each session's events), also when it needs more than one
 * statement; a batch that fails leaves nothing behind; deletes keep what the plugin keeps.
 */
class SqlJournalDaoTest {
  private static String dbUrl;
  private static Database database;
  private static ActorTestKit testKit;
  private static SqlJournalDao dao;
  private static Config config;

  @BeforeAll
  static void start() {
    dbUrl = TestDatabase.newDatabase();
    database = Database.connect(dbUrl, "postgres", "postgres"); // applies the migrations
    // As TetherNode loads it: the overrides resolved together with application.conf.
    config =
        ConfigFactory.load(
            ConfigFactory.parseMap(TestDatabase.overridesFor(dbUrl))
                .withFallback(ConfigFactory.parseString("pekko.remote.artery.canonical.port = 0"))
                .withFallback(ConfigFactory.defaultApplication()));
    testKit = ActorTestKit.create("SqlJournalDaoTest", config);
    Config journal = config.getConfig("jdbc-journal");
    SlickDatabase slick =
        ((SlickExtensionImpl) SlickExtension.get(Adapter.toClassic(testKit.system()))).database(journal);
    dao =
        new SqlJournalDao(
            slick.database(),
            slick.profile(),
            new JournalConfig(journal),
            SerializationExtension.get(testKit.system()),
            testKit.system().executionContext(),
            Materializer.matFromSystem(testKit.system()));
  }

  @AfterAll
  static void stop() {
    if (testKit != null) testKit.shutdownTestKit();
    if (database != null) database.close();
  }

  @Test
  void aBatchOfManySessionsIsWrittenWithItsTagsAndInEachSessionsOrder() throws Exception {
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = new ArrayList<>();
    // Interleaved as the journal's queue interleaves sessions: seq 1 of every session, then 2, ...
    for (long seq = 1; seq <= 3; seq++) {
      for (int s = 0; s < 40; s++) {
        String pid = "order|" + s;
        List<String> tags = switch (s % 3) {
          case 0 -> List.of();
          case 1 -> List.of("tag-a");
          default -> List.of("tag-a", "tag-b");
        };
        batch.add(row(pid, seq, payload(pid, seq), s == 7 ? "meta-" + seq : null, tags));
      }
    }

    write(batch);

    assertEquals(120, count("SELECT count(*) FROM event_journal WHERE persistence_id LIKE 'order|%'"));
    // 40 sessions x 3 events: 14 sessions with no tag, 13 with one, 13 with two.
    assertEquals(3 * (13 + 2 * 13), count(
        "SELECT count(*) FROM event_tag t JOIN event_journal j ON j.ordering = t.event_id"
            + " WHERE j.persistence_id LIKE 'order|%'"));
    try (Connection c = connection(); Statement st = c.createStatement()) {
      Map<String, Long> lastSeqByPid = new HashMap<>();
      Map<String, java.util.Set<String>> tagsByEvent = new HashMap<>();
      try (ResultSet rs = st.executeQuery(
          "SELECT persistence_id, sequence_number, event_payload, meta_payload, writer"
              + " FROM event_journal WHERE persistence_id LIKE 'order|%' ORDER BY ordering")) {
        while (rs.next()) {
          String pid = rs.getString(1);
          long seq = rs.getLong(2);
          // Within a session, ordering follows the sequence numbers (eventsByTag relies on it).
          assertEquals(lastSeqByPid.getOrDefault(pid, 0L) + 1, seq, pid);
          lastSeqByPid.put(pid, seq);
          assertArrayEquals(payload(pid, seq), rs.getBytes(3));
          assertArrayEquals(pid.equals("order|7") ? ("meta-" + seq).getBytes() : null, rs.getBytes(4));
          assertEquals("writer-1", rs.getString(5));
        }
      }
      try (ResultSet rs = st.executeQuery(
          "SELECT j.persistence_id, j.sequence_number, t.tag FROM event_tag t"
              + " JOIN event_journal j ON j.ordering = t.event_id WHERE j.persistence_id LIKE 'order|%'")) {
        while (rs.next()) {
          tagsByEvent.computeIfAbsent(rs.getString(1) + "/" + rs.getLong(2), k -> new LinkedHashSet<>()).add(rs.getString(3));
        }
      }
      assertEquals(java.util.Set.of("tag-a"), tagsByEvent.get("order|1/2"));
      assertEquals(java.util.Set.of("tag-a", "tag-b"), tagsByEvent.get("order|2/3"));
      assertEquals(null, tagsByEvent.get("order|3/1"));
    }
  }

  @Test
  void aBatchLargerThanOneStatementIsWrittenWhole() throws Exception {
    int events = SqlJournalDao.ROWS_PER_STATEMENT + 500;
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = new ArrayList<>();
    for (int i = 0; i < events; i++) batch.add(row("large|" + (i % 10), 1 + i / 10, payload("large", i), null, List.of("t")));

    write(batch);

    assertEquals(events, count("SELECT count(*) FROM event_journal WHERE persistence_id LIKE 'large|%'"));
    assertEquals(events, count(
        "SELECT count(*) FROM event_tag t JOIN event_journal j ON j.ordering = t.event_id"
            + " WHERE j.persistence_id LIKE 'large|%' AND t.tag = 't'"));
  }

  @Test
  void aFailedBatchLeavesNothingBehind() throws Exception {
    long high = 1_000_000;
    write(List.of(row("conflict|0", high, payload("conflict", high), null, List.of("t"))));
    // A batch is sorted by sequence number: the conflicting row, with the highest, comes last,
    // in the second statement, so the first statement's rows and tags must be rolled back too.
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = new ArrayList<>();
    batch.add(row("conflict|0", high, payload("again", high), null, List.of("t")));
    for (int i = 0; i < SqlJournalDao.ROWS_PER_STATEMENT + 10; i++) {
      batch.add(row("conflict|" + (1 + i % 5), 1 + i / 5, payload("conflict", i), null, List.of("t")));
    }

    ExecutionException failed = assertThrows(ExecutionException.class, () -> write(batch));
    assertTrue(failed.getCause().getMessage().contains("duplicate key"), failed.getCause().toString());

    assertEquals(1, count("SELECT count(*) FROM event_journal WHERE persistence_id LIKE 'conflict|%'"));
    assertEquals(1, count(
        "SELECT count(*) FROM event_tag t JOIN event_journal j ON j.ordering = t.event_id"
            + " WHERE j.persistence_id LIKE 'conflict|%'"));
  }

  /** As the plugin deletes: up to the highest event at or below the bound, which stays, marked deleted. */
  @Test
  void deletingKeepsTheHighestDeletedEventMarkedAndLeavesTheRest() throws Exception {
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = new ArrayList<>();
    for (long seq = 1; seq <= 5; seq++) batch.add(row("delete|a", seq, payload("a", seq), null, List.of("t")));
    batch.add(row("delete|b", 1, payload("b", 1), null, List.of("t")));
    write(batch);

    FutureConverters.asJava(dao.delete("delete|a", 3)).toCompletableFuture().get(30, TimeUnit.SECONDS);

    assertEquals(List.of("3:true", "4:false", "5:false"), events("delete|a"));
    assertEquals(3, count(
        "SELECT count(*) FROM event_tag t JOIN event_journal j ON j.ordering = t.event_id"
            + " WHERE j.persistence_id = 'delete|a'"));
    assertEquals(List.of("1:false"), events("delete|b"));

    FutureConverters.asJava(dao.delete("delete|a", 100)).toCompletableFuture().get(30, TimeUnit.SECONDS);
    FutureConverters.asJava(dao.delete("delete|nobody", 100)).toCompletableFuture().get(30, TimeUnit.SECONDS);

    assertEquals(List.of("5:true"), events("delete|a"));
    assertEquals(5L, FutureConverters.asJava(dao.highestSequenceNr("delete|a", 0)).toCompletableFuture().get());
  }

  /**
   * {@link SqlReadJournalDao#eventsByTag} against the plugin's own query, window by window: the
   * same events (deleted ones left out), in the same order, cut at the same limit, with the same
   * payloads, metadata and offsets.
   */
  @Test
  void eventsByTagReadsWhatThePluginsQueryReads() throws Exception {
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = new ArrayList<>();
    for (long seq = 1; seq <= 6; seq++) {
      for (int s = 0; s < 12; s++) {
        String pid = "bytag|" + s;
        batch.add(row(pid, seq, payload(pid, seq), s == 5 ? "meta-" + seq : null, List.of("slice-" + (s % 4))));
      }
    }
    write(batch);
    // Deleted events (all but the highest removed, that one marked) are not read by either.
    FutureConverters.asJava(dao.delete("bytag|1", 3)).toCompletableFuture().get(30, TimeUnit.SECONDS);
    FutureConverters.asJava(dao.delete("bytag|6", 6)).toCompletableFuture().get(30, TimeUnit.SECONDS);

    long firstOrdering = count("SELECT min(ordering) FROM event_journal WHERE persistence_id LIKE 'bytag|%'");
    long lastOrdering = count("SELECT max(ordering) FROM event_journal WHERE persistence_id LIKE 'bytag|%'");
    Config readJournal = config.getConfig("jdbc-read-journal");
    ReadJournalConfig readConfig = new ReadJournalConfig(readJournal);
    SlickDatabase slick =
        ((SlickExtensionImpl) SlickExtension.get(Adapter.toClassic(testKit.system()))).database(readJournal);
    Serialization serialization = SerializationExtension.get(testKit.system());
    Materializer materializer = Materializer.matFromSystem(testKit.system());
    ReadJournalDao ours =
        new SqlReadJournalDao(
            slick.database(), slick.profile(), readConfig, serialization, testKit.system().executionContext(), materializer);
    ReadJournalDao plugins =
        new DefaultReadJournalDao(
            slick.database(), slick.profile(), readConfig, serialization, testKit.system().executionContext(), materializer);

    int windows = 0;
    for (int slice = 0; slice < 4; slice++) {
      String tag = "slice-" + slice;
      for (long[] window : new long[][] {
          {firstOrdering - 1, lastOrdering, 1000}, // everything
          {firstOrdering - 1, lastOrdering, 5}, // cut by the limit
          {firstOrdering + 10, lastOrdering - 10, 1000}, // a range inside
          {lastOrdering, lastOrdering + 100, 1000}}) { // past the end: nothing
        List<String> expected = read(plugins, tag, window);
        assertEquals(expected, read(ours, tag, window), tag + " " + java.util.Arrays.toString(window));
        windows++;
        if (window[1] == lastOrdering && window[2] == 1000) {
          // 3 sessions per slice x 6 events, less the deleted ones of bytag|1 (slice 1: 3) and
          // bytag|6 (slice 2: 6), which the plugin does not read either.
          int deleted = slice == 1 ? 3 : slice == 2 ? 6 : 0;
          assertEquals(18 - deleted, expected.size(), tag);
        }
      }
    }
    assertEquals(16, windows);
  }

  /** "pid/seq@ordering:payload:meta" of what eventsByTag returns, in order. */
  private static List<String> read(ReadJournalDao reader, String tag, long[] window) throws Exception {
    Seq<Try<Tuple3<PersistentRepr, Set<String>, Object>>> rows =
        FutureConverters.asJava(
                reader.eventsByTag(tag, window[0], window[1], window[2])
                    .runWith(org.apache.pekko.stream.scaladsl.Sink.seq(), Materializer.matFromSystem(testKit.system())))
            .toCompletableFuture()
            .get(30, TimeUnit.SECONDS);
    List<String> out = new ArrayList<>();
    for (Try<Tuple3<PersistentRepr, Set<String>, Object>> row : CollectionConverters.asJava(rows)) {
      PersistentRepr repr = row.get()._1();
      out.add(repr.persistenceId() + "/" + repr.sequenceNr() + "@" + row.get()._3() + ":"
          + new String((byte[]) repr.payload()) + ":"
          + (repr.metadata().isDefined() ? new String((byte[]) repr.metadata().get()) : "-"));
    }
    return out;
  }

  /** "seq:deleted" of a persistence id's rows, in order. */
  private static List<String> events(String pid) throws Exception {
    List<String> rows = new ArrayList<>();
    try (Connection c = connection();
        var ps = c.prepareStatement(
            "SELECT sequence_number, deleted FROM event_journal WHERE persistence_id = ? ORDER BY sequence_number")) {
      ps.setString(1, pid);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) rows.add(rs.getLong(1) + ":" + rs.getBoolean(2));
      }
    }
    return rows;
  }

  private static void write(List<Tuple2<JournalPekkoSerializationRow, Set<String>>> rows) throws Exception {
    Seq<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch = CollectionConverters.asScala(rows).toList();
    FutureConverters.asJava(dao.writeJournalRows(batch)).toCompletableFuture().get(30, TimeUnit.SECONDS);
  }

  private static Tuple2<JournalPekkoSerializationRow, Set<String>> row(
      String pid, long seq, byte[] payload, String meta, List<String> tags) {
    JournalPekkoSerializationRow row =
        new JournalPekkoSerializationRow(
            Long.MIN_VALUE, // generated by the database
            false,
            pid,
            seq,
            "writer-1",
            1_700_000_000_000L + seq,
            "",
            payload,
            4, // pekko's ByteArraySerializer: the payload reads back as these bytes (no manifest)
            "",
            meta == null ? Option.empty() : Option.apply(meta.getBytes()),
            meta == null ? Option.empty() : Option.apply((Object) 4),
            meta == null ? Option.empty() : Option.apply(""));
    return Tuple2.apply(row, CollectionConverters.asScala(new LinkedHashSet<>(tags)).toSet());
  }

  private static byte[] payload(String pid, long seq) {
    return (pid + "#" + seq).getBytes();
  }

  private static long count(String sql) {
    return TestDatabase.count(dbUrl, sql);
  }

  private static Connection connection() throws Exception {
    return DriverManager.getConnection(dbUrl, "postgres", "postgres");
  }
}
