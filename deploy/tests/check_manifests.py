"""Render and check the Kubernetes manifests in deploy/kubernetes/.

Usage: check_manifests.py TARGET, TARGET being `base`, an overlay name (`overlap`,
`strict`, `retire`, `rollback`), `rollback-equals-base` or `secret-template`. Exits 0 when
every check of that target holds, 1 otherwise, printing one line per problem.

Each rendering is checked three ways:
  1. kustomize renders it (`kubectl kustomize`, or a standalone `kustomize build`);
  2. every object validates against the Kubernetes OpenAPI schemas of the oldest and
     newest versions we support (kubernetes-validate, strict: unknown fields are errors);
  3. the objects agree with each other and with the gate's documented interface: selectors match the
     pod, ports and probes point where the gate listens, the shutdown timings fit in the
     grace period, the security context is locked down, and the secret wiring is the one
     the rotation phase calls for (docs/operations.md).

The PodMonitor is a Prometheus Operator CRD, for which kubernetes-validate has no schema:
it gets the structural checks of step 3 instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = REPO / "deploy" / "kubernetes"

# Schemas: 1.30 is the oldest version whose kubelet runs the `sleep` preStop action by
# default (it needs no shell in the distroless image); the newest is whatever
# kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# The variables the gate reads (README, "Configuration"). `_FILE` is allowed for the secrets.
CONTRACT_ENV = {
    "INTERSERVICE_HMAC_SECRET", "INTERSERVICE_HMAC_SECRET_PREV",
    "INTERSERVICE_HMAC_SECRET_FILE", "INTERSERVICE_HMAC_SECRET_PREV_FILE",
    "INTERSERVICE_HMAC_KEY_ID", "INTERSERVICE_HMAC_KEY_ID_PREV",
    "INTERSERVICE_HMAC_STRICT_KEY_ID", "REQUIRE_SIGNATURE", "TOOL_GATE_DUAL_SIGN",
    "GATE_CONFIG", "GATE_LISTEN", "GATE_UPSTREAM", "GATE_ADMIN_LISTEN", "GATE_MAX_BODY_BYTES",
    "GATE_CLOCK_SKEW_SECS", "GATE_NONCE_CACHE_CAPACITY", "GATE_UNSIGNED_PATHS",
    "GATE_UPSTREAM_TIMEOUT_SECS", "GATE_SHUTDOWN_GRACE_SECS", "GATE_LOG_FORMAT",
    "GATE_ALLOW_WEAK_SECRET",
    # Beyond the README's main table, read by the gate (`sig-gate check-config` lists them).
    "GATE_HEADER_READ_TIMEOUT_SECS", "GATE_BODY_READ_TIMEOUT_SECS",
}

SECRET_NAME = "sig-gate-hmac"
# The entries of Secret sig-gate-hmac (secret.template.yaml documents them).
SECRET_KEYS = {"current", "current-key-id", "next", "next-key-id"}
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# What each rotation phase must wire, as (secret file entry, key-id entry) for the current
# and the previous slot, and the strict flag. docs/operations.md describes the same table.
PHASES = {
    "base": dict(current=("current", "current-key-id"), previous=None, strict="false", label="steady"),
    "overlap": dict(current=("next", "next-key-id"), previous=("current", "current-key-id"), strict="false", label="overlap"),
    "strict": dict(current=("next", "next-key-id"), previous=("current", "current-key-id"), strict="true", label="strict"),
    "retire": dict(current=("next", "next-key-id"), previous=None, strict="true", label="retire"),
    "rollback": dict(current=("current", "current-key-id"), previous=None, strict="false", label="rollback"),
}
PHASE_LABEL = "sig-gate/rotation-phase"


class Problems:
    """Collects failed checks so one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.items.append(message)
        return ok


def renderer() -> list[str] | None:
    """The kustomize command to use, or None. kubectl embeds kustomize (v5 in kubectl
    >= 1.27); components need kustomize >= 3.7, which every kubectl since 1.21 has."""
    override = os.environ.get("KUSTOMIZE_RENDER")
    if override:
        return override.split()
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True)
        match = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out.stdout)
        if match and (int(match[1]), int(match[2])) >= (3, 7):
            return ["kubectl", "kustomize"]
    return None


