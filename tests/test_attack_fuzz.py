"""Fuzzing: the spec loader and validator, the template engine, the redactor.

No input may produce a traceback, a hang or unbounded memory: the loader
answers ``SpecError`` (with positions), the template engine ``TemplateError``,
and the redactor never raises for text and lets no registered form through.
Alongside the property tests, hand-made hostile inputs (YAML alias bombs,
deep nesting, huge documents, output explosions) are checked against time
and memory bounds. The last section records, as tests, what the redactor
does *not* promise: encodings outside its registered set pass through.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import itertools
import json
import multiprocessing
import random
import re
import resource
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import SecretValidationError, SpecError, TemplateError
from runner.redact import Redactor, forms_of
from runner.spec.loader import load_spec, load_spec_text
from runner.spec.template import parse_template, render_template
from tests.attack_support import RUNNER

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "batch-change-examples"
CORPUS_SPECS = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


@contextmanager
def bounded(seconds: float, mib: int) -> Iterator[None]:
    """The block must finish within ``seconds`` and allocate at most ``mib`` MiB at peak.

    For small inputs only: tracemalloc slows PyYAML down twentyfold.
    """
    tracemalloc.start()
    start = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] >> 20
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.1f}s (bound {seconds}s)"
    assert peak <= mib, f"peaked at {peak} MiB (bound {mib} MiB)"


@dataclass
class ChildResult:
    outcome: str  # "ok", the exception's class name, or "killed"
    message: str
    seconds: float
    grown_mib: int  # how far the child's peak RSS grew above where it started


def _child(conn: Any, fn: Callable[[], object], limit_mib: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    try:
        fn()
        outcome, message = "ok", ""
    except BaseException as exc:
        outcome, message = type(exc).__name__, str(exc)[:2000]
    elapsed = time.monotonic() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10
    conn.send((outcome, message, elapsed, grown))
    conn.close()


def in_child(fn: Callable[[], object], *, timeout: float, limit_mib: int = 3072) -> ChildResult:
    """Run ``fn`` in a forked child under a memory limit; measure its time and peak memory."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, limit_mib), daemon=True)
    start = time.monotonic()
    proc.start()
    child.close()
    try:
        if parent.poll(timeout):
            outcome, message, elapsed, grown = parent.recv()
            return ChildResult(outcome, message, elapsed, grown)
        return ChildResult("killed", f"no answer within {timeout}s", time.monotonic() - start, -1)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        parent.close()


def load_in_child(text: str, *, timeout: float = 30) -> ChildResult:
    return in_child(lambda: load_spec_text(text, "hostile.yaml"), timeout=timeout)


def spec_error(text: str) -> SpecError | None:
    """Load ``text``; a SpecError is returned, anything else but success raises."""
    try:
        load_spec_text(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1 and problem.message
        return exc
    return None


def limited(mib: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))

    return apply


def child_peak_rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10


# == The spec loader and validator ===========================================================

BILLION_LAUGHS = (
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(9)
    )
    + "name: x\n"
)
MERGE_BOMB = (
    "a0: &a0 {k: v}\n"
    + "".join(f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: v}}\n" for i in range(1, 40))
    + "name: x\n"
)
BOMBS = {
    "billion laughs": BILLION_LAUGHS,
    "merge keys": MERGE_BOMB,
    "self-referencing sequence": "name: a\nx: &a [*a, *a]\n",
    "self-referencing mapping": "name: a\nx: &a {k: *a, j: *a}\n",
    "aliases as keys": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"b{i}: &b{i} {{*a : [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]}}\n" for i in range(1))
    + "c: &c ["
    + ", ".join(["*b0"] * 50)
    + "]\n"
    + "d: ["
    + ", ".join(["*c"] * 100)
    + "]\nname: x\n",
    "bomb inside a step": "name: x\nsteps:\n  - run: x\n    container: y\n    env:\n"
    "      A: &a [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a]\n"
    "      B: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "      C: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "      D: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "      E: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
}


@pytest.mark.parametrize("text", BOMBS.values(), ids=list(BOMBS))
def test_alias_bombs_are_refused_quickly_in_little_memory(text: str) -> None:
    result = load_in_child(text)
    assert result.outcome == "SpecError" and "alias" in result.message, result
    assert result.seconds < 1 and result.grown_mib < 64, result


