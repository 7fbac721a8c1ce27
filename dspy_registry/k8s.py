"""Kubernetes manifests for a fleet of `dspyreg serve` replicas that follow an environment on a remote registry.

`dspyreg export REF DIR --k8s` adds `k8s/` to the deployment bundle: a Deployment whose pods run `dspyreg serve ENV
--registry URL` (each replica polls the environment tag and swaps versions by itself, so N replicas follow promote
and rollback with no redeploy), a Service, an optional HorizontalPodAutoscaler, a kustomization.yaml for
`kubectl apply -k`, and the Dockerfile of the image the pods run (dspyreg, git and the program's pinned runtime).

Secrets (the API token, the LM key) are only ever named by reference to a Secret; the registry URL must carry no
credentials. The YAML is written by a small emitter here (every string quoted as JSON, which YAML reads as is), so
no YAML library is needed. Pure: names and files in, files out; imports nothing heavy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import RegistryError
from .gitremote import is_url
from .manifest import Manifest

PORT = 8000  # the container's port, as in the exported Dockerfile
SECRET_KEYS = {"DSPYREG_API_TOKEN": "api-token", "DSPYREG_LM_API_KEY": "lm-api-key"}
CACHE_PATH = "/cache"
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},  # no CPU limit: throttling a server that waits on an LM only adds latency
}
_DNS_1035_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_IMAGE_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


@dataclass(frozen=True)
class K8sOptions:
    """What `export --k8s` was asked for, each value checked (see `k8s_options`)."""

    registry_url: str
    environment: str
    image: str
    replicas: int = 2
    max_replicas: int | None = None  # set: also write an HorizontalPodAutoscaler
    poll_seconds: float = 5.0
    secret: str | None = None  # default: <name>-dspyreg


def k8s_options(
    *,
    program: str,
    version: str,
    registry_location: str,
    registry_url: str | None,
    environment: str,
    image: str | None,
    replicas: int,
    max_replicas: int | None,
    poll_seconds: float,
    secret: str | None,
) -> K8sOptions:
    """Check the flags of `export --k8s` before anything is written; a bad one is RegistryError naming it."""
    url = registry_url if registry_url is not None else registry_location
    if not is_url(url):
        raise RegistryError(
            f"--k8s needs a registry the pods can reach: {registry_location} is a local path; "
            "pass --k8s-registry URL (the git URL of the registry)"
        )
    check_registry_url(url)
    if replicas < 1:
        raise RegistryError(f"--k8s-replicas must be at least 1, got {replicas}")
    if max_replicas is not None and max_replicas < replicas:
        raise RegistryError(f"--k8s-max-replicas {max_replicas} must be at least --k8s-replicas {replicas}")
    if not 0 < poll_seconds <= 3600:
        raise RegistryError(f"--k8s-poll-seconds must be more than 0 and at most 3600, got {poll_seconds:g}")
    chosen = image if image is not None else default_image(program, version)
    if not _IMAGE_RE.fullmatch(chosen) or len(chosen) > 255:
        raise RegistryError(f"--image {chosen[:80]!r} is not an image reference such as registry.example.com/qa:v1.1")
    if secret is not None and not (_DNS_1035_RE.fullmatch(secret) and len(secret) <= 63):
        raise RegistryError(f"--k8s-secret {secret[:80]!r} is not a Kubernetes name (a-z, 0-9 and -, at most 63)")
    return K8sOptions(url, environment, chosen, replicas, max_replicas, poll_seconds, secret)


def check_registry_url(url: str) -> None:
    """A URL that goes into a manifest: reachable from a pod (not file://) and without a token or password in it.

    A user name alone (ssh://git@host/...) is not a credential; an https user is (tokens go there)."""
    if url.startswith("file:"):
        raise RegistryError("--k8s-registry: a file:// URL names a path pods cannot see; pass the git server's URL")
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None or (parts.username is not None and parts.scheme in ("http", "https")):
            raise RegistryError(
                "--k8s-registry must not carry credentials (a token or password before @): give the URL without "
                "them and let git find them (a credential helper, or a deploy key for ssh)"
            )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise RegistryError("--k8s-registry must not contain spaces or control characters")


def resource_name(program: str) -> str:
    """The Kubernetes name for a program: DNS-1035 (a Service's name must start with a letter), at most 63."""
    name = program.replace("_", "-")
    if not name[:1].isalpha():
        name = f"p-{name}"
    name = name[:63].rstrip("-")
    if not _DNS_1035_RE.fullmatch(name):
        raise RegistryError(f"cannot make a Kubernetes name from the program name {program!r}")
    return name


def default_image(program: str, version: str) -> str:
    return f"{resource_name(program)}-serve:{version}"


def kubernetes_files(files: Mapping[str, bytes], options: K8sOptions) -> dict[str, bytes]:
    """`k8s/` for the deployment bundle `files` (its manifest.toml names the program, the LM and the runtime)."""
    manifest = Manifest.loads(files["manifest.toml"], where="manifest.toml")
    program = manifest.program.name
    name = resource_name(program)
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": options.environment,
        "app.kubernetes.io/managed-by": "dspyreg",
    }
    out = {
        "k8s/deployment.yaml": deployment(manifest, name, labels, options),
        "k8s/service.yaml": service(name, labels),
    }
    if options.max_replicas is not None:
        out["k8s/hpa.yaml"] = autoscaler(name, labels, options)
    resources = [path.removeprefix("k8s/") for path in out]
    out["k8s/kustomization.yaml"] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }
    written = {path: to_yaml(doc, header=_header(manifest, options)).encode() for path, doc in out.items()}
    written["k8s/Dockerfile"] = image_dockerfile(manifest).encode()
    return written


