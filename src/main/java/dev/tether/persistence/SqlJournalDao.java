package dev.tether.persistence;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Types;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.pekko.persistence.jdbc.config.EventJournalTableColumnNames;
import org.apache.pekko.persistence.jdbc.config.EventJournalTableConfiguration;
import org.apache.pekko.persistence.jdbc.config.EventTagTableConfiguration;
import org.apache.pekko.persistence.jdbc.config.JournalConfig;
import org.apache.pekko.persistence.jdbc.journal.dao.DefaultJournalDao;
import org.apache.pekko.persistence.jdbc.journal.dao.JournalTables.JournalPekkoSerializationRow;
import org.apache.pekko.serialization.Serialization;
import org.apache.pekko.stream.Materializer;
import scala.Tuple2;
import scala.collection.immutable.Seq;
import scala.collection.immutable.Set;
import scala.concurrent.ExecutionContext;
import scala.concurrent.Future;
import scala.jdk.javaapi.CollectionConverters;
import scala.jdk.javaapi.FunctionConverters;
import scala.runtime.BoxedUnit;
import slick.dbio.DBIOAction;
import slick.jdbc.JdbcBackend;
import slick.jdbc.JdbcProfile;
import slick.jdbc.SimpleJdbcAction;

/**
 * pekko-persistence-jdbc's journal DAO with its two hot statements in plain SQL: a batch of tagged
 * events is written with one multi-row INSERT into the journal and one into the tag table instead
 * of one INSERT per event, and the deletion of old events after a snapshot no longer compiles a
 * Slick query on every call.
 *
 * <p>Why the writes: every Tether event is tagged (the inspection read model follows the tags),
 * and for tagged events the plugin asks Slick for each row's generated {@code ordering}, which
 * Slick does by inserting row by row: a write batch of 400 events was 400 round trips to
 * PostgreSQL inside one transaction. Here the batch is one statement ({@code RETURNING} gives
 * every row's ordering) plus one for the tags, in one transaction, so what the plugin promises is
 * kept: a batch is written whole or not at all, and a session's events get increasing {@code
 * ordering} in the order of their sequence numbers (PostgreSQL takes the rows of a {@code VALUES}
 * list in order and draws each row's {@code nextval} as it goes; not a documented promise, so
 * {@code SqlJournalDaoTest} checks it). Measured in docs/BENCHMARKS.md, seventeenth
 * session. Reads and the rest are the plugin's own.
 *
 * <p>Configured by {@code jdbc-journal.dao} (persistence.conf); the plugin creates it by
 * reflection with the constructor below.
 */
public final class SqlJournalDao extends DefaultJournalDao {
  /**
   * Rows per INSERT statement. PostgreSQL takes at most 65,535 bind parameters per statement and
   * a journal row has 12; the plugin's batches (jdbc-journal.batchSize, 400 here) fit in one.
   */
  static final int ROWS_PER_STATEMENT = 2000;

  /** Tag rows per INSERT statement (2 bind parameters each); Tether's events carry one tag. */
  static final int TAGS_PER_STATEMENT = 10_000;

  private final String journalInsertPrefix;
  private final String journalRowPlaceholders;
  private final String journalReturning;
  private final String tagInsertPrefix;
  private final String highestBeforeSql;
  private final String deleteBelowSql;
  private final String markDeletedSql;