def render(path: Path) -> list[dict]:
    command = renderer()
    if command is None:
        raise SystemExit(
            "no kustomize renderer: need `kubectl` (with kustomize >= 3.7 embedded) or "
            "`kustomize` on PATH, or KUSTOMIZE_RENDER set to a command that takes a directory"
        )
    out = subprocess.run([*command, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} {path} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def schema_validate(docs: list[dict], problems: Problems) -> None:
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.check(doc.get("kind") == "PodMonitor",
                               f"{name}: no schema in Kubernetes {version}")
            except kubernetes_validate.ValidationError as err:
                problems.check(False, f"{name}: invalid for Kubernetes {version}: {err.message} at {list(err.path)}")


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise SystemExit(f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    """matchLabels semantics (the only form these manifests use)."""
    match = selector.get("matchLabels", {})
    return bool(match) and set(selector) <= {"matchLabels"} and all(labels.get(k) == v for k, v in match.items())


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def env_map(container: dict) -> dict[str, dict]:
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"container {container['name']}: env set twice: {sorted(dupes)}")
    return {e["name"]: e for e in entries}


def check_rendering(docs: list[dict], phase: str, problems: Problems) -> None:
    deployment = one(docs, "Deployment")
    service = one(docs, "Service")
    podmonitor = one(docs, "PodMonitor")
    netpol = one(docs, "NetworkPolicy")
    pdb = one(docs, "PodDisruptionBudget")
    p = problems.check

    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    pod = template["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    p(set(containers) == {"sig-gate", "tool-gate"}, f"containers are {sorted(containers)}, want sig-gate and tool-gate")
    gate, app = containers["sig-gate"], containers["tool-gate"]

    # Selectors: everything must find the pods, and nothing may select on the phase label
    # (it changes at every rotation step; a Deployment's selector is immutable).
    p(selects(deployment["spec"]["selector"], pod_labels), "Deployment selector does not match its pod template")
    for obj, selector in ((service, {"matchLabels": service["spec"]["selector"]}),
                          (podmonitor, podmonitor["spec"]["selector"]),
                          (netpol, netpol["spec"]["podSelector"]),
                          (pdb, pdb["spec"]["selector"])):
        p(selects(selector, pod_labels), f"{obj['kind']} selector does not select the pods")
        p(PHASE_LABEL not in selector.get("matchLabels", {}), f"{obj['kind']} selects on {PHASE_LABEL}")
    p(PHASE_LABEL not in deployment["spec"]["selector"].get("matchLabels", {}), f"Deployment selects on {PHASE_LABEL}")
    p(pod_labels.get(PHASE_LABEL) == PHASES[phase]["label"],
      f"pod label {PHASE_LABEL}={pod_labels.get(PHASE_LABEL)!r}, want {PHASES[phase]['label']!r}")

    # Ports: the Service targets the gate, never tool-gate; tool-gate exposes nothing.
    ports = {pt["name"]: pt["containerPort"] for pt in gate.get("ports", [])}
    p(set(ports) == {"gate", "gate-admin"}, f"sig-gate ports are {sorted(ports)}, want gate and gate-admin")
    p(not app.get("ports"), "tool-gate declares ports: it must listen on loopback only")
    env = env_map(gate)
    p(set(env) <= CONTRACT_ENV, f"sig-gate env the gate does not read: {sorted(set(env) - CONTRACT_ENV)}")
    value = lambda name: env.get(name, {}).get("value")  # noqa: E731
    p(value("GATE_LISTEN") and port_of(value("GATE_LISTEN")) == ports.get("gate"),
      "GATE_LISTEN does not match container port `gate`")
    admin = value("GATE_ADMIN_LISTEN") or ""
    p(admin.startswith("0.0.0.0:") and port_of(admin) == ports.get("gate-admin"),
      "GATE_ADMIN_LISTEN must be 0.0.0.0:<gate-admin port> so the kubelet and Prometheus reach it")
    for sp in service["spec"]["ports"]:
        p(sp.get("targetPort") in ("gate", ports.get("gate")), f"Service port {sp.get('name')} does not target the gate")
    upstream = urlsplit(value("GATE_UPSTREAM") or "")
    p(upstream.hostname == "127.0.0.1", "GATE_UPSTREAM must be tool-gate on 127.0.0.1")
    app_env = env_map(app)
    app_listen = app_env.get("TOOL_GATE_LISTEN", {}).get("value", "")
    p(app_listen.startswith("127.0.0.1:") and port_of(app_listen) == upstream.port,
      f"tool-gate listens on {app_listen!r}, GATE_UPSTREAM points at port {upstream.port}")

    # NetworkPolicy: ingress only to the gate's two ports.
    allowed = {pt.get("port") for rule in netpol["spec"].get("ingress", []) for pt in rule.get("ports", [])}
    p(netpol["spec"].get("policyTypes") == ["Ingress"] and allowed == {"gate", "gate-admin"},
      f"NetworkPolicy admits {sorted(map(str, allowed))}, want only gate and gate-admin")
    p(all(rule.get("ports") for rule in netpol["spec"].get("ingress", [])), "a NetworkPolicy rule admits every port")

    # Probes and scraping, on the admin port.
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = gate.get(probe, {}).get("httpGet", {})
        p(get.get("path") == path and get.get("port") in ("gate-admin", ports.get("gate-admin")),
          f"sig-gate {probe} must GET {path} on the admin port")
    startup = gate.get("startupProbe", {}).get("exec", {}).get("command", [])
    p(startup[:2] == ["sig-gate", "probe"] and urlsplit(startup[-1]).port == upstream.port,
      f"sig-gate startupProbe must be `sig-gate probe` against tool-gate, got {startup}")
    annotations = template["metadata"].get("annotations", {})
    p(annotations.get("prometheus.io/scrape") == "true"
      and annotations.get("prometheus.io/port") == str(ports.get("gate-admin"))
      and annotations.get("prometheus.io/path") == "/metrics",
      "prometheus.io/* annotations must point at the admin port's /metrics")
    endpoints = podmonitor["spec"].get("podMetricsEndpoints", [])
    p(podmonitor.get("apiVersion") == "monitoring.coreos.com/v1" and len(endpoints) == 1
      and endpoints[0].get("port") == "gate-admin" and endpoints[0].get("path") == "/metrics",
      "PodMonitor must scrape gate-admin /metrics")
    p(set(podmonitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"},
      f"PodMonitor spec has unexpected fields {sorted(podmonitor['spec'])}")

    # Shutdown timings (deployment.yaml's header explains them).
    grace_secs = int(value("GATE_SHUTDOWN_GRACE_SECS") or 30)
    gate_sleep = gate.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    app_sleep = app.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    termination = pod.get("terminationGracePeriodSeconds", 30)
    if p(isinstance(gate_sleep, int) and isinstance(app_sleep, int), "both containers need a preStop sleep"):
        p(gate_sleep >= 1, "sig-gate preStop must wait for the endpoint removal to propagate")
        p(app_sleep >= gate_sleep + grace_secs,
          f"tool-gate stops at {app_sleep}s, before sig-gate's drain ends at {gate_sleep}+{grace_secs}s")
        p(termination >= app_sleep + 5,
          f"terminationGracePeriodSeconds {termination} leaves tool-gate under 5 s after its {app_sleep}s preStop")
        p(termination > gate_sleep + grace_secs,
          f"terminationGracePeriodSeconds {termination} cuts sig-gate's drain ({gate_sleep}+{grace_secs}s)")
    rolling = deployment["spec"].get("strategy", {}).get("rollingUpdate", {})
    p(rolling.get("maxUnavailable") == 0, "rolling updates must keep every old pod until its successor is Ready")

    # Security context and resources.
    pod_sc = pod.get("securityContext", {})
    p(pod_sc.get("runAsNonRoot") is True and isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0,
      "pod must run as a numeric non-root user")
    p(pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod needs the RuntimeDefault seccomp profile")
    p(pod.get("automountServiceAccountToken") is False, "the pod needs no API token: automountServiceAccountToken: false")
    for name, c in containers.items():
        sc = c.get("securityContext", {})
        p(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
          and sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add")
          and not sc.get("privileged"),
          f"{name}: securityContext must drop ALL capabilities, forbid escalation, mount root read-only")
        res = c.get("resources", {})
        p(all(k in res.get(kind, {}) for kind in ("requests", "limits") for k in ("cpu", "memory")),
          f"{name}: needs cpu and memory requests and limits")
        p(":latest" not in c["image"], f"{name}: image {c['image']} uses :latest")

    # Secret wiring for this phase.
    want = PHASES[phase]
    mounts = {m["name"]: m for m in gate.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    hmac = mounts.get("hmac", {})
    p(hmac.get("readOnly") is True and volumes.get("hmac", {}).get("secret", {}).get("secretName") == SECRET_NAME,
      f"sig-gate must mount Secret {SECRET_NAME} read-only as volume `hmac`")
    mode = volumes.get("hmac", {}).get("secret", {}).get("defaultMode")
    p(mode is not None and mode & 0o007 == 0, "secret files must not be world-readable")
    secret_dir = hmac.get("mountPath", "/nonexistent")

    def slot(file_var: str, id_var: str, expected: tuple[str, str] | None, what: str) -> None:
        if expected is None:
            p(file_var not in env and id_var not in env and file_var.removesuffix("_FILE") not in env,
              f"{phase}: {what} secret must be unset")
            return
        file_entry, id_entry = expected
        p(value(file_var) == f"{secret_dir}/{file_entry}", f"{phase}: {file_var}={value(file_var)!r}, want {secret_dir}/{file_entry}")
        p(file_var.removesuffix("_FILE") not in env, f"{phase}: secret given directly as {file_var.removesuffix('_FILE')}")
        ref = env.get(id_var, {}).get("valueFrom", {}).get("secretKeyRef", {})
        p(ref.get("name") == SECRET_NAME and ref.get("key") == id_entry,
          f"{phase}: {id_var} must come from {SECRET_NAME}/{id_entry}, got {ref}")

    slot("INTERSERVICE_HMAC_SECRET_FILE", "INTERSERVICE_HMAC_KEY_ID", want["current"], "current")
    slot("INTERSERVICE_HMAC_SECRET_PREV_FILE", "INTERSERVICE_HMAC_KEY_ID_PREV", want["previous"], "previous")
    p(value("INTERSERVICE_HMAC_STRICT_KEY_ID") == want["strict"],
      f"{phase}: INTERSERVICE_HMAC_STRICT_KEY_ID={value('INTERSERVICE_HMAC_STRICT_KEY_ID')!r}, want {want['strict']!r}")
    p(value("REQUIRE_SIGNATURE") == "true", "REQUIRE_SIGNATURE must be true: report-only is not a deploy state")
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})}
    files = {Path(v["value"]).name for v in env.values() if v["name"].endswith("_FILE")}
    p(refs | files <= SECRET_KEYS, f"unknown Secret entries referenced: {sorted((refs | files) - SECRET_KEYS)}")


def check_secret_template(problems: Problems) -> None:
    docs = [d for d in yaml.safe_load_all((KUSTOMIZE_DIR / "secret.template.yaml").read_text()) if d]
    schema_validate(docs, problems)
    secret = one(docs, "Secret")
    data = secret.get("stringData", {})
    p = problems.check
    p(secret["metadata"]["name"] == SECRET_NAME, f"template names {secret['metadata']['name']}, want {SECRET_NAME}")
    p(set(data) <= SECRET_KEYS and {"current", "current-key-id"} <= set(data),
      f"template entries {sorted(data)}, want current and current-key-id (next* during rotation)")
    for key, val in data.items():
        if key.endswith("key-id"):
            p(bool(KEY_ID_RE.match(val)), f"template {key}={val!r} is not a valid key id")
        else:
            # The gate refuses secrets under 32 bytes: an unedited template cannot go live.
            p(len(val.encode()) < 32, f"template {key} is a usable secret: it must stay under 32 bytes")
    # The base must not carry any Secret: values never go into git.
    base_files = (KUSTOMIZE_DIR / "base").glob("*.yaml")
    p(not any("kind: Secret" in f.read_text() for f in base_files), "a Secret is committed in the base")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    target = sys.argv[1]
    problems = Problems()
    if target == "secret-template":
        check_secret_template(problems)
    elif target == "rollback-equals-base":
        base = render(KUSTOMIZE_DIR / "base")
        rollback = render(KUSTOMIZE_DIR / "overlays" / "rollback")
        for doc in base + rollback:
            if doc["kind"] == "Deployment":
                doc["spec"]["template"]["metadata"]["labels"].pop(PHASE_LABEL)
        problems.check(base == rollback, "rollback differs from the base beyond its phase label")
    elif target in PHASES:
        path = KUSTOMIZE_DIR / ("base" if target == "base" else f"overlays/{target}")
        docs = render(path)
        schema_validate(docs, problems)
        check_rendering(docs, target, problems)
        kinds = sorted(d["kind"] for d in docs)
        print(f"  {target}: rendered {len(docs)} objects ({', '.join(kinds)}), schemas {' and '.join(K8S_VERSIONS)}")
    else:
        print(f"unknown target {target!r}", file=sys.stderr)
        return 2
    for item in problems.items:
        print(f"  problem: {item}")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
