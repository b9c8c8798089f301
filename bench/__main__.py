"""``python -m bench``: run the suite, write ``bench/results.json``, print the table, regenerate
``BENCHMARKS.md``.

    python -m bench                 # everything (what `make bench` runs)
    python -m bench --quick         # fewer rounds, smaller sizes
    python -m bench --only memory   # one module; the other figures are kept
    python -m bench --render        # rewrite BENCHMARKS.md from results.json

Exits 1 when a module failed (its figures are then null, with the reason).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.common import BenchError, progress, require_image

# name -> (module, the keys of results.json it measures, whether it needs Docker)
MODULES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "redaction": ("bench.bench_redaction", ("redaction_mib_s", "processor_us_per_event"), False),
    "overhead": ("bench.run_overhead", ("step_overhead_ratio", "fixed_overhead_runs"), True),
    "gvisor": ("bench.gvisor", ("gvisor_step_overhead_ratio",), True),
    "cache": ("bench.cache_rerun", ("cached_rerun_vs_validate", "cached_rerun_containers"), True),
    "parallel": ("bench.parallel", ("parallel_efficiency", "parallel_vs_docker_cli"), True),
    "memory": ("bench.memory", ("stream_1gib_rss_growth_mib",), True),
    "logs": ("bench.logs", ("log_mib_s", "log_mib_s_docker_cli"), True),
    "coordinator": (
        "bench.coordinator",
        (
            "coordinator_claims_per_s",
            "coordinator_http_vs_inprocess",
            "coordinator_inprocess_vs_raw_sql",
        ),
        False,
    ),
    "interrupts": ("bench.interrupts", ("interrupt_latency_s",), True),
    "broker": ("bench.broker", ("brokered_request_overhead_ratio",), True),
    "large_repo": (
        "bench.large_repo",
        (
            "large_repo_noop_vs_floor",
            "large_repo_sed_vs_floor",
            "large_repo_rss_growth_mib",
            "large_repo_cached_rerun_vs_validate",
            "many_workspaces_vs_floor",
        ),
        True,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument(
        "--only", action="append", choices=sorted(MODULES), help="run only this module"
    )
    parser.add_argument("--render", action="store_true", help="only regenerate BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=report.RESULTS)
    parser.add_argument("--markdown", type=Path, default=report.MARKDOWN)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        results = json.loads(args.results.read_text())
        write_outputs(results, None, args.markdown)
        return 0
    names = args.only or list(MODULES)
    previous: dict[str, Any] = {}
    if args.only and args.results.exists():
        previous = json.loads(args.results.read_text())
    # The bench is a command line of its own: the services come from its environment.
    options = {
        "coordinator": {
            "postgres_url": os.environ.get("RUNNER_TEST_POSTGRES_URL") or None,
            "require_services": os.environ.get("RUNNER_TEST_REQUIRE_SERVICES") == "1",
        }
    }
    results, failed = run_suite(names, quick=args.quick, previous=previous, options=options)
    write_outputs(results, args.results, args.markdown)
    if failed:
        progress(f"failed: {', '.join(failed)} (see the notes in {args.markdown.name})")
    return 1 if failed else 0


def run_suite(
    names: Sequence[str],
    *,
    quick: bool,
    previous: dict[str, Any] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    load: Callable[[str], Any] = importlib.import_module,
) -> tuple[dict[str, Any], list[str]]:
    """Run the named modules; their figures over ``previous``; the names that failed."""
    start = time.perf_counter()
    base = previous or {}
    figures: dict[str, Any] = {key: base.get(key) for key in report.KEYS}
    notes: dict[str, str] = dict(base.get("notes") or {})
    details: dict[str, Any] = dict(base.get("details") or {})
    failed: list[str] = []
    if any(MODULES[name][2] for name in names):
        require_image()
    for name in names:
        module_name, keys, _ = MODULES[name]
        for key in keys:
            notes.pop(key, None)
        progress(f"{name}: starting")
        began = time.perf_counter()
        try:
            measured = load(module_name).run(quick=quick, **(options or {}).get(name, {}))
        except (BenchError, OSError, RuntimeError, ValueError, ImportError) as exc:
            failed.append(name)
            reason = f"{type(exc).__name__}: {exc}".strip()
            traceback.print_exc(file=sys.stderr)
            for key in keys:
                figures[key] = None
                notes[key] = f"the {name} benchmark failed — {reason[:300]}"
            continue
        for key in keys:
            figures[key] = measured.get(key)
        notes.update(measured.get("notes") or {})
        details[name] = {
            **(measured.get("details") or {}),
            "module_s": round(time.perf_counter() - began, 1),
        }
        progress(f"{name}: done in {time.perf_counter() - began:.0f} s")
    results: dict[str, Any] = {
        **figures,
        "command": "make bench",
        "quick": quick,
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.perf_counter() - start, 1),
        "modules": list(names),
        "machine": report.machine(),
        "notes": notes,
        "details": details,
    }
    return results, failed


def write_outputs(results: dict[str, Any], results_path: Path | None, markdown: Path) -> None:
    if results_path is not None:
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown.write_text(report.markdown(results))
    print(report.table(results, markdown=False))


if __name__ == "__main__":
    sys.exit(main())
