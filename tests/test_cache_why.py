"""`runner cache why`: named inputs per entry, tombstones, and the differences a miss shows.

The differences and the choice of the closest entry are pure (no store); the
tombstones a secret change leaves run against SQLite and PostgreSQL. The env
lint and the workspace preview's `if:` rule are pure too and live here, with
the other unit tests of the developer's loop (tests/test_devloop.py has the
end-to-end ones on the real engine).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.cache import (
    CacheEntry,
    StepKeyInput,
    WorkspaceKeyInput,
    prefix_secret_refs,
    step_keys,
)
from runner.cache.sql import SqlStepCache, invalidate_after_secret_change, open_cache
from runner.cache.why import (
    Candidate,
    WorkspaceWhy,
    closest,
    differences,
    explain_steps,
    named_inputs,
)
from runner.config import Settings
from runner.env import EnvPlan, PlannedVar, Provenance
from runner.env_lint import lint, mentions
from runner.plan import Workspace
from runner.preview import preview
from runner.secrets.models import SecretMeta
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from runner.spec.loader import load_spec_text
from tests import test_secrets_support as support
from tests.helpers import leak_forms, run_runner, runner_env, scan_bytes, set_secret
from tests.test_cache_contract import entry
from tests.test_cache_contract import workspace_key as _workspace

backend = support.backend
keyring = support.keyring
sql_store = support.sql_store

VALUE = "why-test-secret-value-0123"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ref:
    """A secret's reference or metadata, as far as keys and the lint read it."""

    id: str
    name: str
    namespace: str
    version: int = 1
    overrides_global: bool = False


def _secret(name: str, version: int, namespace: str = "user:alice", sid: str = "s1") -> PlannedVar:
    prov = Provenance("secret", namespace=namespace, secret_id=sid, version=version)
    return PlannedVar(1, name, prov, secret=Ref(sid, name, namespace, version))


def _step(
    run: str = "echo hi",
    *,
    image: str = "sha256:" + "aa" * 32,
    files: dict[str, str] | None = None,
    mounts: dict[str, str] | None = None,
    env: tuple[PlannedVar, ...] = (),
) -> StepKeyInput:
    definition = {"run": run, "container": "tools:latest"}
    return StepKeyInput(definition, image, files or {}, mounts or {}, env)


def _named(*steps: StepKeyInput, tree: str = "t1") -> dict[str, object]:
    ws = replace(_workspace("user:alice"), base_tree=tree)
    return named_inputs(ws, steps, len(steps))


# Differences ---------------------------------------------------------------------------------


def test_each_kind_of_input_is_named_with_what_it_was_and_is() -> None:
    was = _named(
        _step(
            env=(_secret("API_KEY", 1),), files={"/f.txt": "a" * 64}, mounts={"/mnt/m": "b" * 64}
        ),
        _step("make", image="sha256:" + "11" * 32),
        tree="tree-one",
    )
    now = _named(
        _step(
            env=(_secret("API_KEY", 2),), files={"/f.txt": "c" * 64}, mounts={"/mnt/m": "d" * 64}
        ),
        _step("make all", image="sha256:" + "22" * 32),
        tree="tree-two",
    )
    found = [(d.input, d.name, d.was, d.now, d.step) for d in differences(was, now)]
    assert found == [
        ("base_tree", "github.com/acme/app", "tree-one", "tree-two", None),
        ("file", "/f.txt", "a" * 12, "c" * 12, 1),
        ("mount", "/mnt/m", "b" * 12, "d" * 12, 1),
        ("secret", "API_KEY", "v1", "v2", 1),
        ("step", "step 2", found[4][2], found[4][3], 2),
        ("image", "tools:latest", "sha256:111111111111", "sha256:222222222222", 2),
    ]
    assert found[4][2] != found[4][3]


def test_a_secret_difference_says_the_change_that_dropped_its_entry() -> None:
    was = _named(_step(env=(_secret("API_KEY", 1),)))
    now = _named(_step(env=(_secret("API_KEY", 2),)))
    [diff] = differences(was, now)
    assert diff.text("secret set") == "secret API_KEY v1 → v2 (invalidated by secret set)"
    assert diff.as_json() == {
        "input": "secret",
        "name": "API_KEY",
        "was": "v1",
        "now": "v2",
        "step": 1,
    }


def test_an_override_shows_both_namespaces_and_a_literal_turned_secret_shows_both_sources() -> None:
    literal = PlannedVar(1, "API_KEY", Provenance("literal"), text="plain")
    was = _named(_step(env=(_secret("TOKEN", 3, "global", "g1"), literal)))
    now = _named(_step(env=(_secret("TOKEN", 1, "user:alice", "u1"), _secret("API_KEY", 4))))
    texts = [d.text() for d in differences(was, now)]
    assert texts[0].startswith("env API_KEY literal ")
    assert texts[0].endswith(" → secret API_KEY user:alice v4")
    assert texts[1] == "secret TOKEN global v3 → user:alice v1"


