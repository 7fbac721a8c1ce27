"""Prompt tokens and their list price: manifest.toml's `[tokens]`, measured at publish and read by show and diff.

At publish the live program is at hand: each LM call's chat messages are rendered with the adapter DSPy uses
(`adapter.format(signature, demos, inputs)`) and counted offline with a named tiktoken encoding, loaded from the copy
LiteLLM bundles (never downloaded), the way OpenAI counts chat messages; the price per input token comes from
LiteLLM's local price map. `measure_program` imports dspy, tiktoken and litellm inside; everything else here (the
figures, their TOML table checked by type, the A -> B delta) imports nothing heavy, so show and diff stay light.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import RegistryError

# OpenAI's chat accounting (its cookbook, and litellm.token_counter for OpenAI models): every message costs 3 tokens
# beside its role and content, a `name` one more, and every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# The OpenAI families that tokenize with o200k_base; every other model is counted with cl100k_base.
_O200K_MODELS = re.compile(r"(?:^|/)(?:chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9])(?:\b|[-.:_]|$)")
_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
NOT_RECORDED = "not recorded"
TOKENIZERS_DIFFER = "the two sides were counted with different tokenizers: part of the delta is the tokenizer's"


class TokenizerUnavailable(RegistryError):
    """The tiktoken encoding is not bundled with the installed LiteLLM, and nothing is downloaded."""


@dataclass(frozen=True)
class PredictorTokens:
    """The prompt tokens one predictor sends over the measured calls, and how many calls that is."""

    tokens: int
    calls: int


@dataclass(frozen=True)
class TokenFigures:
    """`[tokens]` of a manifest: prompt tokens per predictor and for one whole call of the program, with what they
    were counted with (`tokenizer`), on what (`basis`), and the input cost of 1,000 whole calls (None: unknown)."""

    tokenizer: str
    basis: str
    predictors: Mapping[str, PredictorTokens]
    cost_per_1k_calls: float | None
    price_source: str

    @property
    def total(self) -> int:
        return sum(p.tokens for p in self.predictors.values())

    @property
    def calls(self) -> int:
        return sum(p.calls for p in self.predictors.values())

    def to_table(self) -> dict[str, Any]:
        """The TOML table (no null in TOML: an unknown cost is left out, and price_source says why)."""
        table: dict[str, Any] = {
            "tokenizer": self.tokenizer,
            "basis": self.basis,
            "total": self.total,
            "calls": self.calls,
        }
        if self.cost_per_1k_calls is not None:
            table["cost_per_1k_calls"] = self.cost_per_1k_calls
        table["price_source"] = self.price_source
        table["predictors"] = {n: {"tokens": p.tokens, "calls": p.calls} for n, p in self.predictors.items()}
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "basis": self.basis,
            "total": self.total,
            "calls": self.calls,
            "cost_per_1k_calls": self.cost_per_1k_calls,
            "price_source": self.price_source,
            "predictors": {n: {"tokens": p.tokens, "calls": p.calls} for n, p in self.predictors.items()},
        }

    @classmethod
    def from_table(cls, table: Any, where: str) -> TokenFigures:
        """A `[tokens]` table as read from git (written by others): every value checked by type; ValueError names
        the key at fault."""
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [tokens] must be a table")
        for key in ("tokenizer", "basis", "price_source"):
            if not isinstance(table.get(key), str):
                raise ValueError(f"{where}: [tokens] {key} must be text, got {table.get(key)!r}")
        for key in ("total", "calls"):
            if key in table and not _count(table[key]):
                raise ValueError(f"{where}: [tokens] {key} must be a count, got {table[key]!r}")
        cost = table.get("cost_per_1k_calls")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0):
            raise ValueError(f"{where}: [tokens] cost_per_1k_calls must be a number >= 0, got {cost!r}")
        raw = table.get("predictors", {})
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: [tokens.predictors] must be a table")
        predictors = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict) or not _count(entry.get("tokens")) or not _count(entry.get("calls")):
                raise ValueError(f"{where}: [tokens.predictors] {name!r} must hold counts `tokens` and `calls`")
            predictors[name] = PredictorTokens(entry["tokens"], entry["calls"])
        return cls(
            tokenizer=table["tokenizer"],
            basis=table["basis"],
            predictors=predictors,
            cost_per_1k_calls=None if cost is None else float(cost),
            price_source=table["price_source"],
        )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class TokenDelta:
    """The token and cost figures of both sides of a diff; a side published before they existed is None."""

    a: TokenFigures | None
    b: TokenFigures | None

    def predictor_rows(self) -> list[tuple[str, int | None, int | None]]:
        """(predictor, tokens under A, tokens under B), in B's order then A's leftovers; None where not measured."""
        a = self.a.predictors if self.a else {}
        b = self.b.predictors if self.b else {}
        names = [*b, *(n for n in a if n not in b)]
        return [(n, a[n].tokens if n in a else None, b[n].tokens if n in b else None) for n in names]

    def to_json(self) -> dict[str, Any]:
        def side(f: TokenFigures | None) -> dict[str, Any] | None:
            return f.to_json() if f else None

        delta = self.b.total - self.a.total if self.a and self.b else None
        cost = (
            self.b.cost_per_1k_calls - self.a.cost_per_1k_calls
            if self.a and self.b and self.a.cost_per_1k_calls is not None and self.b.cost_per_1k_calls is not None
            else None
        )
        return {
            "a": side(self.a),
            "b": side(self.b),
            "total_delta": delta,
            "cost_per_1k_calls_delta": cost,
            "predictors": {
                n: {"a": x, "b": y, "delta": y - x if x is not None and y is not None else None}
                for n, x, y in self.predictor_rows()
            },
        }


def token_delta(a: TokenFigures | None, b: TokenFigures | None) -> TokenDelta | None:
    """None when neither side recorded figures (two saved state files, or two versions published before them)."""
    return None if a is None and b is None else TokenDelta(a, b)


# -- words for people (render.py and render_diff.py print these) ------------------------------------------------------
def cost_text(cost: float | None) -> str:
    return "unknown price" if cost is None else f"${cost:.4f}"


def signed(value: int | float) -> str:
    return f"{value:+,}" if isinstance(value, int) else f"{value:+.4f}"


def figures_lines(f: TokenFigures | None) -> list[str]:
    """What show prints: the whole call, per predictor, the cost, and what they were counted with."""
    if f is None:
        return [f"prompt tokens: {NOT_RECORDED} (published before dspyreg measured them)"]
    lines = [f"prompt tokens per call: {f.total:,} over {f.calls} LM call{'s' if f.calls != 1 else ''}"]
    lines += [
        f"  {name}: {p.tokens:,}" + (f" ({p.calls} calls)" if p.calls != 1 else "") for name, p in f.predictors.items()
    ]
    price = f.price_source if f.cost_per_1k_calls is None else f"{cost_text(f.cost_per_1k_calls)} ({f.price_source})"
    lines.append(f"cost per 1,000 calls: {price}")
    lines.append(f"counted with {f.tokenizer}; basis: {f.basis}")
    return lines


def delta_lines(d: TokenDelta) -> list[str]:
    """What diff prints, as plain lines: per predictor and whole call A -> B (delta), cost per 1,000 calls."""

    def num(value: int | None) -> str:
        return NOT_RECORDED if value is None else f"{value:,}"

    def arrow(x: int | None, y: int | None) -> str:
        change = f" ({signed(y - x)})" if x is not None and y is not None else ""
        return f"{num(x)} -> {num(y)}{change}"

    lines = [f"{name}: {arrow(x, y)}" for name, x, y in d.predictor_rows()]
    lines.append(f"whole call: {arrow(d.a.total if d.a else None, d.b.total if d.b else None)}")
    cost_a = cost_text(d.a.cost_per_1k_calls) if d.a else NOT_RECORDED
    cost_b = cost_text(d.b.cost_per_1k_calls) if d.b else NOT_RECORDED
    cost_delta = d.to_json()["cost_per_1k_calls_delta"]
    lines.append(f"cost per 1,000 calls: {cost_a} -> {cost_b}" + (f" ({signed(cost_delta)})" if cost_delta else ""))
    for label, f in (("A", d.a), ("B", d.b)):
        if f is not None:
            lines.append(f"{label}: {f.tokenizer}; {f.basis}; {f.price_source}")
    if d.a and d.b and d.a.tokenizer != d.b.tokenizer:
        lines.append(TOKENIZERS_DIFFER)
    return lines


# -- counting (publish only) ------------------------------------------------------------------------------------------
def encoding_name(model: str | None) -> str:
    """The tiktoken encoding OpenAI uses for `model`: o200k_base for gpt-4o, gpt-4.1, gpt-5 and the o-series; every
    other model (older OpenAI ones, and other providers, approximated) cl100k_base."""
    return "o200k_base" if model and _O200K_MODELS.search(model.lower()) else "cl100k_base"


def bundled_encodings() -> Path:
    """The folder in which LiteLLM ships tiktoken's encoding files (named as tiktoken's cache names them), found
    without importing litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("litellm is not installed: no bundled tiktoken encoding to count tokens with")
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