NESTING = {
    "flow sequences": "name: a\nx: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "unclosed flow sequences": "name: a\nx: " + "[" * 1_000_000 + "\n",
    "flow mappings": "name: a\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "block sequences": "name: a\nx:\n" + "".join("  " * i + "-\n" for i in range(1500)),
    "block mappings": "name: a\n" + "".join("  " * i + f"k{i}:\n" for i in range(1500)),
    "mixed": "name: a\nx: " + "[{a: " * 3000 + "1" + "}]" * 3000 + "\n",
}


@pytest.mark.parametrize("text", NESTING.values(), ids=list(NESTING))
def test_deep_nesting_is_refused_quickly(text: str) -> None:
    result = load_in_child(text)
    assert result.outcome == "SpecError", result
    assert "nest" in result.message or "larger than" in result.message
    assert result.seconds < 3, result
    assert result.grown_mib < 200, result


ODD_DOCUMENTS = {
    "python object tag": ("name: !!python/object/apply:os.system ['true']\n", "not allowed"),
    "python name tag": ("name: !!python/name:os.system\n", "not allowed"),
    "binary tag": ("name: !!binary aGVsbG8=\n", "not allowed"),
    "timestamp tag": ("name: !!timestamp 2001-12-14\n", "not allowed"),
    "set tag": ("name: a\nx: !!set {a, b}\n", "not allowed"),
    "local tag": ("name: !foo a\n", "not allowed"),
    "tag directive": ("%TAG !e! tag:example.com,2000:\n---\nname: !e!x a\n", "not allowed"),
    "two documents": ("name: a\n---\nname: b\n", "invalid YAML"),
    "huge integer": ("name: a\nversion: " + "9" * 100_000 + "\n", ""),
    "infinite float": ("name: a\nversion: 1e99999\n", "version must be"),
    "nan": ("name: a\nversion: .nan\n", "version must be"),
    "control character": ("name: a\x07b\n", "invalid YAML"),
    "lone surrogate": ("name: a\ndescription: x\ud800y\n", "invalid YAML"),
    "NEL and LS separators": ("name: a\u0085\u2028b\n", ""),
    "key of a million characters": ("k" * 1_000_000 + ": v\nname: a\n", "invalid YAML"),
    "complex key": ("? [a, b]\n: 1\nname: a\n", "must be a scalar"),
    "duplicate keys": ("name: a\nname: b\n", "duplicate key"),
    "null document": ("~\n", ""),
    "scalar document": ("just text\n", ""),
    "list document": ("- a\n- b\n", ""),
    "empty document": ("", ""),
    "BOM in the middle": ("name: a\ufeffb\n", ""),
    "template garbage": (
        "name: a\nsteps:\n  - run: ${{ ${{ }} }} ${{ (((( }}\n    container: x\n"
        "changesetTemplate: {title: '${{ .. }}', body: b, branch: c, commit: {message: m}}\n",
        "",
    ),
}


@pytest.mark.parametrize(("text", "says"), ODD_DOCUMENTS.values(), ids=list(ODD_DOCUMENTS))
def test_odd_documents_get_a_clear_error(text: str, says: str) -> None:
    result = load_in_child(text)
    assert result.outcome in ("ok", "SpecError"), result
    assert result.seconds < 3 and result.grown_mib < 200, result
    if says:
        assert result.outcome == "SpecError" and says in result.message, result
    spec_error(text)  # and in this process: positions are sane


def test_a_huge_scalar_is_not_echoed_whole_in_the_error() -> None:
    err = spec_error("name: a\nversion: " + "9" * 100_000 + "\n")
    assert err is not None and "not a valid int" in str(err)
    assert len(str(err)) < 1000


def test_a_spec_just_under_the_size_limit_is_handled() -> None:
    text = "name: a\ndescription: " + "x" * (8 * 1024 * 1024 - 100) + "\n"
    result = load_in_child(text)
    assert result.outcome == "ok", result
    assert result.seconds < 20 and result.grown_mib < 400, result
    result = load_in_child(text + "x" * 200)
    assert result.outcome == "SpecError" and "larger than" in result.message, result
    assert result.seconds < 2, result


def test_a_document_of_a_million_values_is_refused_quickly(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    spec.write_text("name: a\nx: [" + ",".join(["1"] * 1_000_000) + "]\n")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [RUNNER, "validate", str(spec)],
            capture_output=True,
            text=True,
            timeout=8,
            preexec_fn=limited(1536),
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("runner validate took more than 8 s to refuse a 2 MB spec")
    assert time.monotonic() - start < 8
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "200000 values" in proc.stderr


# -- property tests ----------------------------------------------------------------------------

SPEC_KEYS = [
    "version", "name", "description", "on", "workspaces", "steps", "transformChanges",
    "importChangesets", "changesetTemplate", "run", "container", "env", "files", "outputs",
    "mount", "if", "repository", "repositoriesMatchingQuery", "branch", "branches", "title",
    "body", "commit", "message", "author", "email", "published", "rootAtLocationOf", "in",
    "onlyFetchWorkspace", "value", "format", "path", "mountpoint", "group", "directory",
    "externalIDs", "<<", "",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["${{ repository.name }}", "${{ outputs.x }}", "${{", "}}", "draft", "text", "json",
         "yaml", "/abs", "rel", "a,b", "2", "1", "github.com/a/b", "*", "x" * 300]
    ),
    st.text(max_size=40),
)  # fmt: skip
KEYS = st.one_of(st.sampled_from(SPEC_KEYS), st.text(max_size=10))
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(KEYS, children, max_size=6),
    ),
    max_leaves=40,
)