def serve_args(program: str, options: K8sOptions) -> list[str]:
    """What each replica runs after `dspyreg`: follow the environment on the remote registry."""
    return [
        "serve",
        options.environment,
        "--name",
        program,
        "--registry",
        options.registry_url,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--poll-seconds",
        f"{options.poll_seconds:g}",
    ]


def deployment(manifest: Manifest, name: str, labels: dict[str, str], options: K8sOptions) -> dict[str, Any]:
    secret = options.secret or f"{name}-dspyreg"
    env: list[dict[str, Any]] = [{"name": "DSPYREG_CACHE", "value": CACHE_PATH}, {"name": "HOME", "value": "/tmp"}]
    if manifest.lm.get("model"):
        env.append({"name": "DSPYREG_LM_MODEL", "value": str(manifest.lm["model"])})
    for variable, key in SECRET_KEYS.items():
        # The API token is required (a pod without it would serve without auth); the LM key is optional, for LMs
        # that need none (a local server).
        optional = variable == "DSPYREG_LM_API_KEY"
        env.append(
            {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
        )
    container = {
        "name": "serve",
        "image": options.image,
        "command": ["dspyreg"],
        "args": serve_args(manifest.program.name, options),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": DEFAULT_RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_PATH}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: dict[str, Any] = {
        "replicas": options.replicas,
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
                "containers": [container],
                "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
            },
        },
    }
    if options.max_replicas is not None:
        del spec["replicas"]  # the autoscaler owns the count; a fixed one here would fight it on every apply
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels}, "spec": spec}


def service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(name: str, labels: dict[str, str], options: K8sOptions) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def image_dockerfile(manifest: Manifest) -> str:
    """The image the pods run: dspyreg with its serve extra, git (it reads the registry), and the program's runtime
    as pinned in requirements.txt. It holds no version of the program: each pod fetches what the environment names."""
    from .version import __version__

    python = ".".join(manifest.runtime.get("python", "3.11").split(".")[:2])
    return f"""# The image of `dspyreg serve` for {manifest.program.name}, exported by dspyreg. Build it from the export
# folder:
#   docker build -f k8s/Dockerfile -t IMAGE .
FROM python:{python}-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt "dspy-registry[serve]=={__version__}"
RUN useradd --uid 10001 --user-group --no-create-home dspyreg
USER 10001
ENV PYTHONUNBUFFERED=1 DSPYREG_CACHE={CACHE_PATH} HOME=/tmp
EXPOSE {PORT}
CMD ["dspyreg", "serve", "--help"]
"""


def _header(manifest: Manifest, options: K8sOptions) -> str:
    return (
        f"# {manifest.program.name}: `dspyreg serve` replicas following {options.environment} on "
        f"{options.registry_url}, exported by dspyreg.\n"
    )


def to_yaml(value: Any, *, header: str = "") -> str:
    """YAML for manifests: block style, every string quoted as JSON (a YAML double-quoted scalar), so no value is
    ever read back as a number, a boolean or a null by mistake."""
    return header + "".join(_yaml_lines(value, 0)) + ("" if isinstance(value, (dict, list)) and value else "\n")


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value, allow_nan=False)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _key(key: str) -> str:
    return key if _PLAIN_KEY_RE.fullmatch(key) and key.lower() not in _YAML_WORDS else json.dumps(key)


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_key(key)}:\n")
                lines += _yaml_lines(item, indent + 2)
            else:
                lines.append(f"{pad}{_key(key)}: {_inline(item)}\n")
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{pad}- {_inline(item)}\n")
    else:
        lines.append(pad + _inline(value))
    return lines


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