def test_named_inputs_hold_names_and_hashes_never_a_literal_or_value() -> None:
    literal = PlannedVar(1, "GREETING", Provenance("literal"), text="hello-literal-text")
    named = str(_named(_step("echo $GREETING", env=(literal, _secret("API_KEY", 1)))))
    assert "hello-literal-text" not in named
    assert "echo $GREETING" not in named  # the step's text is content: hashed
    assert "API_KEY" in named and "'version': 1" in named


def test_the_closest_candidate_has_the_fewest_differences_then_is_the_newest() -> None:
    now = _named(_step(env=(_secret("API_KEY", 2),)))
    far = Candidate(_named(_step("other", env=(_secret("API_KEY", 1),))), T0)
    near_old = Candidate(_named(_step(env=(_secret("API_KEY", 1),))), T0, "secret set")
    near_new = Candidate(_named(_step(env=(_secret("API_KEY", 1),))), T0 + timedelta(1), "x")
    assert closest(now, []) is None
    best = closest(now, [far, near_old, near_new])
    assert best is not None and best[0] is near_new and len(best[1]) == 1


# Entries and tombstones in the store ------------------------------------------------------------


def _put_named(cache: SqlStepCache, ws: WorkspaceKeyInput, steps: list[StepKeyInput]) -> list[str]:
    keys = step_keys(ws, steps)
    for index, key in enumerate(keys):
        named = named_inputs(ws, steps, index + 1)
        cache.put(
            key,
            replace(entry(key), inputs=named),
            namespace="user:alice",
            secret_refs=prefix_secret_refs(steps, index + 1),
        )
    return keys


def _meta_var(meta: SecretMeta) -> PlannedVar:
    prov = Provenance("secret", namespace=meta.namespace, secret_id=meta.id, version=meta.version)
    return PlannedVar(2, meta.name, prov, secret=meta)


def test_secret_set_and_rm_leave_tombstones_that_explain_the_miss(
    sql_store: SqlSecretStore, tmp_path: Path
) -> None:
    cache = open_cache(Settings(home=tmp_path), sql_store)
    v1, _ = sql_store.set("API_KEY", "user:alice", Secret(VALUE), actor="alice")
    ws = _workspace("user:alice")
    before = [_step("one"), _step("two", env=(_meta_var(v1),))]
    keys = _put_named(cache, ws, before)
    assert [s.hit for s in explain_steps(cache, ws, keys, before)] == [True, True]

    meta = sql_store.get("API_KEY", "user:alice")
    v2, _ = sql_store.set("API_KEY", "user:alice", Secret(VALUE + "-v2"), actor="alice")
    assert invalidate_after_secret_change(sql_store, meta, "alice") == 1
    after = [_step("one"), _step("two", env=(_meta_var(v2),))]
    why = explain_steps(cache, ws, step_keys(ws, after), after)
    assert why[0].hit  # step 1 does not use the secret: its entry stayed
    assert (why[1].hit, why[1].closest, why[1].invalidated_by) == (False, "tombstone", "secret set")
    text = WorkspaceWhy("github.com/acme/app", "", "main", why).text()
    assert "step 2: miss\n    secret API_KEY v1 → v2 (invalidated by secret set)" in text

    # A removal says so too; and the tombstones hold no value in any form.
    meta = sql_store.get("API_KEY", "user:alice")
    _put_named(cache, ws, after)
    sql_store.remove("API_KEY", "user:alice", actor="alice")
    assert invalidate_after_secret_change(sql_store, meta, "alice") == 1
    again = explain_steps(cache, ws, step_keys(ws, after), after)
    assert again[1].invalidated_by == "secret rm"
    assert again[1].lines() == ["step 2: miss (its entry was dropped by secret rm)"]
    with sql_store.db.transaction(write=False) as tx:
        rows = tx.all("SELECT * FROM step_cache_tombstones")
    assert len(rows) == 2  # one per dropped entry
    forms = leak_forms([VALUE, VALUE + "-v2"])
    assert scan_bytes(str(rows).encode(), forms) == []


def test_a_workspace_never_seen_has_nothing_to_compare_with(
    sql_store: SqlSecretStore, tmp_path: Path
) -> None:
    cache = open_cache(Settings(home=tmp_path), sql_store)
    ws = _workspace("user:alice")
    steps = [_step("one")]
    _put_named(cache, replace(ws, repository="github.com/acme/other"), steps)
    [why] = explain_steps(cache, ws, step_keys(ws, steps), steps)
    assert (why.hit, why.closest) == (False, None)
    assert why.lines() == ["step 1: miss (no entry of this workspace and step yet)"]


def test_an_entry_keeps_its_named_inputs_through_its_stored_form() -> None:
    named = _named(_step())
    stored = CacheEntry.from_bytes(replace(entry(), inputs=named).to_bytes())
    assert stored.inputs == named
    assert CacheEntry.from_bytes(entry().to_bytes()).inputs is None


