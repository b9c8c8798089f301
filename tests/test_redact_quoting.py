"""A value inside the quoted text of a common syntax, as the real tools write it.

Each case has a tool quote a value the way a step, a library or a shell
trace would print it, redacts the output, and reads it back with the same
syntax: the value must not come back, and the marker must be there.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable

import pytest
import yaml

from runner.redact import Redactor, forms_of
from runner.redact.encodings import quoted_forms

# Quotes of both kinds, a backslash, a dollar, a backtick, spaces: every quoting differs.
VALUE = 'it\'s a "pa$$" \\w0rd`x`'
MARKER = "[REDACTED:PW]"


def yaml_single(value: str) -> str:
    return yaml.safe_dump({"password": value}, default_style="'", width=float("inf"))


def yaml_double(value: str) -> str:
    return yaml.safe_dump({"password": value}, default_style='"', width=float("inf"))


def csv_row(value: str) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(["user", value])
    return out.getvalue()


def sql_literal(value: str) -> str:
    # A literal as a SQL client echoes it; nothing here is ever executed.
    return "INSERT INTO creds VALUES ('" + value.replace("'", "''") + "');"  # noqa: S608


def powershell_single(value: str) -> str:
    return "$pw = '" + value.replace("'", "''") + "'"


def powershell_double(value: str) -> str:
    escaped = value.replace("`", "``").replace('"', '`"').replace("$", "`$")
    return f'$pw = "{escaped}"'


def javascript_single(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"const pw = '{escaped}';"


def docker_env_flag(value: str) -> str:
    # A bare backslash before each double quote, as command lines get built.
    return 'docker run -e "PW=' + value.replace('"', '\\"') + '" image'


def json_of_shell_command(value: str) -> str:
    return json.dumps({"command": f"curl -u user:{shlex.quote(value)} https://example.com"})


TOOLS: dict[str, Callable[[str], str]] = {
    "yaml single-quoted": yaml_single,
    "yaml double-quoted": yaml_double,
    "csv": csv_row,
    "sql literal": sql_literal,
    "powershell single-quoted": powershell_single,
    "powershell double-quoted": powershell_double,
    "javascript single-quoted": javascript_single,
    "python shlex.quote": shlex.quote,
    "docker -e with backslash quotes": docker_env_flag,
    "json of a shell command": json_of_shell_command,
    "python repr": repr,
    "json": json.dumps,
}


@pytest.mark.parametrize("tool", TOOLS, ids=str)
def test_a_quoted_value_is_redacted(tool: str) -> None:
    shown = TOOLS[tool](VALUE)
    assert VALUE not in shown  # the quoting changed it
    out = Redactor({"PW": VALUE}).redact(shown)
    assert MARKER in out, out
    for piece in ("pa$$", "w0rd", "it's", "it''s", "it'\\''s"):
        assert piece not in out, (piece, out)


def test_read_back_with_the_same_syntax_gives_no_value() -> None:
    redactor = Redactor({"PW": VALUE})
    assert yaml.safe_load(redactor.redact(yaml_single(VALUE))) == {"password": MARKER}
    assert yaml.safe_load(redactor.redact(yaml_double(VALUE))) == {"password": MARKER}
    assert next(csv.reader(io.StringIO(redactor.redact(csv_row(VALUE))))) == ["user", MARKER]
    assert shlex.split(redactor.redact(shlex.quote(VALUE))) == [MARKER]
    command = json.loads(redactor.redact(json_of_shell_command(VALUE)))["command"]
    assert shlex.split(command)[2] == f"user:{MARKER}"


BASH = shutil.which("bash")


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize(
    "script",
    [
        'printf "%q\\n" "$PW"',  # backslash before every special character
        'echo "${PW@Q}"',  # single quotes, '\'' for each quote
        "declare -p PW",  # double quotes with \" \$ \` \\
        'set -x; : "$PW"',  # the trace a step prints with `set -x`
    ],
)
def test_what_bash_prints_is_redacted(script: str) -> None:
    assert BASH is not None
    proc = subprocess.run(
        [BASH, "-c", script],
        env={"PW": VALUE},
        capture_output=True,
        text=True,
        check=True,
    )
    shown = proc.stdout + proc.stderr
    out = Redactor({"PW": VALUE}).redact(shown)
    assert MARKER in out, shown
    assert "pa" not in out.replace("[REDACTED:PW]", ""), out
    # Read back by bash itself, the redacted text no longer holds the value.
    if script.startswith(("printf", "echo")):
        line = out.strip()
        back = subprocess.run(
            [BASH, "-c", f"printf %s {line}"], capture_output=True, text=True, check=True
        )
        assert VALUE not in back.stdout


def test_quoted_forms_are_only_added_where_the_syntax_changes_the_value() -> None:
    assert quoted_forms("plain-token-1234") == set()
    assert "it''s-a-secret" in quoted_forms("it's-a-secret")
    assert "it'\\''s-a-secret" in quoted_forms("it's-a-secret")


def test_a_value_without_special_characters_gets_no_quoted_forms() -> None:
    # The quoting costs nothing for ordinary tokens (and the benchmark's).
    forms = forms_of("ghp_Zq8xR2mT7vLw0pK4nB9c")
    assert not any(b"\\" in f or b"''" in f or b"`" in f for f in forms)


@pytest.mark.parametrize(
    ("stored", "printed"),
    [
        ('"quoted-in-the-store"', "quoted-in-the-store"),  # a .env line pasted with its quotes
        ("'single-quoted-value'", "single-quoted-value"),
        ("tab\\there\\\\and\\'quote", "tab\there\\and'quote"),  # escapes a shell or parser reads
    ],
    ids=["double-quotes-dropped", "single-quotes-dropped", "escapes-read"],
)
def test_a_value_as_a_shell_or_parser_reads_it(stored: str, printed: str) -> None:
    out = Redactor({"V": stored}).redact(f"value: {printed}!")
    assert out == "value: [REDACTED:V]!"


def test_quotes_dropped_only_when_what_remains_is_a_value() -> None:
    # '"abcdef"' is 8 characters, its inside 6: too short to be a value of its own.
    redactor = Redactor({"V": '"abcdef"'})
    assert redactor.redact("x abcdef y") == "x abcdef y"
    assert redactor.redact('x "abcdef" y') == "x [REDACTED:V] y"
