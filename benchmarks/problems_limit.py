"""Does `amcs problems FILE --limit 5` cost what five problems cost, however large the file?

    uv run python benchmarks/problems_limit.py [--rows 1000000] [--repeat 3]

Writes a Parquet file (row groups of 100,000 rows), the same rows as one row group (what
``pyarrow.parquet.write_table`` writes by default) and a JSONL file of ``--rows`` problems to a
temporary folder, then runs, each as its own process, `amcs problems SOURCE --limit 5` on both
and on the bundled `arith:5`, and reports wall time and peak memory (the child's max RSS, from
``resource.getrusage(RUSAGE_CHILDREN)``) with their ratios to `arith:5`. Each command runs
``--repeat`` times; the fastest time and the smallest peak count, so that a busy machine does not
decide the result. The target: under 3x the time and the memory of `arith:5`. Results go to
benchmarks/results/problems_limit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "problems_limit.json"
ROW_GROUP_ROWS = 100_000
TARGET_RATIO = 3.0


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    """A Parquet and a JSONL file of ``rows`` arithmetic-like problems with ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet, jsonl = folder / "big.parquet", folder / "big.jsonl"
    one_group = folder / "one-group.parquet"
    writer = None
    with jsonl.open("w") as lines:
        for start in range(0, rows, ROW_GROUP_ROWS):
            ids = range(start, min(start + ROW_GROUP_ROWS, rows))
            chunk = {
                "id": [f"big-{i}" for i in ids],
                "question": [f"What is {i} + {i % 97}? Show every step." for i in ids],
                "answer": [str(i + i % 97) for i in ids],
            }
            table = pa.table(chunk)
            if writer is None:
                writer = pq.ParquetWriter(parquet, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            lines.writelines(
                json.dumps({"id": a, "question": q, "answer": b}) + "\n"
                for a, q, b in zip(chunk["id"], chunk["question"], chunk["answer"], strict=True)
            )
    writer.close()
    # The same rows as one row group: what pq.write_table writes for up to 1Mi rows by default.
    pq.write_table(pq.read_table(parquet), one_group, row_group_size=rows)
    return {"parquet": parquet, "parquet (1 row group)": one_group, "jsonl": jsonl}


def measure(source: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `amcs problems SOURCE --limit 5` in a fresh process.

    RUSAGE_CHILDREN's ru_maxrss is the largest of all children waited for so far, so each
    measurement runs in a fresh helper process that runs the command as its only child."""
    helper = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "seconds = time.perf_counter() - start\n"
        "print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    command = [sys.executable, "-m", "cli", "problems", source, "--limit", "5"]
    out = subprocess.run(
        [sys.executable, "-c", helper, *command],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amcs-problems-limit-") as tmp:
        started = time.perf_counter()
        files = write_files(Path(tmp), args.rows)
        print(
            f"wrote {args.rows:,} rows: {files['parquet'].stat().st_size / 1e6:.1f} MB Parquet, "
            f"{files['jsonl'].stat().st_size / 1e6:.1f} MB JSONL "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        sources = {"arith:5": "arith:5", **{kind: str(path) for kind, path in files.items()}}
        results = {}
        for name, source in sources.items():
            runs = [measure(source) for _ in range(args.repeat)]
            results[name] = {
                "seconds": round(min(s for s, _ in runs), 2),
                "peak_mb": round(min(m for _, m in runs), 1),
                "runs": [{"seconds": round(s, 2), "peak_mb": round(m, 1)} for s, m in runs],
            }
    base = results["arith:5"]
    print(f"\n{'amcs problems ... --limit 5':<28} {'time':>8} {'peak RSS':>10} {'ratios':>16}")
    for name, r in results.items():
        r["time_ratio"] = round(r["seconds"] / base["seconds"], 2)
        r["memory_ratio"] = round(r["peak_mb"] / base["peak_mb"], 2)
        print(
            f"{name:<28} {r['seconds']:>7.2f}s {r['peak_mb']:>8.1f}MB "
            f"{r['time_ratio']:>7.2f}x {r['memory_ratio']:>6.2f}x"
        )
    worst = max(max(r["time_ratio"], r["memory_ratio"]) for r in results.values())
    verdict = "within" if worst < TARGET_RATIO else "OVER"
    print(f"\nworst ratio {worst:.2f}x: {verdict} the {TARGET_RATIO:g}x target")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "row_group_rows": ROW_GROUP_ROWS,
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "results": results,
                "target_ratio": TARGET_RATIO,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