TEMPLATE = """
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""

# The env lint -----------------------------------------------------------------------------------

LINT_SPEC = (
    """
name: lint
on:
  - repository: github.com/acme/app
steps:
  - run: 'curl -H "Authorization: $GH_TOKEN" https://example.com; echo ${API_KEY:-none}'
    container: tools:latest
    env: [GH_TOKEN, API_KEY, UNUSED]
  - run: echo $UNUSED_NOT_THIS
    container: tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    env: [UNUSED]
  - run: echo no secrets here
    container: tools:latest
"""
    + TEMPLATE
)


def _lint_plan() -> EnvPlan:
    def var(step: int, name: str) -> PlannedVar:
        return replace(_secret(name, 1, sid=name), step=step)

    return EnvPlan(
        "user:alice",
        {
            1: (var(1, "GH_TOKEN"), var(1, "API_KEY"), var(1, "UNUSED")),
            2: (var(2, "UNUSED"),),
        },
    )


def test_lint_warns_of_unmentioned_secrets_unpinned_images_and_unused_overrides() -> None:
    spec = load_spec_text(LINT_SPEC, "lint.yaml")
    overrides = [
        Ref("o1", "STALE", "user:alice", overrides_global=True),
        Ref("o2", "GH_TOKEN", "user:alice", overrides_global=True),
        Ref("o3", "OWN", "user:alice"),
    ]
    warnings = lint(spec, _lint_plan(), overrides)
    assert len(warnings) == 4, warnings
    assert warnings[0].startswith("step 1: receives the secret UNUSED but its run never mentions")
    assert warnings[1].startswith(
        "step 1: receives API_KEY, GH_TOKEN, UNUSED but its image tools:latest is not pinned"
    )
    assert warnings[2].startswith("step 2: receives the secret UNUSED but its run never")
    assert warnings[3].startswith("STALE of user:alice overrides the global STALE, but no step")


@pytest.mark.parametrize(
    ("script", "found"),
    [
        ("echo $TOKEN", True),
        ('echo "${TOKEN}"', True),
        ("echo ${TOKEN:-x}", True),
        ("echo $TOKEN_TWO", False),
        ("echo TOKEN", False),
        ("echo ${TOKENS}", False),
    ],
)
def test_a_script_mentions_a_name_only_as_its_own_expansion(script: str, found: bool) -> None:
    assert mentions(script, "TOKEN") is found


# The workspace preview's `if:` rule ---------------------------------------------------------------

PREVIEW_SPEC = (
    """
name: preview
on:
  - repository: github.com/acme/app
steps:
  - run: echo one
    container: tools:latest
    if: ${{ eq repository.name "github.com/acme/lib" }}
  - run: echo two
    container: tools:latest
    outputs:
      said:
        value: ${{ step.stdout }}
  - run: echo three
    container: tools:latest
    if: ${{ eq outputs.said "two" }}
  - run: echo four
    container: tools:latest
    if: ${{ matches repository.name "*acme/app" }}
  - run: echo five
    container: tools:latest
    if: false
"""
    + TEMPLATE
)


def test_preview_decides_static_ifs_and_leaves_the_rest_to_the_run() -> None:
    spec = load_spec_text(PREVIEW_SPEC, "preview.yaml")
    ws = Workspace("github.com/acme/app", Path("/nowhere"), "main", "c0ffee", "", False, ())
    [item] = preview(spec, [ws], keys=None, contains=None, cache_note="off").workspaces
    assert [s.fate for s in item.steps] == [
        "skipped",
        "runs",
        "decided at run time",
        "runs",
        "skipped",
    ]
    assert item.as_json()["steps_undecided"] == 1
    assert item.as_json()["steps_to_run"] == 2


def test_env_explain_lint_warns_on_stderr_and_exits_zero(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "home")
    set_secret(env, "STALE", VALUE, "--global")
    set_secret(env, "STALE", VALUE + "-mine", "--user", "alice")
    set_secret(env, "API_KEY", VALUE + "-key", "--user", "alice")
    spec = tmp_path / "lint.yaml"
    spec.write_text(
        "name: lint\non:\n  - repository: github.com/acme/app\nsteps:\n"
        "  - run: echo nothing\n    container: tools:latest\n    env: [API_KEY]\n" + TEMPLATE
    )
    plain = run_runner(["env", "explain", str(spec)], env)
    linted = run_runner(["env", "explain", str(spec), "--lint"], env)
    assert (plain.returncode, linted.returncode) == (0, 0), linted.stderr
    assert linted.stdout == plain.stdout  # warnings only, and only on stderr
    warnings = [line for line in linted.stderr.splitlines() if line.startswith("warning: ")]
    assert [w.split(":")[1].strip() for w in warnings] == [
        "step 1",
        "step 1",
        "STALE of user",
    ]
    assert "never mentions $API_KEY" in warnings[0]
    assert VALUE not in linted.stderr
