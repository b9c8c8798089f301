"""`runner validate`: check batch specs without running anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runner.cli._app import cli, common_options
from runner.errors import SpecError
from runner.spec import BatchSpec, load_spec
from runner.spec.loader import load_spec_bytes


def _load(path: str) -> BatchSpec:
    """The spec with its mounts checked; ``-`` is stdin, whose mounts are relative to the cwd."""
    if path != "-":
        return load_spec(path, check_mounts=True)
    cwd = Path.cwd()
    sys.stderr.write(
        f"note: the spec comes from stdin, so its mount paths are relative to the current "
        f"folder, {cwd}\n"
    )
    return load_spec_bytes(sys.stdin.buffer.read(), "<stdin>", mount_root=cwd)


@cli.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON document.")
@common_options
def validate_cmd(specs: tuple[str, ...], as_json: bool) -> int:
    """Check batch specs: schema, rules, templates and mounts, every problem at once.

    Problems go to stderr as FILE:LINE:COL: message; an OK line per valid spec
    goes to stdout. Exits 1 when any spec is invalid. `-` reads a spec from
    stdin; its mount paths are then relative to the current folder.
    """
    results = []
    failed = False
    for path in specs:
        try:
            spec = _load(path)
        except SpecError as exc:
            failed = True
            results.append(
                {
                    "path": path,
                    "valid": False,
                    "problems": [
                        {"line": p.line, "column": p.column, "message": p.message}
                        for p in exc.problems
                    ],
                }
            )
            for problem in exc.problems:
                sys.stderr.write(f"{problem}\n")
            continue
        results.append({"path": path, "valid": True, "problems": []})
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