@FUZZ
@given(
    tree=st.dictionaries(st.sampled_from(SPEC_KEYS[:9]), TREES, min_size=1, max_size=9),
    style=st.sampled_from([None, '"', "'", "flow"]),
)
def test_random_spec_shaped_documents_never_crash(tree: dict[str, Any], style: str | None) -> None:
    if style == "flow":
        text = yaml.safe_dump(tree, default_flow_style=True, allow_unicode=True)
    else:
        text = yaml.safe_dump(tree, default_style=style, allow_unicode=True, sort_keys=False)
    with bounded(seconds=5, mib=100):
        spec_error(text)


def _mutate_tree(node: Any, rng: random.Random, depth: int = 0) -> Any:
    """Replace, drop, retype or duplicate parts of a parsed spec."""
    choice = rng.random()
    if isinstance(node, dict) and node:
        out = dict(node)
        for key in list(out):
            if rng.random() < 0.3:
                out[key] = _mutate_tree(out[key], rng, depth + 1)
        if choice < 0.2:
            out.pop(rng.choice(list(out)), None)
        elif choice < 0.35:
            out[rng.choice(SPEC_KEYS)] = rng.choice([None, 1, "x", [], {}, ["a"], {"a": 1}])
        return out
    if isinstance(node, list) and node:
        out_list = [_mutate_tree(v, rng, depth + 1) if rng.random() < 0.3 else v for v in node]
        if choice < 0.2:
            out_list.append(rng.choice(out_list))
        elif choice < 0.3:
            out_list.pop(rng.randrange(len(out_list)))
        return out_list
    if choice < 0.15:
        return rng.choice([None, True, 0, -1, 2**64, 1.5, "", "${{", [node], {"k": node}])
    if choice < 0.3 and isinstance(node, str):
        cut = rng.randrange(len(node) + 1)
        return node[:cut] + rng.choice(["${{ ", " }}", "${{ outputs.", "\x00", "\n", "'", '"'])
    return node


@FUZZ
@given(index=st.integers(0, 51), seed=st.integers(0, 2**32))
def test_structurally_mutated_corpus_specs_never_crash(index: int, seed: int) -> None:
    source = yaml.safe_load(CORPUS_SPECS[index % len(CORPUS_SPECS)].read_text())
    mutated = _mutate_tree(source, random.Random(seed))
    text = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
    with bounded(seconds=5, mib=100):
        spec_error(text)


@FUZZ
@given(st.text(max_size=300))
def test_any_unicode_text_never_crashes(text: str) -> None:
    spec_error(text)
    spec_error("name: a\ndescription: " + text + "\n")