_ENV_LOCK = threading.Lock()


@contextmanager
def _tiktoken_cache(folder: Path) -> Iterator[None]:
    """tiktoken reads its files from TIKTOKEN_CACHE_DIR: point it at LiteLLM's bundled copies while loading, so the
    user's own setting (or none, which downloads) never decides."""
    with _ENV_LOCK:
        before = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            yield
        finally:
            if before is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = before


@cache
def encoding(name: str) -> Any:
    """tiktoken's encoding `name`, from LiteLLM's bundled file; TokenizerUnavailable when it is not bundled."""
    import tiktoken
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    folder = bundled_encodings()
    import hashlib

    cached = folder / hashlib.sha1(_ENCODING_URL.format(name).encode()).hexdigest()
    constructor = getattr(openai_public, name, None)
    if constructor is None or not cached.is_file():
        raise TokenizerUnavailable(f"tiktoken {name} is not bundled with the installed litellm (nothing is downloaded)")
    with _tiktoken_cache(folder):
        return tiktoken.Encoding(**constructor())


def count_messages(messages: Sequence[Mapping[str, Any]], encoding_name: str) -> int:
    """Prompt tokens of chat `messages` as OpenAI counts them (litellm.token_counter's count for OpenAI models)."""
    enc = encoding(encoding_name)

    def n(text: str) -> int:
        return len(enc.encode(text, disallowed_special=()))

    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += n(value) + (TOKENS_PER_NAME if key == "name" else 0)
            elif key == "content" and isinstance(value, list):  # content parts: their text is what is counted
                total += sum(n(part["text"]) for part in value if isinstance(part, dict) and "text" in part)
    return total


