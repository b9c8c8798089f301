"""`runner validate`: check batch specs without running anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runner.cli._app import cli, common_options
from runner.errors import Problem
from runner.spec.loader import check_spec_bytes, check_spec_file
from runner.spec.validate import SpecCheck


def _check(path: str) -> SpecCheck:
    """The spec checked with its mounts; ``-`` is stdin, whose mounts are relative to the cwd."""
    if path != "-":
        return check_spec_file(path, check_mounts=True)
    cwd = Path.cwd()
    sys.stderr.write(
        f"note: the spec comes from stdin, so its mount paths are relative to the current "
        f"folder, {cwd}\n"
    )
    return check_spec_bytes(sys.stdin.buffer.read(), "<stdin>", mount_root=cwd)


def _report(check: SpecCheck) -> None:
    """Problems and warnings on stderr, in file order; a warning's line says so."""
    lines = [(p, "") for p in check.problems] + [(w, "warning: ") for w in check.warnings]
    for problem, prefix in sorted(lines, key=lambda x: (x[0].path, x[0].line, x[0].column)):
        sys.stderr.write(f"{prefix}{problem}\n")


def _as_json(problems: list[Problem]) -> list[dict[str, object]]:
    return [{"line": p.line, "column": p.column, "message": p.message} for p in problems]


@cli.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@common_options
def validate_cmd(specs: tuple[str, ...], as_json: bool) -> int:
    """Check batch specs: schema, rules, templates, mounts and queries, every problem at once.

    Problems go to stderr as FILE:LINE:COL: message; an OK line per valid spec
    goes to stdout. Exits 1 when any spec is invalid. `-` reads a spec from
    stdin; its mount paths are then relative to the current folder.

    Each repositoriesMatchingQuery is parsed as `runner run` parses it: a
    malformed query is a problem; one that Sourcegraph accepts but runner
    cannot evaluate locally (patterntype:structural, repo:has.file(...)) is a
    `warning: FILE:LINE:COL:` line, and the spec stays valid.
    """
    results = []
    failed = False
    for path in specs:
        check = _check(path)
        _report(check)
        spec = check.spec
        if check.problems or spec is None:
            failed = True
            results.append(
                {
                    "path": path,
                    "valid": False,
                    "problems": _as_json(check.problems),
                    "warnings": _as_json(check.warnings),
                }
            )
            continue
        results.append(
            {"path": path, "valid": True, "problems": [], "warnings": _as_json(check.warnings)}
        )
        if not as_json:
            steps = len(spec.steps)
            click.echo(f"ok {path} ({spec.name}: {steps} step{'s' if steps != 1 else ''})")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failed:
        invalid = sum(1 for r in results if not r["valid"])
        sys.stderr.write(
            f"error: {invalid} of {len(specs)} spec{'s' if len(specs) != 1 else ''} invalid"
            " — fix the problems above and run `runner validate` again\n"
        )
    return 1 if failed else 0