@FUZZ
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"name: a\n"]))
def test_any_bytes_from_a_file_never_crash(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(prefix + data)
    try:
        load_spec(path)
    except SpecError as exc:
        assert exc.problems


HOSTILE_FILES: dict[str, bytes] = {
    "bomb": BILLION_LAUGHS.encode(),
    "deep": ("name: a\nx: " + "[" * 50_000 + "\n").encode(),
    "binary": bytes(range(256)) * 4,
    "utf16": "name: a\n".encode("utf-16"),
    "nul": b"name: a\x00\n",
    "python": b"name: !!python/object/apply:os.system ['echo pwned']\n",
    "huge": b"name: a\ndescription: " + b"x" * (9 * 1024 * 1024) + b"\n",
}


def test_runner_validate_refuses_hostile_files_with_one_line(tmp_path: Path) -> None:
    paths = []
    for name, data in HOSTILE_FILES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        paths.append(path)
    for path in paths:
        start = time.monotonic()
        proc = subprocess.run(
            [RUNNER, "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=limited(1536),
        )
        assert proc.returncode == 1, (path.name, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert f"{path}:" in proc.stderr and "error:" in proc.stderr
        assert time.monotonic() - start < 15, path.name
    assert not (tmp_path / "pwned").exists()


# == The template engine =======================================================================

CONTEXT: dict[str, Any] = {
    "repository": {"name": "github.com/a/b", "branch": "main", "search_result_paths": ["x.go"]},
    "batch_change": {"name": "n", "description": "d"},
    "previous_step": {"modified_files": ["a", "b"], "stdout": "out\nput", "stderr": ""},
    "steps": {"modified_files": [], "path": ""},
    "outputs": {"s": "text", "n": 3, "l": ["x", "y"], "m": {"k": "v"}, "nil": None, "f": 1.5},
}
ROOTS = sorted(CONTEXT)

_ATOMS = st.sampled_from(
    [
        ".", "$", "nil", "true", "false", "0", "-1", "3", "1.5", "1e3", "0x1F", "'a'",
        '"s"', '"a,b"', '""', "`raw`", "$x", "$i", "$e",
        "repository.name", "repository", "outputs.s", "outputs.n", "outputs.l", "outputs.m",
        "outputs.m.k", "outputs.nil", "outputs.missing", "previous_step.modified_files",
        "previous_step.stdout", "steps.path", ".outputs.l", "$.outputs.m", "batch_change",
    ]
)  # fmt: skip
_FUNCS = st.sampled_from(
    ["and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
     "urlquery", "eq", "ne", "lt", "le", "gt", "ge", "join", "split", "replace", "join_if",
     "matches", "call"]
)  # fmt: skip


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 3 if depth < 3 else 0))
    if kind == 0:
        return draw(_ATOMS)
    if kind == 1:
        args = draw(st.lists(expressions(depth + 1), max_size=3))
        return " ".join([draw(_FUNCS), *args])
    if kind == 2:
        return f"({draw(expressions(depth + 1))})"
    return f"{draw(expressions(depth + 1))} | {draw(_FUNCS)}"


@st.composite
def templates(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5 if depth < 3 else 1))
        expr = draw(expressions())
        if kind == 0:
            parts.append(draw(st.text(alphabet="ab {}$\n", max_size=5)))
        elif kind == 1:
            parts.append("${{ " + expr + " }}")
        elif kind == 2:
            parts.append("${{ $x := " + expr + " }}${{ $x }}")
        else:
            block = draw(st.sampled_from(["if", "with", "range", "range $i, $e :="]))
            body = draw(templates(depth + 1))
            other = draw(st.one_of(st.none(), templates(depth + 1)))
            tail = "" if other is None else "${{ else }}" + other
            parts.append("${{ " + block + " " + expr + " }}" + body + tail + "${{ end }}")
    trim = draw(st.booleans())
    text = "".join(parts)
    return text.replace("${{ ", "${{- ").replace(" }}", " -}}") if trim else text


@FUZZ
@given(templates())
def test_well_formed_random_templates_render_or_raise_template_error(text: str) -> None:
    with bounded(seconds=2, mib=50):
        try:
            out = render_template(text, CONTEXT)
        except TemplateError as exc:
            assert exc.message and "Traceback" not in exc.message
        else:
            assert isinstance(out, str)
        with suppress(TemplateError):
            parse_template(text, ROOTS).references()


def test_printf_widths_are_bounded_like_go() -> None:
    with bounded(seconds=1, mib=20):
        out = render_template('${{ printf "%999999999d|%.999999999f" 1 1.5 }}', {})
    assert len(out) < 100


EXPLOSIONS = {
    # Each is a few hundred bytes of spec that asks for gigabytes of output.
    "nested ranges": '${{ range split batch_change.description "" }}'
    '${{ range split batch_change.description "" }}'
    '${{ range split batch_change.description "" }}xxxxxxxxxx${{ end }}${{ end }}${{ end }}',
    "printf width in a range": '${{ range split batch_change.description "" }}'
    '${{ printf "%999999d" 1 }}${{ end }}',
    "replace of replace": "${{ $d := batch_change.description }}"
    '${{ replace (replace $d "a" $d) "a" $d }}',
}