  public SqlJournalDao(
      JdbcBackend.JdbcDatabaseDef db,
      JdbcProfile profile,
      JournalConfig journalConfig,
      Serialization serialization,
      ExecutionContext ec,
      Materializer mat) {
    super(db, profile, journalConfig, serialization, ec, mat);
    // Names quoted as Slick's PostgreSQL profile quotes them, so that these statements reach the
    // same table and columns as the plugin's reads whatever the configured names are.
    EventJournalTableConfiguration journal = journalConfig.eventJournalTableConfiguration();
    EventJournalTableColumnNames c = journal.columnNames();
    String journalTable = qualified(journal.schemaName(), journal.tableName());
    String persistenceId = quoted(c.persistenceId());
    String sequenceNumber = quoted(c.sequenceNumber());
    String deleted = quoted(c.deleted());
    // In the order insertEvents binds them; every column but the generated ordering.
    List<String> columns =
        List.of(
            persistenceId,
            sequenceNumber,
            deleted,
            quoted(c.writer()),
            quoted(c.writeTimestamp()),
            quoted(c.adapterManifest()),
            quoted(c.eventSerId()),
            quoted(c.eventSerManifest()),
            quoted(c.eventPayload()),
            quoted(c.metaSerId()),
            quoted(c.metaSerManifest()),
            quoted(c.metaPayload()));
    this.journalInsertPrefix = "INSERT INTO " + journalTable + " (" + String.join(", ", columns) + ") VALUES ";
    this.journalRowPlaceholders = "(" + "?,".repeat(columns.size() - 1) + "?)";
    this.journalReturning = " RETURNING " + quoted(c.ordering()) + ", " + persistenceId + ", " + sequenceNumber;
    this.highestBeforeSql =
        "SELECT " + sequenceNumber + " FROM " + journalTable + " WHERE " + persistenceId + " = ? AND "
            + sequenceNumber + " <= ? ORDER BY " + sequenceNumber + " DESC LIMIT 1";
    this.deleteBelowSql =
        "DELETE FROM " + journalTable + " WHERE " + persistenceId + " = ? AND " + sequenceNumber + " <= ?";
    this.markDeletedSql =
        "UPDATE " + journalTable + " SET " + deleted + " = TRUE WHERE " + persistenceId + " = ? AND "
            + sequenceNumber + " = ? AND " + deleted + " = FALSE";
    EventTagTableConfiguration tags = journalConfig.eventTagTableConfiguration();
    this.tagInsertPrefix =
        "INSERT INTO " + qualified(tags.schemaName(), tags.tableName()) + " ("
            + quoted(tags.columnNames().eventId()) + ", " + quoted(tags.columnNames().tag()) + ") VALUES ";
  }

  static String qualified(scala.Option<String> schema, String table) {
    return schema.isDefined() ? quoted(schema.get()) + "." + quoted(table) : quoted(table);
  }

  static String quoted(String identifier) {
    return '"' + identifier.replace("\"", "\"\"") + '"';
  }

  @Override
  public Future<BoxedUnit> writeJournalRows(Seq<Tuple2<JournalPekkoSerializationRow, Set<String>>> batch) {
    List<Tuple2<JournalPekkoSerializationRow, Set<String>>> rows =
        new ArrayList<>(CollectionConverters.asJava(batch));
    // As the plugin does: a stable sort, so one session's events keep their order.
    rows.sort(Comparator.comparingLong(row -> row._1().sequenceNumber()));
    return inTransaction(connection -> writeAll(connection, rows));
  }

  /**
   * Deletes a session's events up to {@code maxSequenceNr} (after a snapshot), as the plugin does:
   * the highest of them is kept, marked deleted, so the session's highest sequence number survives.
   * In plain SQL because the plugin's delete is a Slick query compiled anew on every call, which
   * was 9 % of the node's CPU in a throughput run (docs/BENCHMARKS.md, seventeenth session).
   */
  @Override
  public Future<BoxedUnit> delete(String persistenceId, long maxSequenceNr) {
    return inTransaction(connection -> deleteUpTo(connection, persistenceId, maxSequenceNr));
  }

  private void deleteUpTo(Connection connection, String persistenceId, long maxSequenceNr) throws SQLException {
    long highest = 0;
    try (PreparedStatement select = connection.prepareStatement(highestBeforeSql)) {
      select.setString(1, persistenceId);
      select.setLong(2, maxSequenceNr);
      try (ResultSet rs = select.executeQuery()) {
        if (rs.next()) highest = rs.getLong(1);
      }
    }
    try (PreparedStatement delete = connection.prepareStatement(deleteBelowSql)) {
      delete.setString(1, persistenceId);
      delete.setLong(2, highest - 1);
      delete.executeUpdate();
    }
    try (PreparedStatement mark = connection.prepareStatement(markDeletedSql)) {
      mark.setString(1, persistenceId);
      mark.setLong(2, highest);
      mark.executeUpdate();
    }
  }

  /** JDBC work on the journal's connection; runs inside a transaction. */
  private interface JdbcWork {
    void run(Connection connection) throws SQLException;
  }

  /** Runs {@code work} on the journal's pool (Slick's executor), in one transaction. */
  private Future<BoxedUnit> inTransaction(JdbcWork work) {
    SimpleJdbcAction<BoxedUnit> action =
        SimpleJdbcAction.apply(
            FunctionConverters.asScalaFromFunction(
                (JdbcBackend.JdbcActionContext context) -> {
                  try {
                    work.run(context.connection());
                  } catch (SQLException e) {
                    throw new JournalWriteFailed(e);
                  }
                  return BoxedUnit.UNIT;
                }));
    // Scala's variance does not reach Java: the raw types stand for what Slick gives in Scala.
    @SuppressWarnings("rawtypes")
    DBIOAction transactional = profile().api().jdbcActionExtensionMethods(action).transactionally();
    @SuppressWarnings("unchecked")
    Future<BoxedUnit> done = db().run(transactional);
    return done;
  }

