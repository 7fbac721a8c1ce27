"""Fuzzing /predict and /predict/batch of a real `dspyreg serve` with hypothesis: JSON-ish bodies (NaN, infinities,
huge numbers, lone surrogates, deep nesting, wrong shapes) and raw bytes. Whatever arrives, the answer is JSON and
never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_registry.registry import Registry

from ..serving import Server, dspyreg_serve


def _number_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999", "1e-999999", "-0", "0.0e0"]),
        st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
        st.floats(allow_nan=True, allow_infinity=True)
        .map(repr)
        .map(lambda r: {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(r, r)),
        st.integers().map(str),
    )


def _string_text() -> st.SearchStrategy[str]:
    """JSON string literals, lone surrogates included (json.dumps writes them as \\udXXX escapes)."""
    lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)  # st.characters() leaves them out
    return st.text(st.one_of(st.characters(), lone_surrogates), max_size=30).map(json.dumps)


def _json_text() -> st.SearchStrategy[str]:
    scalars = st.one_of(_number_text(), _string_text(), st.sampled_from(["true", "false", "null"]))
    nested = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            st.dictionaries(_string_text(), inner, max_size=4).map(
                lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=12,
    )
    deep = st.integers(min_value=1, max_value=20_000).map(lambda n: "[" * n + "]" * n)
    return st.one_of(nested, deep)


def _body() -> st.SearchStrategy[bytes]:
    value = _json_text()
    shaped = st.one_of(
        value.map(lambda v: '{"question": ' + v + "}"),
        value.map(lambda v: '{"inputs": [{"question": ' + v + "}]}"),
        value.map(lambda v: '{"inputs": ' + v + "}"),
        value,
    ).map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(shaped, st.binary(max_size=300), shaped.flatmap(_mutated))


def _mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with one byte replaced: invalid UTF-8, broken syntax."""
    if not data:
        return st.just(data)
    return st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda at: data[: at[0]] + bytes([at[1]]) + data[at[0] + 1 :]
    )


@pytest.fixture
def server(published: Registry, fake_lm: Any, tmp_path: Path) -> Any:
    published.promote("v1.1", "prod")
    with dspyreg_serve(published.location, tmp_path) as srv:
        srv.wait_ready()
        yield srv


def test_no_body_gets_a_500(server: Server) -> None:
    seen: list[tuple[int, bytes]] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=_body(), batch=st.booleans())
    def post(body: bytes, batch: bool) -> None:
        status, answer, _ = server.post("/predict/batch" if batch else "/predict", raw=body)
        seen.append((status, body))
        assert status != 500 and status < 600, (status, answer, body[:200])
        if status >= 400:
            assert isinstance(answer, dict) and "error" in answer, (status, answer, body[:200])

    post()
    assert len(seen) >= 100 and any(status == 422 for status, _ in seen)
    assert "Traceback" not in server.log.read_text()