@pytest.mark.parametrize("template", EXPLOSIONS.values(), ids=list(EXPLOSIONS))
def test_template_output_is_bounded(template: str, tmp_path: Path) -> None:
    spec = tmp_path / "explode.yaml"
    spec.write_text(
        f"name: explode\ndescription: {'a' * 1500}\non:\n  - repository: github.com/a/b\n"
        "steps:\n  - run: echo\n    container: alpine\n    env:\n"
        f"      BOMB: '{template}'\n"
        "changesetTemplate: {title: t, body: b, branch: b, commit: {message: m}}\n"
    )
    try:
        proc = subprocess.run(
            [RUNNER, "env", "explain", str(spec), "--json"],
            capture_output=True,
            text=True,
            timeout=10,
            preexec_fn=limited(1024),
            env={"RUNNER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("rendering did not stop within 10 s")
    assert "MemoryError" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    assert len(proc.stdout) < 16 * 1024 * 1024
    assert "BOMB" in proc.stdout + proc.stderr


# == The redactor ============================================================================

MARKERS_RE = re.compile(rb"\[REDACTED(?::[^\]]*)?\]|\*\*\*\*\*")


def surviving(values: list[str], data: bytes) -> list[bytes]:
    rest = MARKERS_RE.sub(b"\0", data)
    return [f for v in values for f in forms_of(v) if f in rest]


def stream_through(redactor: Redactor, data: bytes, cuts: list[int]) -> tuple[bytes, int]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    stream = redactor.stream()
    out = []
    held = 0
    for a, b in itertools.pairwise(bounds):
        out.append(stream.feed(data[a:b]))
        held = max(held, stream.held)
    return b"".join(out) + stream.flush(), held


ANY_VALUE = st.text(min_size=8, max_size=24).filter(
    lambda v: len(v.encode("utf-8", "surrogatepass")) >= 8
)


@FUZZ
@given(
    values=st.lists(ANY_VALUE, min_size=1, max_size=3),
    noise=st.binary(max_size=200),
    data=st.data(),
)
def test_raw_secret_bytes_in_binary_noise_never_survive(
    values: list[str], noise: bytes, data: st.DataObject
) -> None:
    secrets = {f"S{i}": v for i, v in enumerate(values)}
    redactor = Redactor(secrets)
    pieces = [noise]
    for _ in range(data.draw(st.integers(1, 4))):
        value = data.draw(st.sampled_from(values))
        encode = data.draw(
            st.sampled_from(
                [
                    lambda v: v.encode("utf-8", "surrogatepass"),
                    lambda v: base64.b64encode(b"\xff" + v.encode("utf-8", "surrogatepass")),
                    lambda v: v.encode("utf-8", "surrogatepass").hex().encode(),
                    lambda v: json.dumps(v).encode(),
                ]
            )
        )
        pieces += [encode(value), data.draw(st.binary(max_size=20))]
    blob = b"".join(pieces)
    out = redactor.redact_bytes(blob)
    assert surviving(values, out) == []
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
    streamed, held = stream_through(redactor, blob, cuts)
    assert surviving(values, streamed) == []
    bounds = [0, *sorted(cuts), len(blob)]
    biggest = max(b - a for a, b in itertools.pairwise(bounds))
    assert held <= redactor.hold_back + biggest
    # Redacting again changes nothing: a marker never spells a form.
    assert redactor.redact_bytes(out) == out


@FUZZ
@given(value=st.text(max_size=24), text=st.text(max_size=200))
def test_any_value_is_accepted_or_refused_cleanly_and_text_never_raises(
    value: str, text: str
) -> None:
    try:
        redactor = Redactor({"V": value})
    except SecretValidationError as exc:
        if "is shorter than" in str(exc):
            # The refusal of a short value does not depend on the value at all (a short
            # value such as "al" can still be a substring of the fixed words).
            with pytest.raises(SecretValidationError) as fixed:
                Redactor({"V": "#"})
            assert str(exc) == str(fixed.value)
        else:
            assert value not in str(exc) or len(value) < 2
        return
    out = redactor.redact(text + value + text)
    assert isinstance(out, str)
    assert surviving([value], out.encode("utf-8", "surrogatepass")) == []
    assert redactor.redact(out) == out


@FUZZ
@given(value=ANY_VALUE, how=st.sampled_from(["same", "b64", "prefix", "marker"]))
def test_a_name_that_spells_the_value_does_not_show_it(value: str, how: str) -> None:
    raw = value.encode("utf-8", "surrogatepass")
    name = {
        "same": value,
        "b64": base64.b64encode(raw).decode(),
        "prefix": value + "_NAME",
        "marker": f"]{value}[REDACTED:",
    }[how]
    redactor = Redactor({name: value})
    out = redactor.redact_bytes(b"<" + raw + b">")
    assert surviving([value], out) == []


def test_many_secrets_and_megabytes_of_output_stay_fast_and_small() -> None:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789/+="
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(8, 64))) for _ in range(300)]
    with bounded(seconds=10, mib=200):
        redactor = Redactor({f"S{i}": v for i, v in enumerate(values)})
    chunk = ("".join(rng.choice(alphabet + " \n") for _ in range(4096))).encode()
    blob = chunk * 1024 + values[5].encode() + chunk  # 4 MiB, one secret near the end
    with bounded(seconds=10, mib=64):
        stream = redactor.stream()
        out = bytearray()
        held = 0
        for start in range(0, len(blob), 65536):
            out += stream.feed(blob[start : start + 65536])
            held = max(held, stream.held)
        out += stream.flush()
    assert values[5].encode() not in out and b"[REDACTED:S5]" in out
    assert held <= redactor.hold_back + 65536


