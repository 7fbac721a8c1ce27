from __future__ import annotations

import pytest

from dspy_registry.errors import InvalidName
from dspy_registry.refs import (
    RefSpec,
    check_environment,
    check_program,
    normalize_version,
    parse_ref,
    same_release,
    split_tag_ref,
    tag_ref,
    version_key,
)


@pytest.mark.parametrize(
    "text,expected", [("1.0", "v1.0"), ("v1.1", "v1.1"), ("v2.0.1-rc1", "v2.0.1-rc1"), ("3", "v3")]
)
def test_versions_are_normalized(text: str, expected: str) -> None:
    assert normalize_version(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "a/../b",
        "v1..2",
        "prod",
        "v1 .0",
        "v1@{0}",
        "v1~1",
        "v1^",
        "v1:2",
        "v1?",
        "v1*",
        "v1[",
        "v1\\",
        "",
        "v01.0",
    ],
)
def test_bad_versions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName, match="invalid version"):
        normalize_version(bad)


@pytest.mark.parametrize("bad", ["../x", "a/../b", "Qa", "qa prod", "-qa", "q" * 65, "qa@{", "qa~", "qa:x", ""])
def test_bad_program_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_program(bad)


def test_environment_names() -> None:
    assert check_environment("prod") == "prod"
    for bad in ("v1", "1.0", "Prod", "pr od", "p/x"):
        with pytest.raises(InvalidName):
            check_environment(bad)


def test_semver_order() -> None:
    ordered = ["v0.9", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-beta", "v1.0", "v1.0.1", "v1.2", "v1.10", "v2"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert same_release("v1.0", "v1.0.0") and not same_release("v1.0", "v1.0.1")


def test_parse_ref() -> None:
    assert parse_ref("v1.1") == RefSpec(None, version="v1.1")
    assert parse_ref("qa/1.1") == RefSpec("qa", version="v1.1")
    assert parse_ref("prod", "qa") == RefSpec("qa", environment="prod")
    assert parse_ref("abc1234") == RefSpec(None, sha="abc1234")
    with pytest.raises(InvalidName, match="--name"):
        parse_ref("qa/prod", "other")
    for bad in ("qa/../x", "a/b/c", "v1..2", "@{-1}"):
        with pytest.raises(InvalidName):
            parse_ref(bad)


def test_tag_names_round_trip() -> None:
    assert tag_ref("qa", "v1.0") == "refs/tags/qa/v1.0"
    assert split_tag_ref("refs/tags/qa/v1.0") == ("qa", "v1.0")
    assert split_tag_ref("refs/tags/other") is None
    assert split_tag_ref("refs/heads/qa/v1.0") is None