def list_price(model: str | None) -> tuple[float | None, str]:
    """(USD per input token, where it comes from) from LiteLLM's local price map; (None, why) when unknown.

    A model the map lists by name (`gpt-4o-mini`, or `openai/gpt-4o-mini` for an entry of provider openai) is read
    from the map's file; any other name goes through litellm.get_model_info (aliases, provider rules), which costs
    importing litellm (~3 s of CPU)."""
    if not model:
        return None, "unknown price: no model recorded"
    price = _listed_price(model)
    if price is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # the bundled map: never fetched at publish
        import litellm

        try:
            price = litellm.get_model_info(model).get("input_cost_per_token")
        except Exception:  # litellm raises a plain Exception for a model it does not know
            price = None
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        return None, f"unknown price: {model} is not in litellm's local price map"
    return float(price), f"{model} at ${price * 1e6:g} per 1M input tokens, litellm local price map"


def _listed_price(model: str) -> float | None:
    """The input price the bundled map lists for `model` by name, or for `provider/name` under that provider."""
    prices = _price_map()
    entry = prices.get(model)
    if entry is None and "/" in model:
        provider, name = model.split("/", 1)
        entry = prices.get(name)
        if not isinstance(entry, dict) or entry.get("litellm_provider") != provider:
            entry = None
    price = entry.get("input_cost_per_token") if isinstance(entry, dict) else None
    return float(price) if isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0 else None


