package dev.tether.persistence;

import static dev.tether.persistence.SqlJournalDao.qualified;
import static dev.tether.persistence.SqlJournalDao.quoted;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import org.apache.pekko.NotUsed;
import org.apache.pekko.persistence.PersistentRepr;
import org.apache.pekko.persistence.jdbc.PekkoSerialization;
import org.apache.pekko.persistence.jdbc.config.EventJournalTableColumnNames;
import org.apache.pekko.persistence.jdbc.config.EventJournalTableConfiguration;
import org.apache.pekko.persistence.jdbc.config.EventTagTableConfiguration;
import org.apache.pekko.persistence.jdbc.config.ReadJournalConfig;
import org.apache.pekko.persistence.jdbc.journal.dao.JournalTables.JournalPekkoSerializationRow;
import org.apache.pekko.persistence.jdbc.query.dao.DefaultReadJournalDao;
import org.apache.pekko.serialization.Serialization;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.scaladsl.Source;
import scala.Option;
import scala.Tuple3;
import scala.collection.immutable.Set;
import scala.concurrent.ExecutionContext;
import scala.concurrent.Future;
import scala.jdk.javaapi.FunctionConverters;
import scala.jdk.javaapi.FutureConverters;
import scala.util.Try;
import slick.dbio.DBIOAction;
import slick.jdbc.JdbcBackend;
import slick.jdbc.JdbcProfile;
import slick.jdbc.SimpleJdbcAction;

/**
 * pekko-persistence-jdbc's read-journal DAO with {@code eventsByTag}, the inspection read model's
 * only query, in plain SQL that starts from the tag.
 *
 * <p>Why: the plugin joins the journal to the tag table and filters the journal by ordering, so
 * PostgreSQL walks every event in the ordering range and probes the tag table for each. Tether
 * tags each event with one of {@link dev.tether.session.ClientProxy#TAG_SLICES} slices, and each
 * slice's projection asks for its own: every query read four events to return one (EXPLAIN under
 * the throughput bench: 2,000 journal rows and 2,000 tag probes for 482 rows returned). Here the
 * range is put on the tag table's {@code event_id}, which the index {@code event_tag_tag_idx}
 * ({@code (tag, event_id)}, migration V10) serves, and only the slice's own events are read from
 * the journal. Same rows, same order, same limit as the plugin's query; measured in
 * docs/BENCHMARKS.md, twentieth session. Everything else is the plugin's own.
 *
 * <p>Configured by {@code jdbc-read-journal.dao} (persistence.conf); the plugin creates it by
 * reflection with the constructor below.
 */
public final class SqlReadJournalDao extends DefaultReadJournalDao {
  /** The tags eventsByTag returns with each event: none, as the plugin's own query. */
  private static final Set<String> NO_TAGS = scala.collection.immutable.Set$.MODULE$.empty();

  private final Serialization serialization;
  private final String eventsByTagSql;

  public SqlReadJournalDao(
      JdbcBackend.JdbcDatabaseDef db,
      JdbcProfile profile,
      ReadJournalConfig readJournalConfig,
      Serialization serialization,
      ExecutionContext ec,
      Materializer mat) {
    super(db, profile, readJournalConfig, serialization, ec, mat);
    this.serialization = serialization;
    EventJournalTableConfiguration journal = readJournalConfig.eventJournalTableConfiguration();
    EventJournalTableColumnNames c = journal.columnNames();
    EventTagTableConfiguration tags = readJournalConfig.eventTagTableConfiguration();
    String eventId = "t." + quoted(tags.columnNames().eventId());
    // In the order row() reads them.
    List<String> columns =
        List.of(
            c.ordering(),
            c.deleted(),
            c.persistenceId(),
            c.sequenceNumber(),
            c.writer(),
            c.writeTimestamp(),
            c.adapterManifest(),
            c.eventPayload(),
            c.eventSerId(),
            c.eventSerManifest(),
            c.metaPayload(),
            c.metaSerId(),
            c.metaSerManifest());
    this.eventsByTagSql =
        "SELECT " + String.join(", ", columns.stream().map(name -> "j." + quoted(name)).toList())
            + " FROM " + qualified(tags.schemaName(), tags.tableName()) + " t JOIN "
            + qualified(journal.schemaName(), journal.tableName()) + " j ON j." + quoted(c.ordering()) + " = " + eventId
            + " WHERE t." + quoted(tags.columnNames().tag()) + " = ? AND " + eventId + " > ? AND " + eventId + " <= ?"
            + " AND j." + quoted(c.deleted()) + " = FALSE"
            + " ORDER BY " + eventId + " LIMIT ?";
  }

  @Override
  public Source<Try<Tuple3<PersistentRepr, Set<String>, Object>>, NotUsed> eventsByTag(
      String tag, long offset, long maxOffset, long max) {
    SimpleJdbcAction<List<JournalPekkoSerializationRow>> query =
        SimpleJdbcAction.apply(
            FunctionConverters.asScalaFromFunction(
                (JdbcBackend.JdbcActionContext context) -> {
                  try {
                    return rowsOf(context.connection(), tag, offset, maxOffset, max);
                  } catch (SQLException e) {
                    throw new IllegalStateException("eventsByTag(" + tag + ") failed: " + e.getMessage(), e);
                  }
                }));
    // Scala's variance does not reach Java: the raw type stands for what Slick takes in Scala.
    @SuppressWarnings("rawtypes")
    DBIOAction action = query;
    @SuppressWarnings("unchecked")
    Future<List<JournalPekkoSerializationRow>> rows = db().run(action);
    // As the plugin's own: each row deserialized on its own (a row that fails is a failed Try,
    // which the query turns into a failed stream), with no tags, and its ordering as the offset.
    return org.apache.pekko.stream.javadsl.Source.completionStage(FutureConverters.asJava(rows))
        .mapConcat(list -> list)
        .map(
            row ->
                PekkoSerialization.fromRow(serialization, row)
                    .map(
                        FunctionConverters.asScalaFromFunction(
                            reprAndOrdering ->
                                new Tuple3<PersistentRepr, Set<String>, Object>(
                                    reprAndOrdering._1(), NO_TAGS, reprAndOrdering._2()))))
        .asScala();
  }

  private List<JournalPekkoSerializationRow> rowsOf(Connection connection, String tag, long offset, long maxOffset, long max)
      throws SQLException {
    List<JournalPekkoSerializationRow> rows = new ArrayList<>();
    try (PreparedStatement ps = connection.prepareStatement(eventsByTagSql)) {
      ps.setString(1, tag);
      ps.setLong(2, offset);
      ps.setLong(3, maxOffset);
      ps.setLong(4, max);
      try (ResultSet rs = ps.executeQuery()) {
        while (rs.next()) rows.add(row(rs));
      }
    }
    return rows;
  }

  private static JournalPekkoSerializationRow row(ResultSet rs) throws SQLException {
    byte[] metaPayload = rs.getBytes(11);
    int metaSerId = rs.getInt(12);
    Option<Object> metaSerIdOption = rs.wasNull() ? Option.empty() : Option.apply(metaSerId);
    return new JournalPekkoSerializationRow(
        rs.getLong(1),
        rs.getBoolean(2),
        rs.getString(3),
        rs.getLong(4),
        rs.getString(5),
        rs.getLong(6),
        rs.getString(7),
        rs.getBytes(8),
        rs.getInt(9),
        rs.getString(10),
        Option.apply(metaPayload),
        metaSerIdOption,
        Option.apply(rs.getString(13)));
  }
}
