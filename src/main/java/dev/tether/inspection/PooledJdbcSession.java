package dev.tether.inspection;

import java.sql.Connection;
import java.sql.SQLException;
import javax.sql.DataSource;
import org.apache.pekko.japi.function.Function;
import org.apache.pekko.projection.jdbc.JdbcSession;

/**
 * One projection transaction on a connection borrowed from Tether's pool: the handler's writes and
 * the projection's offset commit together (exactly-once), then the connection goes back.
 */
final class PooledJdbcSession implements JdbcSession {
  private final Connection connection;

  PooledJdbcSession(DataSource dataSource) {
    Connection borrowed = null;
    try {
      borrowed = dataSource.getConnection();
      borrowed.setAutoCommit(false);
    } catch (SQLException e) {
      closeQuietly(borrowed);
      throw new IllegalStateException("No connection for the inspection projection", e);
    }
    this.connection = borrowed;
  }

  @Override
  public <Result> Result withConnection(Function<Connection, Result> func) throws Exception {
    return func.apply(connection);
  }

  @Override
  public void commit() throws SQLException {
    connection.commit();
  }

  @Override
  public void rollback() throws SQLException {
    connection.rollback();
  }

  @Override
  public void close() throws SQLException {
    connection.close();
  }

  private static void closeQuietly(Connection connection) {
    if (connection == null) return;
    try {
      connection.close();
    } catch (SQLException ignored) {
      // already failing; the pool discards a broken connection
    }
  }
}
