"""The cost model of Sluice's staged path, fitted to a scale-out run
(`benches/scaleout/cost_model.sh` runs both steps).

    cost_model.py measure --port P --queries DIR --out FILE
        Against a running frontend: the fixed costs of a job, a stage and a
        task from tiny queries, and for each TPC-H query its stages, tasks and
        bytes read from shuffles (EXPLAIN ANALYZE), every job split into stages.

    cost_model.py fit OUT
        Reads OUT/executors-1 and OUT/executors-2 (results.json of
        `sluice bench tpch` with every job split into stages; stages.json of
        `measure` on the 2-executor cluster), fits the model and prints what it
        predicts for 1, 2, 8 and 32 executors.

The model, for a query with S stages, W seconds of work and B bytes read from
shuffles, on N executors with one task slot each:

    time(N) = job + (S - 1) * stage + (S * N - 1) * task + W / N
              + B * (N - 1) / N * byte

`job` (a job of one stage and one task), `stage` and `task` are measured on
tiny tables; W is the query's time on one executor minus its fixed costs
(nothing crosses executors there); `byte` is fitted by least squares to the
2-executor times, where half of what each stage reads comes from the other
executor.
"""

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

SPLIT = "SET sluice.single_stage_max_bytes = 0"
TINY = "SELECT r_regionkey, count(*) FROM region GROUP BY r_regionkey ORDER BY 1"
SCAN = "SELECT count(*) FROM region WHERE r_name <> ''"


def timed(cursor, sql, runs):
    """Median seconds of `runs` runs of `sql`."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        cursor.execute(sql)
        cursor.fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def explain(cursor, sql):
    """Stages, tasks and shuffle bytes read of `sql`'s job, from EXPLAIN ANALYZE."""
    cursor.execute("EXPLAIN ANALYZE " + sql)
    text = "\n".join(str(row[-1]) for row in cursor.fetchall())
    stages = [int(t) for t in re.findall(r"^Stage \d+: \d+ partitions, (\d+) tasks", text, re.M)]
    read = sum(int(b) for b in re.findall(r"^\s+input_rows=.*shuffle_bytes_read=(\d+)", text, re.M))
    return {"stages": len(stages), "tasks": sum(stages), "shuffle_bytes_read": read}


def measure(args):
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=args.port, user="sluice", autocommit=True) as conn:
        cursor = conn.cursor()
        cursor.execute(SPLIT)
        fixed = {"job_s": timed(cursor, SCAN, 21)}
        tiny = {}
        for partitions in (2, 8):
            cursor.execute(f"SET sluice.stage_partitions = {partitions}")
            tiny[partitions] = dict(explain(cursor, TINY), seconds=timed(cursor, TINY, 21))
        cursor.execute("RESET sluice.stage_partitions")
        two, eight = tiny[2], tiny[8]
        fixed["task_s"] = max(0.0, (eight["seconds"] - two["seconds"]) / (eight["tasks"] - two["tasks"]))
        rest = two["seconds"] - fixed["job_s"] - fixed["task_s"] * (two["tasks"] - 1)
        fixed["stage_s"] = max(0.0, rest / (two["stages"] - 1))
        queries = {}
        for path in sorted(Path(args.queries).glob("q*.sql")):
            queries[str(int(path.stem[1:]))] = explain(cursor, path.read_text())
    Path(args.out).write_text(json.dumps({"fixed": fixed, "queries": queries}, indent=1))


def fit(args):
    out = Path(args.out)
    one = {str(q["query"]): min(q["runs_ms"]) / 1000 for q in json.load(open(out / "executors-1/results.json"))["queries"]}
    two = {str(q["query"]): min(q["runs_ms"]) / 1000 for q in json.load(open(out / "executors-2/results.json"))["queries"]}
    profile = json.load(open(out / "executors-2/stages.json"))
    job, stage, task = (profile["fixed"][k] for k in ("job_s", "stage_s", "task_s"))
    queries = profile["queries"]

    def fixed(q, n):
        s = queries[q]["stages"]
        return job + (s - 1) * stage + (s * n - 1) * task

    # W from one executor; `byte` by least squares over the 2-executor times.
    work = {q: max(0.0, one[q] - fixed(q, 1)) for q in one}
    num = den = 0.0
    for q in two:
        crossing = queries[q]["shuffle_bytes_read"] / 2
        rest = two[q] - fixed(q, 2) - work[q] / 2
        num += crossing * rest
        den += crossing * crossing
    byte = max(0.0, num / den) if den else 0.0

    def predict(q, n):
        return fixed(q, n) + work[q] / n + queries[q]["shuffle_bytes_read"] * (n - 1) / n * byte

    print(f"fixed costs: job {job * 1000:.1f} ms, stage {stage * 1000:.1f} ms, task {task * 1000:.2f} ms; "
          f"shuffle {byte * 1e9:.2f} s per GB read from another executor")
    shuffled = sum(q["shuffle_bytes_read"] for q in queries.values()) / 1e9
    print(f"22 queries: {sum(q['stages'] for q in queries.values())} stages, {shuffled:.1f} GB read from shuffles, "
          f"work {sum(work.values()):.1f} s on one executor")
    print(f"{'executors':<10}{'measured s':>12}{'model s':>10}{'speedup':>9}")
    base = sum(predict(q, 1) for q in one)
    for n in (1, 2, 8, 32):
        measured = {1: sum(one.values()), 2: sum(two.values())}.get(n)
        model = sum(predict(q, n) for q in one)
        shown = f"{measured:.1f}" if measured is not None else "-"
        print(f"{n:<10}{shown:>12}{model:>10.1f}{base / model:>8.2f}x")
    worst = max(one, key=lambda q: abs(predict(q, 2) - two[q]))
    print(f"largest 2-executor error: q{worst} measured {two[worst]:.2f} s, model {predict(worst, 2):.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("measure")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--queries", required=True)
    m.add_argument("--out", required=True)
    f = commands.add_parser("fit")
    f.add_argument("out")
    args = parser.parse_args()
    {"measure": measure, "fit": fit}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