@cache
def _price_map() -> dict[str, Any]:
    """LiteLLM's bundled price map (the file LITELLM_LOCAL_MODEL_COST_MAP loads), read without importing litellm;
    empty when litellm or the file is missing (then litellm itself is asked)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices_and_context_window_backup.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@dataclass(frozen=True)
class Call:
    """One LM call to count: the predictor's name and what the adapter renders for it."""

    predictor: str
    signature: Any
    demos: Sequence[Any]
    inputs: Mapping[str, Any]


def planned_calls(program: Any, example: Mapping[str, Any]) -> tuple[list[Call], str]:
    """Without a recorded run: one call per predictor, with the example input when it holds every input field of
    the predictor, else the inputs of its first demo that does; the basis says which and what was left out."""
    calls, from_demo, skipped = [], [], []
    for name, predictor in program.named_predictors():
        fields = list(predictor.signature.input_fields)
        inputs: Mapping[str, Any] | None = None
        if all(f in example for f in fields):
            inputs = {f: example[f] for f in fields}
        else:
            demo = next((d for d in map(_items, predictor.demos) if all(f in d for f in fields)), None)
            if demo is not None:
                inputs = {f: demo[f] for f in fields}
                from_demo.append(name)
        if inputs is None:
            skipped.append(name)
            continue
        calls.append(Call(name, predictor.signature, predictor.demos, inputs))
    basis = "one call per predictor, no recorded run"
    if from_demo:
        basis += f"; inputs of {', '.join(from_demo)} from their first demo (they come from earlier steps)"
    if skipped:
        basis += f"; not counted (inputs unknown): {', '.join(skipped)}"
    return calls, basis


def _items(demo: Any) -> dict[str, Any]:
    """A demo (a dspy.Example or a dict) as a dict of its values, unchanged: they are what the adapter renders."""
    return dict(demo.toDict() if hasattr(demo, "toDict") else demo)


def recorded_calls(program: Any, run: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[list[Call], str]:
    """The calls of the run recorded at publish: (predictor name, inputs) of each LM call, in order (see
    interface.example_output), each rendered with that predictor's signature and demos."""
    predictors = dict(program.named_predictors())
    calls = [
        Call(name, predictors[name].signature, predictors[name].demos, inputs)
        for name, inputs in run
        if name in predictors
    ]
    return calls, f"recorded run at publish ({len(calls)} LM call{'s' if len(calls) != 1 else ''})"


def measure_program(
    program: Any,
    example: Mapping[str, Any],
    model: str | None,
    trace: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
) -> TokenFigures:
    """The prompt tokens of one whole call of `program` (the recorded run's calls in `trace`, else one planned call
    per predictor) under DSPy's configured adapter (ChatAdapter when none), and its input cost at list price."""
    import dspy

    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    calls, basis = recorded_calls(program, trace) if trace else planned_calls(program, example)
    models = {name: getattr(p.lm, "model", None) or model for name, p in program.named_predictors()}
    tokens: dict[str, list[int]] = {}
    used: set[str] = set()
    cost: float | None = 0.0
    sources: dict[str, str] = {}
    for call in calls:
        which = models.get(call.predictor, model)
        name = encoding_name(which)
        used.add(name)
        messages = adapter.format(call.signature, list(call.demos), dict(call.inputs))
        count = count_messages(messages, name)
        tokens.setdefault(call.predictor, []).append(count)
        price, source = list_price(which)
        sources[source] = source
        cost = None if cost is None or price is None else cost + count * price
    return TokenFigures(
        tokenizer=", ".join(f"tiktoken {n}" for n in sorted(used)) or f"tiktoken {encoding_name(model)}",
        basis=basis,
        predictors={n: PredictorTokens(sum(c), len(c)) for n, c in tokens.items()},
        cost_per_1k_calls=None if cost is None else round(cost * 1000, 6),
        price_source="; ".join(sources) or list_price(model)[1],
    )
