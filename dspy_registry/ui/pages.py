"""Every page of the ui, by its relative path, rendered from the Registry facade's reads with one set of templates.

`dspyreg ui` (app.py) and `dspyreg site` (site.py) both call `Pages.render(path)`, so the live view and the static
site are the same HTML; links are relative (`../../qa.html`), so the site works from file:// and from any sub-path of
a git host's pages. Paths:

    index.html                              the programs
    programs/<p>.html                       versions, environments, charts
    programs/<p>/journal.html               environment moves as a timeline per environment
    programs/<p>/versions/<v>.html          manifest, interface, prompts per predictor, records
    programs/<p>/diff/<a>..<b>.html         two versions side by side, with the pickers

Read-only; never imports dspy (the rendered messages are the bundle's prompts/<predictor>.md files). The yanked
state and the lineage are shown as `show` shows them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..diff import PredictorDiff, WordOp
from ..errors import UnknownRef
from ..refs import PROGRAM_RE, is_version
from .charts import Series, line_chart

if TYPE_CHECKING:
    import jinja2

    from ..registry import Registry
    from ..results import BenchRecord, VersionInfo

HERE = Path(__file__).parent
STATIC = HERE / "static"
_PAGE = re.compile(
    r"(?:index\.html|programs/(?P<p>[^/]+?)(?:\.html|/journal\.html|/versions/(?P<v>[^/]+)\.html"
    r"|/diff/(?P<a>[^/]+?)\.\.(?P<b>[^/]+)\.html))"
)


@dataclass(frozen=True)
class Page:
    path: str
    html: str


def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def root_of(path: str) -> str:
    """The relative prefix from the page at `path` back to the site's root."""
    return "../" * path.count("/")


def diff_path(program: str, a: str, b: str) -> str:
    return f"programs/{program}/diff/{a}..{b}.html"


