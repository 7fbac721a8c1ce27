"""What a command does by default does not grow with history it does not show (issue 17, item 4): `log` pages and
reads the journal only as far back as it shows, the .proto numbering reads every earlier interface in one pass and
parses each distinct one once, registries pack themselves after writes, and publish reads a program's tags once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry import proto
from dspy_registry.cli import app
from dspy_registry.gitstore import utc_now
from dspy_registry.gittree import TreeEntry
from dspy_registry.refs import JOURNAL_REF, MAIN_REF, ZERO_SHA, RefUpdate, tag_ref, version_key
from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, git, publish_args, publish_example

runner = CliRunner()


def cli(reg: Registry, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", reg.location])


def moved(published: Registry, count: int) -> list[str]:
    """`count` promotes to staging alternating v1.0 and v1.1; the versions moved to, oldest first."""
    versions = [("v1.0", "v1.1")[i % 2] for i in range(count)]
    for version in versions:
        published.promote(version, "staging", reason=f"move {version}")
    return versions


def test_log_pages_newest_first_for_people_and_oldest_first_in_json(published: Registry) -> None:
    moved(published, 25)
    every = json.loads(cli(published, "log", "--json").stdout)
    assert len(every) == 25  # --json without --limit keeps its contract: every move, oldest first
    assert [e["to_version"] for e in every] == [("v1.0", "v1.1")[i % 2] for i in range(25)]
    newest = json.loads(cli(published, "log", "--json", "--limit", "3").stdout)
    assert newest == every[-3:]  # the newest 3, still oldest first
    assert json.loads(cli(published, "log", "--json", "--limit", "3", "--all").stdout) == every

    people = cli(published, "log")
    assert people.exit_code == 0, people.output
    rows = [line for line in people.stdout.splitlines() if " promote " in line]
    assert len(rows) == 20  # the default page
    times = [line.split()[0] + line.split()[1] for line in rows]
    assert times == sorted(times, reverse=True)  # newest first
    assert "--all" in people.stderr  # says how to see older moves
    assert len([line for line in cli(published, "log", "--all").stdout.splitlines() if " promote " in line]) == 25
    few = cli(published, "log", "--limit", "4")
    assert len([line for line in few.stdout.splitlines() if " promote " in line]) == 4


def test_log_with_a_limit_never_reads_the_old_journal(published: Registry) -> None:
    """The oldest journal commits are deleted from the object store: `log --limit` (and the default page) still
    answer, reading only the newest commits; `--all` must read them and says the repository is broken."""
    moved(published, 12)
    path = Path(published.location)
    commits = git(path, "rev-list", "--first-parent", JOURNAL_REF).split()
    assert len(commits) == 13  # the journal's first commit (init) and one per move, all loose objects here
    for old in commits[-3:]:
        (path / "objects" / old[:2] / old[2:]).unlink()
    published.store.close()

    shown = json.loads(cli(published, "log", "--json", "--limit", "5").stdout)
    assert [e["reason"] for e in shown] == [f"move {('v1.0', 'v1.1')[i % 2]}" for i in range(7, 12)]
    assert cli(published, "log", "--env", "staging", "--limit", "8").exit_code == 0
    broken = cli(published, "log", "--all")
    assert broken.exit_code != 0


def interface_json(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> bytes:
    def fields(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"name": n, "type": t, "description": f"the {n}"} for n, t in pairs]

    return json.dumps({"inputs": fields(inputs), "outputs": fields(outputs)}).encode()


def add_version(reg: Registry, version: str, interface: bytes) -> None:
    """A version tag on a commit of main whose qa/interface.json is `interface` (the rest of the bundle as v1.1)."""
    store = reg.store
    parent = store.ref_value(MAIN_REF)
    assert parent is not None
    blob = store.write_blobs({"i": interface})["i"]
    tree = store.write_tree(parent, {"qa/interface.json": TreeEntry("100644", "blob", blob)})
    who, now = store.identity(), utc_now()
    commit = store.write_commit(tree, [parent], f"Publish qa {version}\n", who, now)
    tag = store.write_tag(commit, f"qa/{version}", f"Publish qa {version}\n", who, now)
    store.transaction([RefUpdate(MAIN_REF, commit, parent), RefUpdate(tag_ref("qa", version), tag, ZERO_SHA)])


def test_proto_reads_history_in_one_pass_byte_identical(published: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = [
        ([("question", "str")], [("answer", "str")]),
        ([("question", "str"), ("context", "list[str]")], [("answer", "str")]),
        ([("question", "str"), ("context", "list[str]")], [("answer", "str"), ("confidence", "float")]),
        ([("question", "str")], [("answer", "int"), ("confidence", "float")]),
    ]
    versions = []
    for i, (inputs, outputs) in enumerate(shapes):
        for j in range(3):  # runs of equal interfaces, as most histories are
            versions.append(f"v2.{i}.{j}")
            add_version(published, versions[-1], interface_json(inputs, outputs))
    parsed: list[object] = []
    real_signature = proto.signature

    def counting(program: str, interface: Any) -> proto.Signature:
        parsed.append(interface)
        return real_signature(program, interface)

    monkeypatch.setattr(proto, "signature", counting)
    for version in ("v1.1", versions[4], versions[-1]):
        resolved = published.resolve(version, "qa")
        commits = [c for v, c in tags_by_version(published) if version_key(v) <= version_key(version)]
        # what proto read before: each version's interface.json, one read at a time, in semantic-version order
        old = proto.program_proto("qa", [published.store.read_blob(c, "qa/interface.json") for c in commits])
        parsed.clear()
        assert published.proto(resolved) == old
        distinct = {published.store.read_blob(c, "qa/interface.json") for c in commits}
        assert len(parsed) == len(distinct)  # each distinct interface parsed once, not once per version
    assert "confidence" in published.proto(published.resolve(versions[-1], "qa"))


def tags_by_version(reg: Registry) -> list[tuple[str, str]]:
    """(version, commit) of every version tag of qa, in semantic-version order."""
    rows = git(Path(reg.location), "for-each-ref", "--format=%(refname:lstrip=3) %(*objectname)", "refs/tags/qa/v*")
    return sorted((tuple(r.split()) for r in rows.splitlines()), key=lambda r: version_key(r[0]))  # type: ignore[misc]


def objects(path: Path) -> dict[str, int]:
    """`git count-objects -v`: `count` loose objects, `packs` packs."""
    return {k: int(v) for k, v in (line.split(": ") for line in git(path, "count-objects", "-v").splitlines())}


def test_writes_pack_the_registry_when_git_says_it_is_due(published: Registry) -> None:
    """gc --auto is due once there are more packs than gc.autoPackLimit: the next write of dspyreg packs every loose
    object (gc.autoDetach off so the test sees the result; by default git packs in the background)."""
    path = Path(published.location)
    git(path, "repack", "-q")
    published.promote("v1.0", "staging")
    git(path, "repack", "-q")  # two packs now
    git(path, "config", "gc.autoPackLimit", "1")
    git(path, "config", "gc.autoDetach", "false")
    published.promote("v1.1", "staging")  # writes 4 objects: a tag, a journal blob, tree and commit
    packed = objects(path)
    assert packed["packs"] == 1  # gc ran: one pack
    assert packed["count"] < 4  # the move's objects are in it (unreachable ones stay loose for git's prune period)
    assert json.loads(cli(published, "log", "--json").stdout)[-1]["to_version"] == "v1.1"
    git(path, "fsck", "--strict", "--no-progress")


def test_publish_reads_the_programs_tags_once(
    published: Registry, states: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    result = cli(published, *publish_args(EXAMPLE_SPEC, states["v1.1"], "v1.2"))
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("GIT_TRACE2_EVENT")
    starts = [json.loads(line) for line in trace.read_text().splitlines()]
    argvs = [e["argv"] for e in starts if e.get("event") == "start"]
    tag_reads = [a for a in argvs if "for-each-ref" in a and any("refs/tags/qa" in x for x in a)]
    assert len(tag_reads) <= 1, tag_reads


def git_commands(trace: Path) -> list[list[str]]:
    """The argv of every git command a GIT_TRACE2_EVENT file records."""
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["argv"][1:] for e in events if e.get("event") == "start"]


def test_verify_all_checks_history_with_a_fixed_number_of_processes(
    published: Registry, states: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every version against main without one git process per version; an old version moved off main by hand is
    still reported, and only it."""
    for version in ("v1.2", "v1.3", "v1.4", "v1.5"):
        publish_example(published, states["v1.0"], version)
    path = Path(published.location)
    old = "qa/v1.0^{commit}"
    off_main = git(path, "commit-tree", "-m", "by hand", "-p", old, f"{old}^{{tree}}").strip()
    git(path, "tag", "-f", "-a", "-m", "moved by hand", "qa/v1.0", off_main)
    published.store.close()
    trace = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    result = cli(published, "verify", "--all", "--json")
    monkeypatch.delenv("GIT_TRACE2_EVENT")
    assert result.exit_code == 1
    problems = [p for p in json.loads(result.stdout) if p.get("level") != "warning"]
    assert problems == [
        {
            "subject": "refs/tags/qa/v1.0",
            "message": f"points at commit {off_main[:12]}, which is not on main (moved by hand?)",
        }
    ]
    walks = [a for a in git_commands(trace) if "merge-base" in a or "rev-list" in a]
    assert len(walks) <= 2, walks  # one merge-base, then one rev-list of main for the other five versions


