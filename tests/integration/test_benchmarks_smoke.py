"""The benchmark suite runs end to end in smoke mode.

No timing is asserted: only that every scenario ran and produced a ratio, that
the table was printed, and that the memory scenario kept to its buffer bound.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
ROWS = {
    "1",
    "1d",
    "2",
    "2x200",
    "2x200one",
    "3",
    "4",
    "4d",
    "4b",
    "4c",
    "4s",
    "5",
    "6",
    "7a",
    "7b",
    "8",
    "9",
    "9p",
}
# Rows whose ratio is to raw runs taken next to their own runs.
PAIRED = {"2", "2x200", "2x200one", "3", "4", "4d", "4b", "4c", "4s", "9"}


def test_smoke_run_prints_a_ratio_for_every_scenario(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    results = {row["id"]: row for row in json.loads(output.read_text())["results"]}
    assert set(results) == ROWS
    for row_id, row in results.items():
        if row_id == "6" and row["skipped"]:
            # Smoke mode never creates the Safir venv; it says why it skipped.
            assert "Safir" in row["skipped"] or "safir" in row["skipped"]
            continue
        assert row["skipped"] is None, f"{row_id}: {row['skipped']}"
        assert row["ratio"] is not None, row_id
        assert row["ratio"] > 0, row_id

    settings = json.loads(output.read_text())["settings"]
    for row_id in PAIRED:
        paired = results[row_id]["extra"]["paired_baseline_runs"]
        assert len(paired) == settings["repeats"], row_id
        best = max(run["rate"] for run in paired)
        assert results[row_id]["baseline_value"] == best, row_id

    for row_id in ("2x200", "2x200one"):
        # Judged against scenario-2 runs taken in turn with its own.
        extra = results[row_id]["extra"]
        assert len(extra["reference_runs"]) == settings["repeats"], row_id
        assert extra["relative_to_reference"] > 0, row_id

    # The direct log path's run waited for every record's acknowledgement.
    total = settings["warmup"] + settings["repeats"] * settings["events"]
    [log_export] = results["4d"]["extra"]["log_export"].values()
    assert (log_export["exported"], log_export["failed"]) == (total, 0)

    # The keyed rows ran behind the proxy: every awaited send paid its round
    # trip (a guarantee of the proxy, not a performance figure).
    for row_id in ("9", "9p"):
        extra = results[row_id]["extra"]
        assert extra["min_send_and_wait_s"] >= 2 * extra["delay_each_way_s"], row_id
        assert extra["partitions"] == 6, row_id
    one = results["9p"]["extra"]["one_partition_runs"]
    assert len(one) == settings["repeats"]
    assert results["9p"]["baseline_value"] == max(run["rate"] for run in one)

    memory = results["8"]
    assert memory["target_met"] is True
    assert 0 < memory["extra"]["max_buffered"] <= memory["extra"]["buffer_max_events"]

    lines = done.stdout.splitlines()
    header = next(
        (i for i, x in enumerate(lines) if re.match(r"^id\s+scenario\s+result", x)),
        None,
    )
    assert header is not None, done.stdout
    table = lines[header + 2 :]
    for row_id in ROWS:
        row_line = next((x for x in table if x.split(" ", 1)[0] == row_id), None)
        assert row_line is not None, f"no table row for {row_id}"
        assert re.search(r"\s(\d+\.\d\d|skipped)\s", row_line), row_line


def test_keyed_rows_skip_a_broker_that_cannot_advertise_the_proxy() -> None:
    # A broker given by address (like noida-db, which advertises its own port
    # only) cannot be put behind the proxy: a proxy in front of its bootstrap
    # would carry nothing after it, so the rows say so instead of measuring.
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--smoke",
            "--scenarios",
            "9",
            "--bootstrap-servers",
            "127.0.0.1:9",
            "--registry-url",
            "http://127.0.0.1:9",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [x for x in done.stdout.splitlines() if x.split(" ", 1)[0] in {"9", "9p"}]
    assert len(rows) == 2, done.stdout
    for row in rows:
        assert "skipped" in row, row
        assert "tansu or kafka" in row, row