class Pages:
    """The ui's pages over one open registry (read-only)."""

    def __init__(self, registry: Registry, *, live: bool) -> None:
        self.registry = registry
        self.live = live  # the live view renders any diff pair; the static site only those it wrote
        self.env = _environment()
        self.static_diffs: dict[str, set[tuple[str, str]]] = {}

    # -- dispatch ----------------------------------------------------------------------------------------------------
    def render(self, path: str) -> str:
        """The HTML of the page at `path`; UnknownRef when no such page exists."""
        match = _PAGE.fullmatch(path)
        if match is None:
            raise UnknownRef(f"no page {path}")
        program, version, a, b = match.group("p", "v", "a", "b")
        if program is None:
            return self._index(path)
        if not PROGRAM_RE.fullmatch(program) or program not in self.registry.programs():
            raise UnknownRef(f"no program {program}")
        if version is not None:
            return self._version(path, program, self._version_name(version))
        if a is not None and b is not None:
            return self._diff(path, program, self._version_name(a), self._version_name(b))
        if path.endswith("/journal.html"):
            return self._journal(path, program)
        return self._program(path, program)

    @staticmethod
    def _version_name(text: str) -> str:
        if not is_version(text):
            raise UnknownRef(f"no version {text}")
        return text

    def site_paths(self) -> Iterator[str]:
        """Every page the static site writes: diffs of consecutive versions, of what the environments hold, and of
        every journaled move."""
        yield "index.html"
        for program in self.registry.programs():
            yield f"programs/{program}.html"
            yield f"programs/{program}/journal.html"
            versions = [v.version for v in self.registry.versions(program)]
            for version in versions:
                yield f"programs/{program}/versions/{version}.html"
            for a, b in sorted(self._site_pairs(program, versions), key=str):
                yield diff_path(program, a, b)

    def _site_pairs(self, program: str, versions: Sequence[str]) -> set[tuple[str, str]]:
        pairs = set(itertools.pairwise(versions))
        held = sorted(set(self.registry.environments_of(program).values()), key=versions.index)
        pairs |= {(a, b) for i, a in enumerate(held) for b in held[i + 1 :]}
        for e in self.registry.log(program):
            if e.from_version in versions and e.to_version in versions and e.from_version != e.to_version:
                pairs.add((e.from_version, e.to_version))  # type: ignore[arg-type]
        self.static_diffs[program] = pairs
        return pairs

    def _page(self, template: str, path: str, **context: Any) -> str:
        return self.env.get_template(template).render(root=root_of(path), live=self.live, **context)

    # -- pages -------------------------------------------------------------------------------------------------------
    def _index(self, path: str) -> str:
        programs = []
        for name in self.registry.programs():
            versions = self.registry.versions(name)
            programs.append(
                {
                    "name": name,
                    "count": len(versions),
                    "latest": versions[-1] if versions else None,
                    "environments": self.registry.environments_of(name),
                }
            )
        return self._page("index.html", path, programs=programs, location=self.registry.location)

    def _program(self, path: str, program: str) -> str:
        versions = self.registry.versions(program)
        environments = self.registry.environments_of(program)
        benches = _latest_benchmarks(self.registry, program)
        names = [v.version for v in versions]
        marks: dict[str, list[str]] = {}
        for env, version in environments.items():
            marks.setdefault(version, []).append(env)
        charts = [
            line_chart(
                "Score",
                names,
                [
                    Series("dev score", tuple(v.dev_score for v in versions)),
                    Series("latest eval", tuple(v.eval_score for v in versions)),
                ],
                marks,
            ),
            line_chart(
                "Latency per query (ms)",
                names,
                [
                    Series("p50", tuple(_bench(benches, n, "p50_ms") for n in names)),
                    Series("p95", tuple(_bench(benches, n, "p95_ms") for n in names)),
                ],
                marks,
                unit=" ms",
            ),
            line_chart(
                "Cost per query",
                names,
                [Series("cost", tuple(_bench(benches, n, "cost_per_query") for n in names))],
                marks,
                unit="$",
            ),
        ]
        rows = [_version_row(v, benches.get(v.version)) for v in reversed(versions)]  # newest first, as people read
        return self._page(
            "program.html",
            path,
            program=program,
            rows=rows,
            environments=_ordered_envs(environments, self.registry.config.environments),
            charts=charts,
        )

    def _journal(self, path: str, program: str) -> str:
        entries = self.registry.log(program)
        order = [*self.registry.config.environments, "rollback"]
        lanes = {env: [e for e in reversed(entries) if e.env == env] for env in order}
        lanes.update({e.env: [x for x in reversed(entries) if x.env == e.env] for e in entries if e.env not in lanes})
        return self._page("journal.html", path, program=program, lanes=lanes, count=len(entries))

    def _version(self, path: str, program: str, version: str) -> str:
        reg = self.registry
        detail = reg.show(version, program)
        view = reg.view(version, program)
        commit = detail.info.commit
        predictors = []
        for name, entry in detail.predictors.items():
            entry = entry if isinstance(entry, dict) else {}
            rendered = reg.store.read_blob(commit, f"{program}/prompts/{name}.md") if _safe_name(name) else None
            demos = entry.get("demos")
            predictors.append(
                {
                    "name": name,
                    "signature": entry.get("signature"),
                    "instructions": entry.get("instructions"),
                    "inputs": _fields(entry.get("inputs")),
                    "outputs": _fields(entry.get("outputs")),
                    "demos": [_demo_items(d) for d in demos] if isinstance(demos, list) else [],
                    "lm": entry.get("lm"),
                    "rendered": rendered.decode("utf-8", "replace") if rendered is not None else None,
                }
            )
        m = detail.manifest
        manifest_sections = {
            "program": {k: v for k, v in vars(m.program).items()},
            "optimization": {
                **{k: v for k, v in vars(m.optimization).items() if k != "metrics"},
                **dict(m.optimization.metrics),
            },
            "runtime": dict(m.runtime),
            "saved with": dict(m.saved_with),
            "lm": dict(m.lm),
        }
        versions = [v.version for v in reg.versions(program)]
        index = versions.index(version) if version in versions else -1
        return self._page(
            "version.html",
            path,
            program=program,
            version=version,
            info=detail.info,
            yanked=getattr(detail.info, "yanked", None),
            lineage=_lineage(m, versions, index),
            manifest=manifest_sections,
            files=sorted(m.files.items()),
            interface=view.interface or {},
            predictors=predictors,
            evaluations=[r.to_json() for r in detail.records.evaluations],
            benchmarks=[r.to_json() for r in detail.records.benchmarks],
            previous=versions[index - 1] if index > 0 else None,
        )

    def _diff(self, path: str, program: str, a: str, b: str) -> str:
        reg = self.registry
        diff = reg.diff(a, b, program)
        left, right = reg.view(a, program), reg.view(b, program)
        versions = [v.version for v in reg.versions(program)]
        predictors = []
        for name in [*left.predictors, *(n for n in right.predictors if n not in left.predictors)]:
            change = diff.changed.get(name)
            before, after = left.predictors.get(name), right.predictors.get(name)
            predictors.append(
                {
                    "name": name,
                    "status": "added"
                    if before is None
                    else "removed"
                    if after is None
                    else "changed"
                    if change
                    else "same",
                    "instructions": _instruction_sides(change, before, after),
                    "fields": (before.fields if before else (), after.fields if after else ()),
                    "demos": (len(before.demos) if before else 0, len(after.demos) if after else 0),
                    "change": change,
                    "changes": _change_lines(change) if change else [],
                }
            )
        pairs = "any" if self.live else [f"{x}..{y}" for x, y in sorted(self.static_diffs.get(program, set()))]
        return self._page(
            "diff.html",
            path,
            program=program,
            a=a,
            b=b,
            versions=versions,
            predictors=predictors,
            metadata=[(k, c.before, c.after) for k, c in diff.metadata.items()],
            interface=diff.interface.to_json() if diff.interface else None,
            empty=diff.is_empty,
            pairs=json.dumps(pairs),
        )


