// pgjdbc against a running Sluice server: connection metadata, catalog
// browsing through DatabaseMetaData, a PreparedStatement with parameters,
// streaming a 1M-row result with setFetchSize, Statement.cancel(), and
// CopyManager.copyIn of CSV rows into a managed table (all or nothing), and
// PreparedStatement.executeBatch with autocommit on and in a transaction
// (committed together, a failed batch keeping nothing, rollback dropping).
//
// Usage: java -cp postgresql.jar JdbcClient.java PORT DATA_DIR
// Exits non-zero (with a message) on any mismatch; prints "jdbc: ok".

import java.io.StringReader;
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class JdbcClient {
    static void check(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/sluice";
        String dataDir = args[1];
        try (Connection conn = DriverManager.getConnection(url, "sluice", "")) {
            try (Statement st = conn.createStatement()) {
                for (int part = 0; part < 2; part++) {
                    long start = 1 + part * 500_000L;
                    st.execute("COPY (SELECT i AS id, CAST(i % 10 AS INT) AS bucket, "
                            + "CAST(i AS DECIMAL(12, 2)) / 4 AS amount, 'r' || CAST(i AS VARCHAR) AS label "
                            + "FROM generate_series(" + start + ", " + (start + 499_999) + ") AS t(i)) "
                            + "TO '" + dataDir + "/jdbc/part-" + part + ".parquet' (FORMAT parquet)");
                }
                st.execute("CREATE EXTERNAL TABLE jdbc_rows STORED AS PARQUET LOCATION '" + dataDir + "/jdbc/'");
            }

            DatabaseMetaData meta = conn.getMetaData();
            check(meta.getDatabaseMajorVersion() == 16, "major version " + meta.getDatabaseMajorVersion());
            check(meta.getDatabaseProductVersion().startsWith("16."), meta.getDatabaseProductVersion());

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_NAME"));
                }
            }
            check(tables.contains("jdbc_rows"), "getTables: " + tables);

            List<String> columns = new ArrayList<>();
            List<Integer> types = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, "public", "jdbc_rows", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                    types.add(rs.getInt("DATA_TYPE"));
                }
            }
            check(columns.equals(List.of("id:int8", "bucket:int4", "amount:numeric", "label:text")),
                    "getColumns: " + columns);
            check(types.equals(List.of(Types.BIGINT, Types.INTEGER, Types.NUMERIC, Types.VARCHAR)),
                    "getColumns types: " + types);

            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT count(*), sum(id), max(amount) FROM jdbc_rows WHERE bucket = ? AND label <> ?")) {
                ps.setInt(1, 3);
                ps.setString(2, "r3");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "a row");
                    check(rs.getLong(1) == 99_999, "count " + rs.getLong(1));
                    long expectedSum = 0;
                    for (long i = 13; i <= 1_000_000; i += 10) {
                        expectedSum += i;
                    }
                    check(rs.getLong(2) == expectedSum, "sum " + rs.getLong(2));
                    check(rs.getBigDecimal(3).compareTo(new BigDecimal("249998.25")) == 0,
                            "max " + rs.getBigDecimal(3));
                }
            }

            // Streaming: a cursor-based read (autocommit off, fetch size set).
            conn.setAutoCommit(false);
            long rows = 0;
            long sum = 0;
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(1000);
                try (ResultSet rs = st.executeQuery("SELECT id, label FROM jdbc_rows")) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
            }
            conn.commit();
            conn.setAutoCommit(true);
            check(rows == 1_000_000, "streamed rows " + rows);
            check(sum == 1_000_000L * 1_000_001L / 2, "streamed sum " + sum);

            // Statement.cancel() from another thread during a long join.
            try (Statement st = conn.createStatement()) {
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(1500);
                        st.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                canceller.start();
                long started = System.nanoTime();
                try {
                    st.executeQuery("SELECT count(*) FROM jdbc_rows a JOIN jdbc_rows b ON a.bucket = b.bucket");
                    throw new AssertionError("the long query was not cancelled");
                } catch (SQLException e) {
                    check("57014".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
                }
                double seconds = (System.nanoTime() - started) / 1e9;
                check(seconds < 3.5, "cancel took " + seconds + " s in all");
                canceller.join();
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 42")) {
                check(rs.next() && rs.getInt(1) == 42, "connection usable after cancel");
            }

            // CopyManager.copyIn: CSV rows into a managed table.
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_loaded (id bigint, label varchar)");
            }
            CopyManager copies = conn.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder csv = new StringBuilder();
            for (int i = 1; i <= 10_000; i++) {
                csv.append(i).append(",\"label ").append(i).append("\"\n");
            }
            long copied = copies.copyIn("COPY jdbc_loaded FROM STDIN (FORMAT csv)", new StringReader(csv.toString()));
            check(copied == 10_000, "copyIn reported " + copied);
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*), sum(id), max(label) FROM jdbc_loaded")) {
                check(rs.next() && rs.getLong(1) == 10_000 && rs.getLong(2) == 50_005_000L
                        && "label 9999".equals(rs.getString(3)), "copied rows");
            }
            try {
                copies.copyIn("COPY jdbc_loaded FROM STDIN (FORMAT csv)", new StringReader("1,a\nx,b\n"));
                throw new AssertionError("a bad id was loaded");
            } catch (SQLException e) {
                check("22P02".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM jdbc_loaded")) {
                check(rs.next() && rs.getLong(1) == 10_000, "a failed copyIn kept rows");
            }

            // executeBatch: one INSERT per row, pipelined with one Sync.
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_batched (id bigint NOT NULL, label varchar)");
            }
            String insert = "INSERT INTO jdbc_batched VALUES (?, ?)";
            try (PreparedStatement ps = conn.prepareStatement(insert)) {
                for (int i = 1; i <= 2_000; i++) {
                    ps.setLong(1, i);
                    ps.setString(2, "batch " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 2_000 && counts[1_999] == 1, "batch counts: " + counts.length + " " + counts[0] + " " + counts[1_999]);
            }
            // A NULL id fails the batch, and none of its rows is kept.
            try (PreparedStatement ps = conn.prepareStatement(insert)) {
                for (int i = 1; i <= 10; i++) {
                    if (i == 5) {
                        ps.setNull(1, Types.BIGINT);
                    } else {
                        ps.setLong(1, -i);
                    }
                    ps.setString(2, "bad batch");
                    ps.addBatch();
                }
                ps.executeBatch();
                throw new AssertionError("a NULL id was inserted");
            } catch (SQLException e) {
                SQLException cause = e.getNextException() != null ? e.getNextException() : e;
                check("23502".equals(cause.getSQLState()), "SQLSTATE " + cause.getSQLState() + ": " + cause.getMessage());
            }
            // In a transaction: committed at commit(), dropped by rollback().
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement(insert)) {
                for (int i = 2_001; i <= 3_000; i++) {
                    ps.setLong(1, i);
                    ps.setString(2, "tx " + i);
                    ps.addBatch();
                }
                ps.executeBatch();
                conn.commit();
                ps.setLong(1, -1);
                ps.setString(2, "rolled back");
                ps.addBatch();
                ps.executeBatch();
                conn.rollback();
            }
            conn.setAutoCommit(true);
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*), sum(id), min(id) FROM jdbc_batched")) {
                check(rs.next() && rs.getLong(1) == 3_000 && rs.getLong(2) == 4_501_500L && rs.getLong(3) == 1,
                        "batched rows: " + rs.getLong(1) + " " + rs.getLong(2) + " " + rs.getLong(3));
            }
        }
        System.out.println("jdbc: ok");
    }
}