  /** Writes {@code rows} (with their tags) on {@code connection}, inside the caller's transaction. */
  private void writeAll(Connection connection, List<Tuple2<JournalPekkoSerializationRow, Set<String>>> rows)
      throws SQLException {
    for (int from = 0; from < rows.size(); from += ROWS_PER_STATEMENT) {
      List<Tuple2<JournalPekkoSerializationRow, Set<String>>> chunk =
          rows.subList(from, Math.min(rows.size(), from + ROWS_PER_STATEMENT));
      Map<String, Long> orderings = insertEvents(connection, chunk);
      insertTags(connection, chunk, orderings);
    }
  }

  /** Inserts the events; answers each row's generated ordering by "persistenceId/sequenceNr". */
  private Map<String, Long> insertEvents(
      Connection connection, List<Tuple2<JournalPekkoSerializationRow, Set<String>>> rows) throws SQLException {
    StringBuilder sql = new StringBuilder(journalInsertPrefix);
    for (int i = 0; i < rows.size(); i++) {
      if (i > 0) sql.append(',');
      sql.append(journalRowPlaceholders);
    }
    sql.append(journalReturning);
    Map<String, Long> orderings = new HashMap<>(rows.size() * 2);
    try (PreparedStatement insert = connection.prepareStatement(sql.toString())) {
      int p = 1;
      for (Tuple2<JournalPekkoSerializationRow, Set<String>> entry : rows) {
        JournalPekkoSerializationRow row = entry._1();
        insert.setString(p++, row.persistenceId());
        insert.setLong(p++, row.sequenceNumber());
        insert.setBoolean(p++, row.deleted());
        insert.setString(p++, row.writer());
        insert.setLong(p++, row.writeTimestamp());
        insert.setString(p++, row.adapterManifest());
        insert.setInt(p++, row.eventSerId());
        insert.setString(p++, row.eventSerManifest());
        insert.setBytes(p++, row.eventPayload());
        if (row.metaSerId().isDefined()) insert.setInt(p++, (Integer) row.metaSerId().get());
        else insert.setNull(p++, Types.INTEGER);
        insert.setString(p++, row.metaSerManifest().isDefined() ? row.metaSerManifest().get() : null);
        if (row.metaPayload().isDefined()) insert.setBytes(p++, row.metaPayload().get());
        else insert.setNull(p++, Types.BINARY);
      }
      try (ResultSet generated = insert.executeQuery()) {
        while (generated.next()) {
          orderings.put(key(generated.getString(2), generated.getLong(3)), generated.getLong(1));
        }
      }
    }
    if (orderings.size() != rows.size()) {
      throw new SQLException("journal insert returned " + orderings.size() + " rows for " + rows.size() + " events");
    }
    return orderings;
  }

  private void insertTags(
      Connection connection,
      List<Tuple2<JournalPekkoSerializationRow, Set<String>>> rows,
      Map<String, Long> orderings)
      throws SQLException {
    List<Long> eventIds = new ArrayList<>();
    List<String> tagNames = new ArrayList<>();
    for (Tuple2<JournalPekkoSerializationRow, Set<String>> entry : rows) {
      Long ordering = orderings.get(key(entry._1().persistenceId(), entry._1().sequenceNumber()));
      for (String tag : CollectionConverters.asJava(entry._2())) {
        eventIds.add(ordering);
        tagNames.add(tag);
      }
    }
    for (int from = 0; from < eventIds.size(); from += TAGS_PER_STATEMENT) {
      int to = Math.min(eventIds.size(), from + TAGS_PER_STATEMENT);
      StringBuilder sql = new StringBuilder(tagInsertPrefix);
      for (int i = from; i < to; i++) sql.append(i > from ? ",(?,?)" : "(?,?)");
      try (PreparedStatement insert = connection.prepareStatement(sql.toString())) {
        int p = 1;
        for (int i = from; i < to; i++) {
          insert.setLong(p++, eventIds.get(i));
          insert.setString(p++, tagNames.get(i));
        }
        insert.executeUpdate();
      }
    }
  }

  private static String key(String persistenceId, long sequenceNr) {
    return persistenceId + '/' + sequenceNr;
  }

  /** A failed statement, unchecked so it can leave the Slick action; the journal call fails. */
  static final class JournalWriteFailed extends RuntimeException {
    JournalWriteFailed(SQLException cause) {
      super(cause.getMessage(), cause);
    }
  }
}