def test_a_new_registry_packs_after_500_loose_objects(registry_path: Path) -> None:
    assert git(registry_path, "config", "--local", "gc.auto").strip() == "500"


def test_list_for_people_reads_only_the_records_it_shows(published: Registry, states: dict[str, Path]) -> None:
    """Several programs: the newest 5 of each are shown. The evaluation record of an old, hidden version is corrupt:
    `list` never reads it; `list --all` and `list --json` show every version, so they read it and say so."""
    publish_example(published, states["v1.0"], "v1.0", name="other")
    for version in ("v2.0", "v2.1", "v2.2", "v2.3", "v2.4"):
        add_version(published, version, interface_json([("question", "str")], [("answer", "str")]))
    store = published.store
    blob = store.write_blobs({"r": b'{"score": "high"}'})["r"]
    tree = store.write_tree(None, {"qa/v1.0/evaluations/20250101T000000Z-x.json": TreeEntry("100644", "blob", blob)})
    commit = store.write_commit(tree, [], "a record by hand\n", store.identity(), utc_now())
    store.transaction([RefUpdate("refs/heads/dspyreg/records", commit, ZERO_SHA)])

    people = cli(published, "list")
    assert people.exit_code == 0, people.output
    shown = [line.split()[:2] for line in people.stdout.splitlines() if line.startswith(("qa ", "other "))]
    assert shown == [["other", "v1.0"]] + [["qa", f"v2.{i}"] for i in range(5)]
    assert "older versions not shown" in people.stdout
    for args in (["list", "--all"], ["list", "--json"]):
        result = cli(published, *args)
        assert result.exit_code == 1 and "is corrupt" in result.stderr, (args, result.output)