# -- helpers ---------------------------------------------------------------------------------------------------------
def _latest_benchmarks(registry: Registry, program: str) -> dict[str, BenchRecord]:
    from ..records import latest_benchmarks

    return latest_benchmarks(registry.store, program)


def _bench(benches: Mapping[str, BenchRecord], version: str, key: str) -> float | None:
    record = benches.get(version)
    value = getattr(record, key, None) if record is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _version_row(info: VersionInfo, bench: BenchRecord | None) -> dict[str, Any]:
    return {
        "version": info.version,
        "created": info.created,
        "environments": info.environments,
        "dev_score": info.dev_score,
        "eval_score": info.eval_score,
        "optimizer": info.optimizer,
        "author": getattr(info, "author", None),
        "yanked": getattr(info, "yanked", None),
        "p50": bench.p50_ms if bench else None,
        "cost": bench.cost_per_query if bench else None,
    }


def _ordered_envs(environments: Mapping[str, str], order: Sequence[str]) -> list[tuple[str, str | None]]:
    known = [*order, "rollback"]
    return [(e, environments.get(e)) for e in known] + [(e, v) for e, v in environments.items() if e not in known]


def _safe_name(name: str) -> bool:
    # Predictor names come from prompts.json, which anyone may push: only a plain dotted name names a file.
    return re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\[\]-]*", name) is not None and ".." not in name


def _fields(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    return [
        {k: str(f.get(k) or "") for k in ("name", "type", "description", "prefix")}
        for f in value
        if isinstance(f, dict)
    ]


def _demo_items(demo: Any) -> list[tuple[str, str]]:
    if not isinstance(demo, dict):
        return [("", json.dumps(demo))]
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in demo.items()]


def _lineage(manifest: Any, versions: Sequence[str], index: int) -> dict[str, Any]:
    """What this version came from: the manifest's [lineage] table once publish records one, else its predecessor."""
    from ..render import lineage_rows  # the rows `dspyreg show` prints, credentials masked as there

    rows = lineage_rows(manifest.lineage, manifest.runtime)
    if rows:
        return {"recorded": dict(rows), "previous": None}
    return {"recorded": None, "previous": versions[index - 1] if index > 0 else None}


def _instruction_sides(change: PredictorDiff | None, before: Any, after: Any) -> tuple[list[WordOp], list[WordOp]]:
    """The instructions of each side as word runs: deletions marked on the left, insertions on the right."""
    if change is not None and change.instructions is not None:
        words = change.instructions.words
        return [w for w in words if w.op != "insert"], [w for w in words if w.op != "delete"]
    text = (after or before).instructions if (after or before) is not None else None
    same = [WordOp("equal", text or "")]
    return same, same


def _change_lines(change: PredictorDiff) -> list[tuple[str, str, str]]:
    """Fields, demos, lm and other keys of one predictor's diff as (what, before, after) rows."""
    rows: list[tuple[str, str, str]] = []
    if change.fields is not None:
        f = change.fields
        rows += [("field added", "", _field_text(x)) for x in f.added]
        rows += [("field removed", _field_text(x), "") for x in f.removed]
        rows += [("field renamed", str(c.before), str(c.after)) for c in f.renamed]
        rows += [(f"field {label}", _field_text(c.before), _field_text(c.after)) for label, c in f.changed]
    if change.demos is not None:
        d = change.demos
        rows.append(
            (
                "demos",
                f"{d.before.bootstrapped} bootstrapped, {d.before.labeled} labeled",
                f"{d.after.bootstrapped} bootstrapped, {d.after.labeled} labeled",
            )
        )
        rows += [("demo added", "", _json(x)) for x in d.added]
        rows += [("demo removed", _json(x), "") for x in d.removed]
        rows += [("demo changed", _json(c.before), _json(c.after)) for c in d.changed]
        if d.reordered:
            rows.append(("demos reordered", "", "yes"))
    if change.lm is not None:
        rows.append(("lm", _json(change.lm.before), _json(change.lm.after)))
    rows += [(key, _json(c.before), _json(c.after)) for key, c in change.other.items()]
    return rows


def _field_text(value: Any) -> str:
    name, type_, desc = (getattr(value, k, None) for k in ("name", "type", "description"))
    if name is None and type_ is None:
        return str(value)
    return f"{name}: {type_ or '?'}" + (f" — {desc}" if desc else "")


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
