"""`dspyreg export --k8s`: manifests valid for Kubernetes (checked offline against its schemas), secrets only by
reference, bad flags refused with nothing written, and replicas started exactly as the Deployment says that follow
a promote on a real git daemon remote."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner, Result

from dspy_registry.cli import app
from dspy_registry.k8s import resource_name, to_yaml
from dspy_registry.registry import Registry

from .conftest import Machine, publish_example, ref_snapshot
from .serving import Server, free_port, http

K8S_VERSION = "1.30"  # the schemas kubernetes-validate ships; pinned so a new release cannot change the verdict
URL = "https://git.example.com/ml/registry.git"
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
runner = CliRunner()


def cli(registry: Path | str, *args: str, env: dict[str, str] | None = None) -> Result:
    """`dspyreg ARGS --registry REGISTRY`, in this process (these tests are about what an export writes)."""
    return runner.invoke(app, [*args, "--registry", str(registry)], env=env)


def dspyreg(registry: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """The same, as the `dspyreg` a user runs: its own process."""
    return subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *args, "--registry", str(registry)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def manifests(folder: Path) -> dict[str, Any]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((folder / "k8s").glob("*.yaml"))}


def container(folder: Path) -> dict[str, Any]:
    deployment = manifests(folder)["deployment.yaml"]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


@pytest.mark.parametrize("autoscale", [False, True], ids=["fixed", "hpa"])
def test_manifests_validate_against_the_kubernetes_schemas(
    published: Registry, registry_path: Path, tmp_path: Path, autoscale: bool
) -> None:
    published.promote("v1.1", "prod")
    out = tmp_path / "out"
    extra = ["--k8s-max-replicas", "6"] if autoscale else []
    result = cli(registry_path, "export", "prod", str(out), "--k8s", "--k8s-registry", URL, *extra)
    assert result.exit_code == 0, result.output
    docs = manifests(out)
    expected = {"deployment.yaml", "service.yaml", "kustomization.yaml"} | ({"hpa.yaml"} if autoscale else set())
    assert set(docs) == expected
    for file, doc in docs.items():
        if file != "kustomization.yaml":  # kustomize's own kind, not an API object
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION
    assert sorted(docs["kustomization.yaml"]["resources"]) == sorted(expected - {"kustomization.yaml"})
    deployment, service = docs["deployment.yaml"], docs["service.yaml"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
    serve = container(out)
    assert serve["args"][:2] == ["serve", "prod"] and serve["args"][serve["args"].index("--registry") + 1] == URL
    assert serve["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/health"
    assert serve["resources"]["requests"] and serve["resources"]["limits"]
    assert serve["image"] == "qa-serve:v1.1"
    if autoscale:
        hpa = docs["hpa.yaml"]
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["maxReplicas"] == 6
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    else:
        assert deployment["spec"]["replicas"] == 2
    owned = (out / ".dspyreg-bundle.json").read_text()
    assert all(f"k8s/{file}" in owned for file in (*docs, "Dockerfile"))  # a later export --force replaces them


def test_a_schema_violation_is_caught() -> None:
    """The validation above can fail: a Deployment with a misspelled field does not pass."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "qa"},
        "spec": {"replica": 2, "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(yaml.safe_load(to_yaml(bad)), K8S_VERSION, strict=True)


def test_secrets_are_only_referenced(published: Registry, registry_path: Path, tmp_path: Path) -> None:
    token, key = "tok-never-in-a-file-4711", "sk-never-in-a-file-4242"
    out = tmp_path / "out"
    env = {"DSPYREG_API_TOKEN": token, "DSPYREG_LM_API_KEY": key, "OPENAI_API_KEY": key}
    result = cli(registry_path, "export", "v1.1", str(out), "--k8s", "--k8s-registry", URL, env=env)
    assert result.exit_code == 0, result.output
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert token.encode() not in text and key.encode() not in text, path
    variables = {e["name"]: e for e in container(out)["env"]}
    for name, secret_key in (("DSPYREG_API_TOKEN", "api-token"), ("DSPYREG_LM_API_KEY", "lm-api-key")):
        assert "value" not in variables[name]
        assert variables[name]["valueFrom"]["secretKeyRef"] == {
            "name": "qa-dspyreg",
            "key": secret_key,
            "optional": name == "DSPYREG_LM_API_KEY",
        }


def test_names_and_labels_follow_kubernetes_rules(
    registry: Registry, registry_path: Path, tmp_path: Path, states: dict[str, Path]
) -> None:
    publish_example(registry, states["v1.0"], "v1.0", name="9_fast_qa")
    out = tmp_path / "out"
    result = cli(registry_path, "export", "9_fast_qa/v1.0", str(out), "--k8s", "--k8s-registry", URL)
    assert result.exit_code == 0, result.output
    for doc in manifests(out).values():
        if "metadata" not in doc:
            continue
        assert DNS_1035.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert all(LABEL_VALUE.fullmatch(v) for v in doc["metadata"]["labels"].values())
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert container(out)["args"][container(out)["args"].index("--name") + 1] == "9_fast_qa"
    assert resource_name("9_fast_qa") == "p-9-fast-qa"
    long_name = resource_name("a" * 62 + "_b")
    assert len(long_name) <= 63 and DNS_1035.fullmatch(long_name)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "local path"),
        (["--k8s-registry", "https://x-access-token:ghp_SECRET@github.com/o/r.git"], "credentials"),
        (["--k8s-registry", "https://ghp_SECRET@github.com/o/r.git"], "credentials"),
        (["--k8s-registry", "file:///srv/registry.git"], "file://"),
        (["--k8s-registry", URL, "--k8s-max-replicas", "1"], "--k8s-max-replicas"),
        (["--k8s-registry", URL, "--k8s-replicas", "0"], "--k8s-replicas"),
        (["--k8s-registry", URL, "--k8s-poll-seconds", "0"], "--k8s-poll-seconds"),
        (["--k8s-registry", URL, "--image", "Not An Image"], "--image"),
        (["--k8s-registry", URL, "--k8s-secret", "Bad_Secret"], "--k8s-secret"),
        (["--k8s-registry", URL, "--k8s-env", "nowhere"], "--k8s-env"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_flags_one_line_nothing_written(
    published: Registry, registry_path: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    before = ref_snapshot(registry_path)
    out = tmp_path / "out"
    result = cli(registry_path, "export", "v1.1", str(out), "--k8s", *args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "ghp_SECRET" not in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert ref_snapshot(registry_path) == before


def test_k8s_flags_without_k8s_are_refused(published: Registry, registry_path: Path, tmp_path: Path) -> None:
    result = dspyreg(registry_path, "export", "v1.1", str(tmp_path / "out"), "--image", "qa:v1")
    assert result.returncode == 1 and "--image" in result.stderr and "--k8s" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line from the real command too
    assert not (tmp_path / "out").exists()


def _replica(folder: Path, serve: dict[str, Any], secret: dict[str, str], root: Path) -> Server:
    """One pod, as the Deployment's container spec says: its command and args (the address swapped for a free
    loopback port, as each pod has its own network), its variables, the Secret's values by reference, and the
    emptyDir volumes as fresh folders."""
    assert serve["command"] == ["dspyreg"]
    args = list(serve["args"])
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    volumes = {m["mountPath"]: root / m["name"] for m in serve["volumeMounts"]}
    for path in volumes.values():
        path.mkdir(parents=True)
    env = dict(os.environ)
    for variable in serve["env"]:
        if "valueFrom" in variable:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "qa-dspyreg"
            env[variable["name"]] = secret[ref["key"]]
        else:
            value = variable["value"]
            env[variable["name"]] = str(volumes.get(value, value))
    log = root / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dspy_registry.cli", *args], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    return Server(proc, f"http://127.0.0.1:{port}", log)


@pytest.mark.slow
def test_two_replicas_follow_a_promote_on_the_remote(machines: list[Machine], fake_lm: Any, tmp_path: Path) -> None:
    a, _, c = machines
    with a.open() as reg:
        reg.promote("v1.0", "prod")
    out = tmp_path / "out"
    exported = cli(
        a.url, "export", "prod", str(out), "--k8s", "--k8s-poll-seconds", "0.5", env={"DSPYREG_CACHE": str(a.cache)}
    )
    assert exported.exit_code == 0, exported.output
    serve = container(out)
    assert serve["args"][serve["args"].index("--registry") + 1] == a.url  # the remote the command used
    token = "tok-replicas-test"
    secret = {"api-token": token, "lm-api-key": "sk-test-not-a-secret"}
    auth = {"Authorization": f"Bearer {token}"}
    replicas = [_replica(out, serve, secret, tmp_path / f"pod-{i}") for i in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready()
            for probe in ("readinessProbe", "livenessProbe"):
                assert replica.get(serve[probe]["httpGet"]["path"])[0] == 200, probe
            assert replica.get("/version")[0] == 401  # the token from the Secret is in force
            assert replica.get("/version", headers=auth)[1]["version"] == "v1.0"
        with c.open() as reg:
            reg.promote("v1.1", "prod", reason="from a third machine")
        deadline = time.time() + 60
        pending = list(replicas)
        while pending:
            pending = [r for r in pending if r.get("/version", headers=auth)[1]["version"] != "v1.1"]
            assert time.time() < deadline, f"{len(pending)} replica(s) did not follow the promote"
            time.sleep(0.1)
        for replica in replicas:
            status, body, _ = http("POST", replica.base + "/predict", {"question": "q"}, headers=auth)
            assert status == 200 and body["version"] == "v1.1", body
    finally:
        for replica in replicas:
            replica.proc.terminate()
        for replica in replicas:
            try:
                replica.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
