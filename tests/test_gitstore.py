"""The git layer on real repositories: objects are invisible until a transaction moves every ref, or none."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspy_registry.errors import ConflictError, GitError, NotARegistry
from dspy_registry.gitstore import GitStore, RefUpdate, utc_now
from dspy_registry.gittree import TreeEntry
from dspy_registry.refs import ZERO_SHA

from .conftest import git


@pytest.fixture
def store(tmp_path: Path) -> GitStore:
    return GitStore.init(tmp_path / "repo", bare=True)


def _commit(store: GitStore, files: dict[str, bytes], parent: str | None = None) -> str:
    blobs = store.write_blobs(files)
    tree = store.write_tree(None, {p: TreeEntry("100644", "blob", s) for p, s in blobs.items()})
    return store.write_commit(tree, [parent] if parent else [], "test\n", store.identity(), utc_now())


def test_objects_are_invisible_until_the_transaction(store: GitStore) -> None:
    commit = _commit(store, {"a/b.txt": b"hello\n", "c.txt": b"x"})
    assert store.ref_value("refs/heads/main") is None
    store.transaction([RefUpdate("refs/heads/main", commit, ZERO_SHA)])
    assert store.ref_value("refs/heads/main") == commit
    assert store.read_blob("refs/heads/main", "a/b.txt") == b"hello\n"


def test_write_tree_replaces_nested_entries(store: GitStore) -> None:
    base = _commit(store, {"qa/x.json": b"1", "qa/code/m.py": b"2", "other/y": b"3"})
    blob = store.write_blobs({"n": b"new"})["n"]
    tree = store.write_tree(base, {"qa/x.json": TreeEntry("100644", "blob", blob), "qa/code/m.py": None})
    files = set(store.run("ls-tree", "-r", "--name-only", tree).split())
    assert files == {"qa/x.json", "other/y"}


def test_a_failed_transaction_moves_no_ref(store: GitStore) -> None:
    one = _commit(store, {"f": b"1"})
    two = _commit(store, {"f": b"2"}, one)
    store.transaction([RefUpdate("refs/heads/main", one, ZERO_SHA)])
    before = git(store.git_dir, "for-each-ref")
    tag = store.write_tag(two, "qa/v1", "msg", store.identity(), utc_now())
    # The second update expects a wrong old value: neither ref may move.
    with pytest.raises(ConflictError, match="another writer"):
        store.transaction([RefUpdate("refs/tags/qa/v1", tag, ZERO_SHA), RefUpdate("refs/heads/main", two, two)])
    assert git(store.git_dir, "for-each-ref") == before
    assert store.ref_value("refs/tags/qa/v1") is None


def test_creating_an_existing_ref_is_a_conflict(store: GitStore) -> None:
    one = _commit(store, {"f": b"1"})
    store.transaction([RefUpdate("refs/heads/main", one, ZERO_SHA)])
    with pytest.raises(ConflictError):
        store.transaction([RefUpdate("refs/heads/main", one, ZERO_SHA)])


def test_annotated_tags_pass_fsck(store: GitStore) -> None:
    one = _commit(store, {"f": b"1"})
    tag = store.write_tag(one, "qa/v1.0", "Publish qa v1.0\n\n{}", store.identity(), utc_now())
    store.transaction([RefUpdate("refs/heads/main", one, ZERO_SHA), RefUpdate("refs/tags/qa/v1.0", tag, ZERO_SHA)])
    assert git(store.git_dir, "cat-file", "-t", "qa/v1.0").strip() == "tag"
    git(store.git_dir, "fsck", "--strict", "--no-dangling")


def test_git_failures_carry_the_command(store: GitStore) -> None:
    with pytest.raises(GitError) as err:
        store.run("cat-file", "-p", "no-such-object")
    assert err.value.returncode != 0 and "cat-file" in str(err.value)


def test_open_refuses_non_repositories(tmp_path: Path) -> None:
    with pytest.raises(NotARegistry, match="does not exist"):
        GitStore.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARegistry, match="not a git repository"):
        GitStore.open(tmp_path / "plain")
    # A folder inside another repository's work tree is not a repository of its own.
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q")
    (outer / "inner").mkdir()
    with pytest.raises(NotARegistry):
        GitStore.open(outer / "inner")
    # A folder that only looks like a repository (a HEAD that is not one) is asked of git, which refuses it.
    fake = tmp_path / "fake"
    for folder in ("objects", "refs"):
        (fake / folder).mkdir(parents=True)
    (fake / "HEAD").write_text("not a ref\n")
    with pytest.raises(NotARegistry, match="not a git repository"):
        GitStore.open(fake)


def test_open_finds_bare_and_work_tree_repositories_as_git_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = GitStore.init(tmp_path / "bare", bare=True)
    tree = GitStore.init(tmp_path / "tree", bare=False)
    assert GitStore.open(tmp_path / "bare").git_dir == bare.git_dir
    assert GitStore.open(tmp_path / "tree").git_dir == tree.git_dir == (tmp_path / "tree" / ".git").resolve()
    # git refuses to find a bare repository by itself under safe.bareRepository=explicit: so does dspyreg.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.bareRepository")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "explicit")
    with pytest.raises(NotARegistry, match="not a git repository"):
        GitStore.open(tmp_path / "bare")
    assert GitStore.open(tmp_path / "tree").git_dir == tree.git_dir


@pytest.mark.parametrize("packed", [False, True])
def test_tags_lists_each_tag_with_what_it_peels_to(store: GitStore, packed: bool) -> None:
    assert store.tags() == []  # no tag at all: an empty list, not an error
    one = _commit(store, {"f": b"1"})
    tag = store.write_tag(one, "qa/v1", "msg", store.identity(), utc_now())
    store.transaction(
        [
            RefUpdate("refs/heads/main", one, ZERO_SHA),
            RefUpdate("refs/tags/qa/v1", tag, ZERO_SHA),
            RefUpdate("refs/tags/qa/light", one, ZERO_SHA),
            RefUpdate("refs/tags/other/v1", tag, ZERO_SHA),
        ]
    )
    if packed:
        git(store.git_dir, "pack-refs", "--all")
    assert store.tags("refs/tags/qa/") == [("refs/tags/qa/light", one, None), ("refs/tags/qa/v1", tag, one)]
    assert [name for name, _, _ in store.tags()] == ["refs/tags/other/v1", "refs/tags/qa/light", "refs/tags/qa/v1"]


def test_the_reader_is_started_again_and_answers_the_same(store: GitStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one `cat-file --batch` reader is replaced every so many reads (git keeps what it parsed while it runs):
    the answers across a replacement are the same."""
    monkeypatch.setattr("dspy_registry.gitstore._READER_READS", 3)
    contents = {f"f{i}.txt": f"content {i}\n".encode() for i in range(8)}
    commit = _commit(store, contents)
    readers = set()
    for _ in range(2):
        for path, data in contents.items():
            assert store.read_blob(commit, path) == data
            readers.add(store._cat.pid if store._cat is not None else None)
    assert store.read(f"{commit}:missing.txt") is None and len(readers) > 1