# -- what redaction does not promise -----------------------------------------------------------

LIMIT_VALUE = "limit-canary-0123456789"


@pytest.mark.parametrize(
    ("transform", "why"),
    [
        (lambda v: v[::-1], "reversed"),
        (lambda v: v[:11] + "\n" + v[11:], "split across lines"),
        (lambda v: " ".join(v), "spaced out"),
        (lambda v: codecs.encode(v, "rot13"), "rot13"),
        (lambda v: gzip.compress(v.encode()).hex(), "compressed then hex"),
        (lambda v: v.encode().hex(" "), "hex with spaces"),
        (lambda v: v.upper(), "case changed"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_transformations_outside_the_registered_forms_pass_through(
    transform: Callable[[str], str], why: str
) -> None:
    """Recorded limits: redaction matches registered forms, not every function of a value.

    A step that transforms a secret before printing it defeats it, as in any
    redactor (Sourcegraph calls its own best-effort). The diff check and the
    changeset check use the same matcher, so the same holds there.
    """
    shown = transform(LIMIT_VALUE)
    assert not any(f in shown.encode() for f in forms_of(LIMIT_VALUE))
    assert Redactor({"V": LIMIT_VALUE}).redact(shown) == shown, why


# == Hostile step outputs ======================================================================

DEEP = "head -c 40000 /dev/zero | tr '\\0' '['; echo; head -c 40000 /dev/zero | tr '\\0' ']'"
LAUGHS_SCRIPT = "cat <<'EOF'\n" + BILLION_LAUGHS + "EOF"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("fmt", "script"),
    [
        pytest.param("json", DEEP, id="json nested 40000 deep"),
        pytest.param("yaml", DEEP, id="yaml nested 40000 deep"),
        pytest.param("yaml", LAUGHS_SCRIPT, id="yaml alias bomb"),
        pytest.param("json", "printf '1%.0s' $(seq 1 5000)", id="json 5000-digit number"),
    ],
)
def test_hostile_step_outputs_fail_the_workspace_cleanly(
    tmp_path: Path, fmt: str, script: str, docker_client: Any
) -> None:
    from tests.attack_support import base_env, events_of, run_cli
    from tests.helpers import make_repo

    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "x\n"})
    spec = tmp_path / "out.yaml"
    spec.write_text(
        "name: outputs\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: {json.dumps(script)}\n    container: runner-test/busybox:latest\n"
        f"    outputs:\n      hostile:\n        value: '${{{{ step.stdout }}}}'\n        format: {fmt}\n"
        "changesetTemplate: {title: t, body: b, branch: b, commit: {message: m}}\n"
    )
    (tmp_path / "tmp").mkdir()
    env = base_env(
        RUNNER_HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"), RUNNER_USER="a"
    )
    proc = run_cli(
        ["run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "o"), "--json"], env
    )
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr + proc.stdout
    (finished,) = [e for e in events_of(proc.stdout) if e["event"] == "workspace.finished"]
    if finished["status"] == "failed":
        assert proc.returncode == 3
        assert f"output hostile is not valid {fmt}" in finished["error"], finished["error"]
    else:
        assert proc.returncode == 0, proc.stderr
