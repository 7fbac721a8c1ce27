"""Publishing from a notebook: a real .ipynb run by nbclient in an IPython kernel defines a program in its cells,
compiles it offline and publishes it; a fresh process loads it through the normal path with the same prompts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import git, ref_snapshot

SETUP_CELL = """
import json
import re

import dspy
import dspy_registry
from dspy.utils import DummyLM
from dspy_registry.prompts import program_prompts
"""

SIGNATURE_CELL = '''
STYLE = "one short sentence"
STOPWORDS = ("please", "kindly")


class AnswerBriefly(dspy.Signature):
    """Answer the question in one short sentence."""

    question: str = dspy.InputField(desc="A question, tidied by tidy().")
    answer: str = dspy.OutputField(desc=f"The answer, in {STYLE}.")


def tidy(text):
    words = [w for w in re.findall(r"\\S+", text) if w.lower() not in STOPWORDS]
    return " ".join(words)
'''

MODULE_CELL = """
class TidyQA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.respond = dspy.Predict(AnswerBriefly)

    def forward(self, question):
        return self.respond(question=tidy(question))
"""

COMPILE_CELL = """
trainset = [
    dspy.Example(question=q, answer=a).with_inputs("question")
    for q, a in [("What is DSPy?", "A framework."), ("Please, what is git?", "A store."), ("Why JSON?", "Safe.")]
]
teacher_lm = DummyLM([{"answer": f"Scripted answer {i}."} for i in range(20)])
optimizer = dspy.BootstrapFewShot(
    metric=lambda ex, pred, trace=None: bool(pred.answer), max_bootstrapped_demos=2, max_labeled_demos=2
)
with dspy.context(lm=teacher_lm):
    program = optimizer.compile(TidyQA(), trainset=trainset)
assert len(program.respond.demos) == 2
"""


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec for this Python in a private Jupyter data folder: the notebook runs on the code under test."""
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / "dspyreg-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "dspyreg test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return "dspyreg-test"


def run_notebook(cells: list[str], folder: Path, kernel: str) -> list[str]:
    """Write the cells as a real .ipynb, execute it in an IPython kernel and return each cell's printed text."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(cell).strip()) for cell in cells]
    path = folder / "publish.ipynb"
    nbformat.write(notebook, path)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name=kernel, resources={"metadata": {"path": str(folder)}}).execute()
    return [
        "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream") for cell in notebook.cells
    ]


def test_a_program_defined_in_notebook_cells_publishes_and_loads_in_a_fresh_process(
    registry_path: Path, tmp_path: Path, kernel_name: str
) -> None:
    publish_cell = f"""
    result = dspy_registry.publish(program, registry={str(registry_path)!r}, name="tidy", version="v1.0")
    print(result.version, result.commit)
    with open("notebook_prompts.json", "w") as out:
        json.dump(program_prompts(program), out, sort_keys=True)
    """
    outputs = run_notebook([SETUP_CELL, SIGNATURE_CELL, MODULE_CELL, COMPILE_CELL, publish_cell], tmp_path, kernel_name)
    assert outputs[-1].startswith("v1.0 ")

    code = git(registry_path, "show", "main:tidy/code/notebook_program.py")
    assert "class TidyQA(dspy.Module):" in code and "class AnswerBriefly(dspy.Signature):" in code
    assert "def tidy(text):" in code and "STOPWORDS = ('please', 'kindly')" in code and "import re" in code
    assert "trainset" not in code and "teacher_lm" not in code and "lambda" not in code  # only what the class uses
    assert 'entrypoint = "notebook_program:TidyQA"' in git(registry_path, "show", "main:tidy/manifest.toml")

    # A fresh process, away from the notebook's folder: the normal load path, then one call through tidy().
    loader = f"""
    import json, sys
    import dspy, dspy_registry
    from dspy.utils import DummyLM
    from dspy_registry.prompts import program_prompts
    program = dspy_registry.load("tidy", "v1.0", registry={str(registry_path)!r})
    lm = DummyLM([{{"answer": "A version store."}}])
    with dspy.context(lm=lm):
        answer = program(question="Please tell me what git is").answer
    asked = lm.history[-1]["messages"][-1]["content"]
    assert "tell me what git is" in asked and "Please" not in asked, asked
    json.dump({{"answer": answer, "prompts": program_prompts(program)}}, sys.stdout, sort_keys=True)
    """
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(loader)], cwd=fresh, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert loaded["answer"] == "A version store."
    notebook_prompts = json.loads((tmp_path / "notebook_prompts.json").read_text())
    assert loaded["prompts"] == notebook_prompts
    assert json.loads(git(registry_path, "show", "main:tidy/prompts.json")) == notebook_prompts
    assert len(notebook_prompts["respond"]["demos"]) == 2


def test_a_notebook_class_using_a_runtime_object_is_refused_naming_it(
    registry_path: Path, tmp_path: Path, kernel_name: str
) -> None:
    runtime_cell = """
    judge_lm = dspy.LM("openai/gpt-4o-mini", api_key="sk-not-a-real-key")

    class Judged(dspy.Module):
        def __init__(self):
            super().__init__()
            self.respond = dspy.Predict("question -> answer")

        def forward(self, question):
            with dspy.context(lm=judge_lm):
                return self.respond(question=question)
    """
    lambda_cell = """
    shout = lambda text: text.upper()

    class Shouting(dspy.Module):
        def __init__(self):
            super().__init__()
            self.respond = dspy.Predict("question -> answer")

        def forward(self, question):
            return self.respond(question=shout(question))
    """
    publish_cell = f"""
    for made in (Judged(), Shouting()):
        try:
            dspy_registry.publish(made, registry={str(registry_path)!r}, name="judged", version="v1.0")
        except dspy_registry.RegistryError as err:
            print(type(err).__name__, err)
    """
    before = ref_snapshot(registry_path)
    outputs = run_notebook([SETUP_CELL, runtime_cell, lambda_cell, publish_cell], tmp_path, kernel_name)
    lines = outputs[-1].splitlines()
    assert lines == [
        "CaptureError cannot capture Judged from the notebook: it uses 'judge_lm', a dspy.clients.lm.LM object made "
        "at run time; create it inside the class (e.g. in __init__), or define it in a .py module and import it",
        "CaptureError cannot capture Shouting from the notebook: it uses 'shout', a lambda defined in the notebook; "
        "write it as a def, or define it in a .py module and import it",
    ]
    assert ref_snapshot(registry_path) == before


def test_a_script_class_that_cannot_rebuild_is_refused_in_one_line(registry_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        import dspy, dspy_registry

        Made = dspy.Signature("question -> answer", "Answer.")

        class UsesMade(dspy.Module):
            def __init__(self):
                super().__init__()
                self.respond = dspy.Predict(Made)

        class NeedsK(dspy.Module):
            def __init__(self, k):
                super().__init__()
                self.respond = dspy.Predict("question -> answer")

        for made in (UsesMade(), NeedsK(3)):
            try:
                dspy_registry.publish(made, registry={str(registry_path)!r}, name="made", version="v1")
            except dspy_registry.RegistryError as err:
                print(err)
        """)
    )
    before = ref_snapshot(registry_path)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert proc.stdout.splitlines() == [
        "cannot capture UsesMade from the script: it uses 'Made', a class made at run time, not by a class statement; "
        "make it inside the class, or define it in a .py module and import it",
        "load makes NeedsK with no arguments, and NeedsK() fails: TypeError: NeedsK.__init__() missing 1 required "
        "positional argument: 'k'; give the arguments of its __init__ defaults",
    ], proc.stderr
    assert ref_snapshot(registry_path) == before
