"""runner accepts every real spec written for Sourcegraph, and survives garbage."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import run_cli
from runner.errors import SpecError
from runner.spec import load_spec
from runner.spec.loader import load_spec_text

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "batch-change-examples"
CORPUS_SPECS = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
# Specs that mount files the corpus does not ship, each with the entry that names them.
MOUNTED_NOT_SHIPPED = {
    "utils/add-file/mount-file.batch.yaml": ("utils/add-file/apache.txt", 24, 9),
    "yaml/modify-yaml-mount-file.batch.yaml": ("yaml/update-yaml.rb", 17, 9),
}


@pytest.fixture
def corpus_with_mounted_files(tmp_path: Path) -> Path:
    """A copy of the corpus with the mounted files created empty, as a user would have them."""
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy)
    for mounted, _, _ in MOUNTED_NOT_SHIPPED.values():
        (copy / mounted).touch()
    return copy


def test_the_corpus_is_there() -> None:
    assert len(CORPUS_SPECS) == 52, f"expected 52 corpus specs under {CORPUS}"


@pytest.mark.parametrize("path", CORPUS_SPECS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_spec_is_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name


def test_runner_validate_accepts_the_whole_corpus(
    corpus_with_mounted_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [corpus_with_mounted_files / p.relative_to(CORPUS) for p in CORPUS_SPECS]
    code = run_cli(["validate", *map(str, specs)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.count("ok ") == 52


def test_runner_validate_refuses_the_corpus_specs_whose_mounted_files_are_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_cli(["validate", *map(str, CORPUS_SPECS)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.count("ok ") == 50
    # Long hints wrap at spaces (to the terminal, or 100 columns), so read them unwrapped.
    unwrapped = " ".join(captured.err.split())
    for spec, (mounted, line, column) in MOUNTED_NOT_SHIPPED.items():
        assert f"{CORPUS / spec}:{line}:{column}: steps[1].mount[1]: " in captured.err
        assert f"create {(CORPUS / mounted).resolve()}" in unwrapped  # links followed
    assert "2 of 52 specs invalid" in captured.err


def test_runner_validate_reports_invalid_specs_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nsteps:\n  - run: x\n    contianer: y\n")
    code = run_cli(["validate", str(CORPUS_SPECS[0]), str(bad)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{bad}:4:5: unknown key 'contianer'" in captured.err
    assert "did you mean 'container'" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out.startswith("ok ")


def _mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        i = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op == 1:
            chars.insert(i, rng.choice(":-{}[]&*!|>'\"#\n\t ${}%@`,?"))
        elif op == 2 and chars:
            j = rng.randrange(len(chars))
            chars[j : j + rng.randint(1, 20)] = []
        elif op == 3:
            chars.insert(i, rng.choice(["${{", "}}", "${{ repository.", "\n  - ", ": &a", "*a"]))
        else:
            line_start = text.rfind("\n", 0, i) + 1
            chars[i:i] = list(text[line_start:i])
    return "".join(chars)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32), index=st.integers(min_value=0, max_value=51))
def test_mutated_corpus_specs_never_crash(seed: int, index: int) -> None:
    text = CORPUS_SPECS[index].read_text()
    mutated = _mutate(text, random.Random(seed))
    try:
        load_spec_text(mutated, "mutated.yaml")
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(data)
    try:
        load_spec(path)
    except SpecError as exc:
        assert exc.problems


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*! \n'\"|>$#")), max_size=300))
def test_random_yaml_like_text_never_crashes(text: str) -> None:
    try:
        load_spec_text(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(SpecError, match="nest"):
        load_spec_text("name: a\ndescription: " + "[" * 3000 + "]" * 3000 + "\n", "deep.yaml")
    with pytest.raises(SpecError):
        load_spec_text(
            "name: a\nx:\n" + "".join("  " * i + "- \n" for i in range(400)), "deep2.yaml"
        )


def test_huge_strings_are_fine_or_refused_cleanly() -> None:
    spec = load_spec_text("name: a\ndescription: " + "x" * 2_000_000 + "\n", "huge.yaml")
    assert len(spec.description) == 2_000_000
    with pytest.raises(SpecError, match="larger than"):
        load_spec_text("name: a\ndescription: " + "x" * 9_000_000 + "\n", "huger.yaml")


def test_validate_subprocess_prints_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x00\x01garbage: [")
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
