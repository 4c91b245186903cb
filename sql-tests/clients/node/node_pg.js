// node-postgres against a running Sluice server: parameterised queries and
// the JavaScript types of the results (numeric as string, bigint as string,
// dates as Date), as pg returns them from PostgreSQL.
//
// Usage: node node_pg.js PORT DATA_DIR
// Exits non-zero (with a message) on any mismatch; prints "node-postgres: ok".

const assert = require("node:assert/strict");
const { Client } = require("pg");

async function main() {
  const [port, dataDir] = process.argv.slice(2);
  const client = new Client({ host: "127.0.0.1", port: Number(port), user: "sluice", database: "sluice" });
  await client.connect();
  try {
    await client.query(
      "COPY (SELECT * FROM (VALUES " +
        "(1, CAST(9000000000 AS BIGINT), CAST('12.34' AS DECIMAL(10,2)), DATE '2024-02-29', " +
        "TIMESTAMP '2024-02-29 13:14:15', 'hello', true, CAST(2.5 AS DOUBLE), CAST(7 AS INT)), " +
        "(2, CAST(-5 AS BIGINT), CAST('-0.50' AS DECIMAL(10,2)), DATE '1999-12-31', " +
        "TIMESTAMP '1999-12-31 23:59:59', 'world', false, CAST(-1 AS DOUBLE), CAST(NULL AS INT))" +
        `) AS v(id, big, amount, day, at, label, flag, ratio, maybe)) TO '${dataDir}/node/part-0.parquet' (FORMAT parquet)`
    );
    await client.query(`CREATE EXTERNAL TABLE node_typed STORED AS PARQUET LOCATION '${dataDir}/node/'`);

    // A parameterised query (extended protocol, text parameters).
    const { rows, fields } = await client.query(
      "SELECT id, big, amount, day, at, label, flag, ratio, maybe FROM node_typed WHERE id = $1 OR label = $2 ORDER BY id",
      [1, "world"]
    );
    assert.equal(rows.length, 2);
    const [first, second] = rows;
    assert.equal(first.id, "1", "bigint arrives as a string");
    assert.equal(first.big, "9000000000");
    assert.equal(first.amount, "12.34", "numeric arrives as a string");
    assert.equal(second.amount, "-0.50");
    assert.ok(first.day instanceof Date, "date arrives as a Date");
    assert.equal(first.day.getFullYear(), 2024);
    assert.equal(first.day.getMonth(), 1);
    assert.equal(first.day.getDate(), 29);
    assert.ok(first.at instanceof Date, "timestamp arrives as a Date");
    assert.equal(first.at.getHours(), 13);
    assert.equal(first.label, "hello");
    assert.equal(first.flag, true);
    assert.equal(second.flag, false);
    assert.equal(first.ratio, 2.5);
    assert.equal(first.maybe, 7);
    assert.equal(second.maybe, null);
    assert.deepEqual(
      fields.map((field) => field.name),
      ["id", "big", "amount", "day", "at", "label", "flag", "ratio", "maybe"]
    );

    // Parameters of several types, bound by the server.
    const bound = await client.query("SELECT $1::BIGINT + 1 AS next, $2::TEXT || '!' AS shout, $3::DECIMAL(10, 2) * 2 AS twice", [
      "41",
      "hi",
      "1.25",
    ]);
    assert.deepEqual(bound.rows[0], { next: "42", shout: "hi!", twice: "2.50" });

    // Errors carry their SQLSTATE and the connection stays usable.
    await assert.rejects(client.query("SELECT * FROM node_missing"), (error) => error.code === "42P01");
    const count = await client.query("SELECT count(*) FROM node_typed");
    assert.deepEqual(count.rows, [{ count: "2" }]);
  } finally {
    await client.end();
  }
  console.log("node-postgres: ok");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
