"""The benchmark harness's pieces work: rendering, the suite loop, one tiny measurement.

No timing is asserted: the figures themselves come from `make bench`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import bench_redaction, report, run_overhead
from bench.__main__ import main, run_suite
from bench.common import BenchError, median, relative_spread, spec_text, steady_rounds
from bench.memory import log_line, peak_rss
from runner.spec import load_spec

SAMPLE: dict[str, Any] = {
    "step_overhead_ratio": 0.95,
    "fixed_overhead_runs": 3.4,
    "cached_rerun_vs_validate": 1.7,
    "cached_rerun_containers": 0,
    "parallel_efficiency": 0.81,
    "redaction_mib_s": {"10": 450.0, "100": 480.5, "1000": 150.2},
    "processor_us_per_event": 5.6,
    "stream_1gib_rss_growth_mib": 3.5,
    "coordinator_claims_per_s": {"sqlite": 250.0, "postgresql": None},
    "quick": False,
    "finished_at": "2026-01-01T00:00:00Z",
    "duration_s": 400.0,
    "machine": {"cores": 2, "memory_gib": 23.5, "python": "3.11.7", "docker": "20.10.24"},
    "notes": {"coordinator_claims_per_s": "PostgreSQL not measured: no server"},
    "details": {"cache": {"cold_run_s": 6.5, "cached_rerun_s": [0.7], "validate_s": [0.4]}},
}


def test_the_table_compares_each_figure_with_its_goal() -> None:
    rows = {key: (measured, goal, met) for key, measured, goal, met in report.rows(SAMPLE)}
    assert rows["`step_overhead_ratio`"] == ("0.95", "≤ 1.1", "yes")
    assert rows["`fixed_overhead_runs`"] == ("3.4", "≤ 3", "**no**")
    assert rows["`cached_rerun_containers`"] == ("0", "≤ 0", "yes")
    assert rows['`redaction_mib_s["10"]`'][1:] == ("—", "—")
    assert rows['`redaction_mib_s["1000"]`'] == ("150.2", "≥ 50", "yes")
    assert rows['`coordinator_claims_per_s["postgresql"]`'] == ("not measured", "≥ 150", "—")
    assert len(rows) == len(report.GOALS)
    plain = report.table(SAMPLE, markdown=False)
    assert "`" not in plain and "**" not in plain
    assert plain.splitlines()[0].split() == ["key", "measured", "goal", "met?"]


def test_benchmarks_md_holds_the_table_machine_command_notes_and_changes() -> None:
    text = report.markdown(SAMPLE)
    assert "| `parallel_efficiency` | 0.81 | ≥ 0.8 | yes |" in text
    assert "cores: 2" in text and "Docker engine 20.10.24" in text
    assert "make bench" in text
    assert "PostgreSQL not measured: no server" in text
    assert "Cold run of the cached-rerun spec: 6.5 s" in text
    assert report.CHANGES.splitlines()[0] in text
    assert "## What was changed to reach the goals" in text


def test_render_rewrites_the_markdown_from_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results, markdown = tmp_path / "results.json", tmp_path / "B.md"
    results.write_text(json.dumps(SAMPLE))
    assert main(["--render", "--results", str(results), "--markdown", str(markdown)]) == 0
    assert markdown.read_text() == report.markdown(SAMPLE)
    assert "step_overhead_ratio" in capsys.readouterr().out


def test_the_suite_keeps_other_figures_and_nulls_a_failed_module() -> None:
    def load(name: str) -> Any:
        if name == "bench.bench_redaction":

            def ok(quick: bool) -> dict[str, Any]:
                return {"redaction_mib_s": {"100": 1.0}, "processor_us_per_event": 2.0}

            return SimpleNamespace(run=ok)

        def broken(quick: bool, **options: Any) -> dict[str, Any]:
            raise BenchError("no server")

        return SimpleNamespace(run=broken)

    previous = {"parallel_efficiency": 0.9, "coordinator_claims_per_s": {"sqlite": 1.0}}
    results, failed = run_suite(
        ["redaction", "coordinator"], quick=True, previous=previous, load=load
    )
    assert failed == ["coordinator"]
    assert results["parallel_efficiency"] == 0.9
    assert results["processor_us_per_event"] == 2.0
    assert results["coordinator_claims_per_s"] is None
    assert "no server" in results["notes"]["coordinator_claims_per_s"]
    assert set(report.KEYS) <= set(results)
    json.dumps(results)  # results.json must be able to hold it


def test_a_tiny_redaction_measurement() -> None:
    figures = bench_redaction.run(quick=True, size_mib=1, counts=(10, 100), events=200)
    assert figures["redaction_mib_s"]["10"] > 0
    assert figures["redaction_mib_s"]["100"] > 0
    assert figures["processor_us_per_event"] > 0


def test_peak_rss_sees_what_a_process_allocates() -> None:
    child = "b = bytearray(96 << 20); import time; time.sleep(0.3)"
    measured = peak_rss([sys.executable, "-c", child])
    assert measured.returncode == 0
    assert measured.samples > 0
    assert measured.peak_kib >= 96 * 1024


def test_overhead_figures_are_the_median_round() -> None:
    figures = run_overhead.figures([4.0, 4.2, 3.8], [7.0, 7.1, 6.9], [3.0, 3.2, 3.1])
    # Rounds: marginal 0.3 / docker 0.3, 0.29 / 0.32, 0.31 / 0.31; fixed 1.0/0.3, 1.3/0.32, ...
    assert figures["step_overhead_ratio"] == pytest.approx(1.0)
    assert figures["details"]["ratio_per_round"] == [1.0, 0.906, 1.0]
    assert figures["fixed_overhead_runs"] == pytest.approx(3.33, abs=0.01)


def test_rounds_are_added_while_they_disagree() -> None:
    assert relative_spread([1.0, 1.0, 1.0]) == 0
    assert relative_spread([1.0, 9.0, 1.0, 1.0, 1.0, 0.1, 1.0, 1.0]) == 0  # extremes do not count
    steady = iter([1.0, 1.05, 1.0, 1.0, 1.0])
    assert steady_rounds(lambda i: next(steady), min_rounds=3, max_rounds=9) == [1.0, 1.05, 1.0]
    noisy = iter([1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    figures = steady_rounds(lambda i: next(noisy), min_rounds=3, max_rounds=5)
    assert figures == [1.0, 2.0, 3.0, 1.0, 1.0]
    assert median(figures) == 1.0


def test_the_bench_specs_are_valid(tmp_path: Path) -> None:
    for name, steps in (("with-steps", ["true", f"yes '{log_line()}' | head -c 1"]), ("none", [])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(spec_text(name, ["github.com/bench/a", "github.com/bench/b"], steps))
        spec = load_spec(str(path))
        assert len(spec.steps) == len(steps)
        assert len(spec.on) == 2
    assert len(log_line()) == 1023  # and its newline makes 1 KiB
