"""Render and check the Kubernetes manifests in deploy/kubernetes/.

Usage: check_manifests.py TARGET, TARGET being `base`, an overlay name (`overlap`,
`strict`, `retire`, `rollback`), `rollback-equals-base`, `secret-template`, `component` (the
sig-gate-sidecar component added to another team's workload, deploy/tests/component-fixture),
`replay-store` (the replay-store-redis component on the base and on that workload,
deploy/tests/replay-store-fixture), `reload` (deploy/kubernetes/reload: the rotation by Secret
update, every step the same Deployment), `keys-template` (reload/keys.template.yaml) or
`prometheus` (deploy/prometheus: the PodMonitor and the PrometheusRule). Exits 0 when every
check of that target holds, 1 otherwise, printing one line per problem.

Each rendering is checked three ways:
  1. kustomize renders it (`kubectl kustomize`, or a standalone `kustomize build`);
  2. every object validates against the Kubernetes OpenAPI schemas of the oldest and
     newest versions we support (kubernetes-validate, strict: unknown fields are errors);
  3. the objects agree with each other and with the gate's documented interface: selectors match the
     pod, ports and probes point where the gate listens, the shutdown timings fit in the
     grace period, the security context is locked down, and the secret wiring is the one
     the rotation phase calls for (docs/operations.md).

The PodMonitor and the PrometheusRule are Prometheus Operator CRDs, for which
kubernetes-validate has no schema: they get structural checks instead.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = REPO / "deploy" / "kubernetes"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
FIXTURE_DIR = REPO / "deploy" / "tests" / "component-fixture"

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
    # The shared replay store and the key registry (README, "Configuration").
    "GATE_REPLAY_STORE", "GATE_REPLAY_STORE_TIMEOUT_MS", "GATE_REPLAY_STORE_PREFIX",
    "GATE_KEYS_FILE", "GATE_AUDIENCE",
}

SECRET_NAME = "sig-gate-hmac"
# The sidecar component's volume holding that Secret.
SECRET_VOLUME = "sig-gate-hmac"
# The pod label the sidecar component adds and the PodMonitor selects.
SIDECAR_LABEL = ("sig-gate/sidecar", "true")
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
    # The reload path (deploy/kubernetes/reload): no shared secret, the keys in the registry.
    "reload": dict(current=None, previous=None, strict=None, label="reload"),
}
PHASE_LABEL = "sig-gate/rotation-phase"

# The reload path (deploy/kubernetes/reload): the steps, in the runbook's order, each the same
# Deployment and its own registry in Secret sig-gate-registry; the key material in Secret
# sig-gate-keys (reload/keys.template.yaml). Which key ids each step's registry holds:
RELOAD_DIR = KUSTOMIZE_DIR / "reload"
OLD_KEY, NEW_KEY = "langgraph-2026-12", "langgraph-2027-01"
RELOAD_STEPS = {
    "steady": {OLD_KEY},
    "overlap": {OLD_KEY, NEW_KEY},
    "strict": {OLD_KEY, NEW_KEY},
    "retire": {NEW_KEY},
    "rollback": {OLD_KEY},
}
REGISTRY_VOLUME = "sig-gate-keys"
REGISTRY_SECRET = "sig-gate-registry"
REGISTRY_FILE = "keys.toml"
KEYS_SECRET = "sig-gate-keys"

# The shared replay store component, on the base and on another team's workload.
STORE_COMPONENT_FIXTURES = REPO / "deploy" / "tests" / "replay-store-fixture"
STORE_SECRET = ("sig-gate-replay-store", "url")
STORE_ENV = ("GATE_REPLAY_STORE", "GATE_REPLAY_STORE_TIMEOUT_MS", "GATE_REPLAY_STORE_PREFIX")
GATE_BIN = Path(os.environ.get("SIG_GATE_BIN", REPO / "target" / "debug" / "sig-gate"))


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
    return [doc for doc in yaml.safe_load_all(render_text(path)) if doc]


def render_text(path: Path) -> str:
    """kustomize's output for `path`, as it would be applied."""
    command = renderer()
    if command is None:
        raise SystemExit(
            "no kustomize renderer: need `kubectl` (with kustomize >= 3.7 embedded) or "
            "`kustomize` on PATH, or KUSTOMIZE_RENDER set to a command that takes a directory"
        )
    out = subprocess.run([*command, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} {path} failed:\n{out.stderr}")
    return out.stdout


def schema_validate(docs: list[dict], problems: Problems) -> None:
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.check(doc.get("kind") in ("PodMonitor", "PrometheusRule"),
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
    check_scrape(template, ports, problems)

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

    p(value("REQUIRE_SIGNATURE") == "true", "REQUIRE_SIGNATURE must be true: report-only is not a deploy state")
    # Secret wiring for this phase.
    if phase == "reload":
        check_registry_wiring(pod, gate, env, problems)
    else:
        check_env_secret_wiring(pod, gate, env, phase, problems)


def check_env_secret_wiring(pod: dict, gate: dict, env: dict[str, dict], phase: str, problems: Problems) -> None:
    """The shared secret from Secret sig-gate-hmac, as the rotation phase calls for."""
    p = problems.check
    value = lambda name: env.get(name, {}).get("value")  # noqa: E731
    want = PHASES[phase]
    secret_dir = check_secret_volume(pod, gate, problems)

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
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in env.values()
            if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET_NAME}
    files = {Path(v["value"]).name for v in env.values() if v["name"].startswith("INTERSERVICE_") and v["name"].endswith("_FILE")}
    p(refs | files <= SECRET_KEYS, f"unknown Secret entries referenced: {sorted((refs | files) - SECRET_KEYS)}")


def check_registry_wiring(pod: dict, gate: dict, env: dict[str, dict], problems: Problems) -> None:
    """The reload path: no shared secret; the key registry and its secret files in one
    projected volume of two Secrets, mounted whole (never subPath, which the kubelet does not
    update), not world-readable, readable by the gate's group."""
    p = problems.check
    shared = sorted(n for n in env if n.startswith("INTERSERVICE_"))
    p(not shared, f"reload: the shared secret's variables are set ({shared}): they need a rollout to change")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    p(SECRET_VOLUME not in volumes, f"reload: volume {SECRET_VOLUME} (the shared secret) is still mounted")
    mounts = {m["name"]: m for m in gate.get("volumeMounts", [])}
    mount = mounts.get(REGISTRY_VOLUME, {})
    p(mount.get("readOnly") is True, f"reload: sig-gate must mount volume `{REGISTRY_VOLUME}` read-only")
    p(not any("subPath" in m or "subPathExpr" in m for m in gate.get("volumeMounts", [])),
      "reload: a subPath mount is never updated by the kubelet")
    projected = volumes.get(REGISTRY_VOLUME, {}).get("projected", {})
    sources = [src.get("secret", {}) for src in projected.get("sources", [])]
    p(len(sources) == 2 and all(sources)
      and sources[0] == {"name": REGISTRY_SECRET, "items": [{"key": REGISTRY_FILE, "path": REGISTRY_FILE}]}
      and sources[1] == {"name": KEYS_SECRET},
      f"reload: volume {REGISTRY_VOLUME} must project {REGISTRY_SECRET}/{REGISTRY_FILE} and all of {KEYS_SECRET}, got {sources}")
    check_files_private(pod, gate, projected.get("defaultMode"), "key files", problems, "reload: ")
    keys_file = env.get("GATE_KEYS_FILE", {}).get("value")
    p(keys_file == f"{mount.get('mountPath')}/{REGISTRY_FILE}",
      f"reload: GATE_KEYS_FILE={keys_file!r}, want {mount.get('mountPath')}/{REGISTRY_FILE}")
    audience = env.get("GATE_AUDIENCE", {}).get("value") or ""
    p(bool(KEY_ID_RE.match(audience)), f"reload: GATE_AUDIENCE={audience!r} is not a valid audience")


def without_env(docs: list[dict], names: tuple[str, ...]) -> list[dict]:
    """`docs` with the sig-gate container's env entries `names` removed (a deep copy)."""
    docs = copy.deepcopy(docs)
    for doc in docs:
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] == "sig-gate":
                    c["env"] = [e for e in c.get("env", []) if e["name"] not in names]
    return docs


def check_replay_store(problems: Problems) -> None:
    """The replay-store-redis component on the base and on another team's workload: the store's
    URL comes from a Secret (it holds Redis's password; the gate has no _FILE form for it), the
    budget and prefix parse as the gate requires, and nothing else of the rendering changes."""
    p = problems.check
    for name, fixture, plain_path in (("base", "base", KUSTOMIZE_DIR / "base"),
                                      ("sidecar component", "sidecar", FIXTURE_DIR)):
        docs = render(STORE_COMPONENT_FIXTURES / fixture)
        schema_validate(docs, problems)
        if fixture == "base":
            check_rendering(docs, "base", problems)
        plain = render(plain_path)
        p(without_env(docs, STORE_ENV) == plain, f"{name}: the component changes more than the store's variables")
        gate = {c["name"]: c for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]}["sig-gate"]
        env = env_map(gate)
        p(set(env) <= CONTRACT_ENV, f"{name}: sig-gate env the gate does not read: {sorted(set(env) - CONTRACT_ENV)}")
        store = env.get("GATE_REPLAY_STORE", {})
        ref = store.get("valueFrom", {}).get("secretKeyRef", {})
        p("value" not in store and (ref.get("name"), ref.get("key")) == STORE_SECRET and not ref.get("optional"),
          f"{name}: GATE_REPLAY_STORE must come from Secret {STORE_SECRET[0]}/{STORE_SECRET[1]} (required), got {store}")
        p("GATE_REPLAY_STORE_FILE" not in env, f"{name}: the gate has no GATE_REPLAY_STORE_FILE")
        timeout = env.get("GATE_REPLAY_STORE_TIMEOUT_MS", {}).get("value", "")
        p(timeout.isdigit() and 1 <= int(timeout) <= 60_000,
          f"{name}: GATE_REPLAY_STORE_TIMEOUT_MS={timeout!r} must be a whole number of milliseconds >= 1")
        # The upstream's own budget covers the whole exchange; a store budget beyond it means a
        # request waits on Redis longer than the gate would wait on tool-gate.
        upstream_secs = int(env.get("GATE_UPSTREAM_TIMEOUT_SECS", {}).get("value", "60"))
        p(timeout.isdigit() and int(timeout) < upstream_secs * 1000,
          f"{name}: the store budget {timeout} ms is not below GATE_UPSTREAM_TIMEOUT_SECS ({upstream_secs} s)")
        prefix = env.get("GATE_REPLAY_STORE_PREFIX", {}).get("value", "sig-gate:")
        p(1 <= len(prefix) <= 64 and all(33 <= ord(ch) <= 126 for ch in prefix),
          f"{name}: GATE_REPLAY_STORE_PREFIX={prefix!r} must be 1-64 visible ASCII characters")
        print(f"  replay store on the {name}: {len(docs)} objects, GATE_REPLAY_STORE from secretKeyRef "
              f"{ref.get('name')}/{ref.get('key')}, budget {timeout} ms, prefix {prefix!r}")


def registry_of(docs: list[dict], step: str, problems: Problems) -> str | None:
    """keys.toml of the step's Secret sig-gate-registry, checking the Secret's shape."""
    p = problems.check
    secrets_ = [d for d in docs if d["kind"] == "Secret"]
    if not p([d["metadata"]["name"] for d in secrets_] == [REGISTRY_SECRET],
             f"{step}: renders Secrets {[d['metadata']['name'] for d in secrets_]}, want only {REGISTRY_SECRET}"):
        return None
    secret = secrets_[0]
    p(secret["metadata"].get("labels", {}).get(PHASE_LABEL) == step,
      f"{step}: Secret {REGISTRY_SECRET} is not labelled {PHASE_LABEL}={step}")
    data = secret.get("data", {})
    if not p(set(data) == {REGISTRY_FILE}, f"{step}: Secret {REGISTRY_SECRET} holds {sorted(data)}, want {REGISTRY_FILE}"):
        return None
    return base64.b64decode(data[REGISTRY_FILE]).decode()


def check_registry_with_gate(step: str, registry: str, env: dict[str, dict], problems: Problems) -> None:
    """The real gate accepts the step's registry with the rendered container's variables:
    `sig-gate check-config` against the files as the pod would see them, with freshly generated
    secrets in place of Secret sig-gate-keys, exits 0 and lists every key."""
    p = problems.check
    if not p(GATE_BIN.exists(), f"{GATE_BIN} does not exist (cargo build --bin sig-gate, or set SIG_GATE_BIN)"):
        return
    entries = tomllib.loads(registry).get("key", [])
    with tempfile.TemporaryDirectory(prefix="sig-gate-reload-") as tmp:
        mount = Path(tmp)
        (mount / REGISTRY_FILE).write_text(registry)
        for entry in entries:
            if "secret_file" in entry:
                (mount / entry["secret_file"]).write_text(secrets.token_urlsafe(32) + "\n")
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("GATE_", "INTERSERVICE_", "REQUIRE_SIGNATURE", "TOOL_GATE_", "LISTEN_"))}
        gate_env = {name: e["value"] for name, e in env.items() if "value" in e}
        gate_env["GATE_KEYS_FILE"] = str(mount / REGISTRY_FILE)
        out = subprocess.run([str(GATE_BIN), "check-config"], env={**inherited, **gate_env}, cwd=tmp,
                             capture_output=True, text=True, timeout=60)
    listed = {entry["id"] for entry in entries if entry["id"] in out.stdout}
    p(out.returncode == 0 and listed == {entry["id"] for entry in entries},
      f"{step}: sig-gate check-config exit {out.returncode}, keys listed {sorted(listed)}:\n{out.stdout}{out.stderr}")


def check_reload(problems: Problems) -> None:
    """The reload path: every step renders the same Deployment (and every other object) byte
    for byte, so applying a step rolls nothing; only Secret sig-gate-registry differs, holding
    the keys the runbook's step calls for, which the real gate accepts."""
    p = problems.check
    deployment_text = None
    registries: dict[str, str] = {}
    fixed = render(RELOAD_DIR / "deployment")
    for step, want in RELOAD_STEPS.items():
        text = render_text(RELOAD_DIR / step)
        docs = [doc for doc in yaml.safe_load_all(text) if doc]
        schema_validate(docs, problems)
        check_rendering(docs, "reload", problems)
        # The Deployment as kustomize prints it, compared as text: any difference in the pod
        # template (a label, an env entry, a reference) would start a rollout.
        chunks = [c for c in re.split(r"(?m)^---\n", text) if re.search(r"(?m)^kind: Deployment$", c)]
        if p(len(chunks) == 1, f"{step}: {len(chunks)} Deployments"):
            if deployment_text is None:
                deployment_text = chunks[0]
            p(chunks[0] == deployment_text, f"{step}: the Deployment differs from the steady step's: applying it rolls the pods")
        p([d for d in docs if d["kind"] != "Secret"] == fixed,
          f"{step}: objects other than Secret {REGISTRY_SECRET} differ from ../deployment")
        registry = registry_of(docs, step, problems)
        if registry is None:
            continue
        try:
            entries = tomllib.loads(registry).get("key", [])
        except tomllib.TOMLDecodeError as err:
            p(False, f"{step}: {REGISTRY_FILE} is not TOML: {err}")
            continue
        registries[step] = registry
        ids = {entry.get("id") for entry in entries}
        p(ids == want, f"{step}: the registry holds {sorted(ids)}, want {sorted(want)}")
        for entry in entries:
            p("secret_file" not in entry or "/" not in entry["secret_file"],
              f"{step}: {entry.get('id')}: secret_file must name an entry of Secret {KEYS_SECRET} beside the registry")
        gate = {c["name"]: c for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]}["sig-gate"]
        check_registry_with_gate(step, registry, env_map(gate), problems)
    # Compared as parsed TOML: each file's comment names its own step.
    parsed = {step: json.dumps(tomllib.loads(text), sort_keys=True) for step, text in registries.items()}
    if len(parsed) == len(RELOAD_STEPS):
        p(len({parsed[s] for s in ("steady", "overlap", "retire")}) == 3,
          "steady, overlap and retire must each change Secret sig-gate-registry")
        p(parsed["strict"] == parsed["overlap"],
          "strict must hold overlap's registry: a registry key is always bound to its id")
        p(parsed["rollback"] == parsed["steady"], "rollback must restore the steady registry exactly")
    print(f"  reload: {len(RELOAD_STEPS)} steps, their Deployments ({len(deployment_text or '')} bytes) compared "
          f"as text, {len(set(parsed.values()))} distinct key sets, schemas {' and '.join(K8S_VERSIONS)}")


def check_keys_template(problems: Problems) -> None:
    """reload/keys.template.yaml: Secret sig-gate-keys, one entry per HMAC key of the steady
    registry (and the next key, commented), no usable secret."""
    p = problems.check
    docs = [d for d in yaml.safe_load_all((RELOAD_DIR / "keys.template.yaml").read_text()) if d]
    schema_validate(docs, problems)
    secret = one(docs, "Secret")
    p(secret["metadata"]["name"] == KEYS_SECRET, f"template names {secret['metadata']['name']}, want {KEYS_SECRET}")
    steady = tomllib.loads((RELOAD_DIR / "steady" / REGISTRY_FILE).read_text()).get("key", [])
    files = {entry["secret_file"] for entry in steady if "secret_file" in entry}
    data = secret.get("stringData", {})
    p(set(data) == files, f"template entries {sorted(data)}, want the steady registry's secret files {sorted(files)}")
    for key, val in data.items():
        p(len(val.encode()) < 32, f"template {key} is a usable secret: it must stay under 32 bytes")
    for path in RELOAD_DIR.rglob("*.yaml"):
        if path.name != "keys.template.yaml":
            p("kind: Secret" not in path.read_text(), f"{path.relative_to(REPO)} commits a Secret")


def check_scrape(template: dict, ports: dict, problems: Problems) -> None:
    """The pod can be scraped both ways: the PodMonitor's label, and prometheus.io/* annotations
    pointing at the admin port's /metrics."""
    p = problems.check
    annotations = template["metadata"].get("annotations", {})
    p(annotations.get("prometheus.io/scrape") == "true"
      and annotations.get("prometheus.io/port") == str(ports.get("gate-admin"))
      and annotations.get("prometheus.io/path") == "/metrics",
      "prometheus.io/* annotations must point at the admin port's /metrics")
    key, value = SIDECAR_LABEL
    p(template["metadata"]["labels"].get(key) == value, f"pods need the label {key}: {value!r} (the PodMonitor selects it)")


def check_files_private(pod: dict, gate: dict, mode: int | None, what: str, problems: Problems,
                        prefix: str = "") -> None:
    """Mounted secret files (`what`, their volume's `mode`): not world-readable, and group-owned
    (the pod's fsGroup) by the gate's group, so the gate reads them and nobody else does.
    `prefix` starts each problem's text."""
    p = problems.check
    p(mode is not None and mode & 0o007 == 0, f"{prefix}{what} must not be world-readable")
    gate_group = gate.get("securityContext", {}).get("runAsGroup", pod.get("securityContext", {}).get("runAsGroup"))
    p(pod.get("securityContext", {}).get("fsGroup") == gate_group and gate_group is not None,
      f"{prefix}the pod's fsGroup (group owner of the {what}) must be the gate's group")


def check_secret_volume(pod: dict, gate: dict, problems: Problems) -> str:
    """Secret sig-gate-hmac mounted read-only, not world-readable, readable by the gate's
    group; returns the mount path."""
    p = problems.check
    mounts = {m["name"]: m for m in gate.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mount = mounts.get(SECRET_VOLUME, {})
    secret = volumes.get(SECRET_VOLUME, {}).get("secret", {})
    p(mount.get("readOnly") is True and secret.get("secretName") == SECRET_NAME,
      f"sig-gate must mount Secret {SECRET_NAME} read-only as volume `{SECRET_VOLUME}`")
    check_files_private(pod, gate, secret.get("defaultMode"), "secret files", problems)
    return mount.get("mountPath", "/nonexistent")


def check_component(problems: Problems) -> None:
    """The sidecar component on a workload it has never seen: the gate is added, the
    application is left as it was, and the Service goes through the gate."""
    p = problems.check
    # The workload as its team renders it, without the component (and its patch of the gate).
    plain = render_with_kustomization(FIXTURE_DIR, {"resources": ["workload.yaml"]})
    docs = render(FIXTURE_DIR)
    schema_validate(docs, problems)
    before, after = one(plain, "Deployment"), one(docs, "Deployment")
    pod, pod_before = after["spec"]["template"]["spec"], before["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    p(set(containers) == {c["name"] for c in pod_before["containers"]} | {"sig-gate"},
      f"containers are {sorted(containers)}: want the application's plus sig-gate")
    for original in pod_before["containers"]:
        p(containers.get(original["name"]) == original, f"container {original['name']} was changed")
    p(after["spec"]["selector"] == before["spec"]["selector"], "the Deployment's selector (immutable) was changed")
    gate = containers.get("sig-gate", {})
    ports = {pt["name"]: pt["containerPort"] for pt in gate.get("ports", [])}
    p(ports == {"gate": 8080, "gate-admin": 9090}, f"sig-gate ports are {ports}")
    check_scrape(after["spec"]["template"], ports, problems)
    check_secret_volume(pod, gate, problems)
    for volume in pod_before.get("volumes", []):
        p(volume in pod.get("volumes", []), f"volume {volume['name']} was lost")
    env = env_map(gate)
    p(set(env) <= CONTRACT_ENV, f"sig-gate env the gate does not read: {sorted(set(env) - CONTRACT_ENV)}")
    upstream = urlsplit(env.get("GATE_UPSTREAM", {}).get("value", ""))
    app_ports = {pt.get("containerPort") for c in pod_before["containers"] for pt in c.get("ports", [])}
    p(upstream.hostname == "127.0.0.1" and upstream.port in app_ports,
      f"GATE_UPSTREAM {upstream.geturl()!r} must be the application's port {sorted(app_ports)} on loopback")
    startup = gate.get("startupProbe", {}).get("exec", {}).get("command", [])
    p(startup[:2] == ["sig-gate", "probe"] and urlsplit(startup[-1]).port == upstream.port,
      f"the startup probe {startup} must ask the application's port")
    p(sum(1 for e in gate.get("env", []) if e["name"] == "GATE_UPSTREAM") == 1, "GATE_UPSTREAM set twice")
    p(pod.get("terminationGracePeriodSeconds") == pod_before.get("terminationGracePeriodSeconds"),
      "the pod's terminationGracePeriodSeconds was changed")
    service, service_before = one(docs, "Service"), one(plain, "Service")
    first, *rest = service["spec"]["ports"]
    p(first["targetPort"] == "gate", f"the Service's first port targets {first['targetPort']!r}, not the gate")
    p(rest == service_before["spec"]["ports"][1:], "the Service's other ports were changed")
    p(selects({"matchLabels": service["spec"]["selector"]}, after["spec"]["template"]["metadata"]["labels"]),
      "the Service no longer selects the pods")
    print(f"  component: {len(docs)} objects, containers {sorted(containers)}, schemas {' and '.join(K8S_VERSIONS)}")


def render_with_kustomization(directory: Path, kustomization: dict) -> list[dict]:
    """Render the files of `directory` under another kustomization.yaml, in a copy."""
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        copy = Path(tmp) / directory.name
        shutil.copytree(directory, copy)
        (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return render(copy)


def check_prometheus(problems: Problems) -> None:
    """deploy/prometheus: a PodMonitor and a PrometheusRule, labelled from the one `labels`
    entry of its kustomization; the PodMonitor scrapes every gated pod (the base's and another
    team's); the PrometheusRule holds exactly alerts.yml's groups."""
    p = problems.check
    docs = render(PROMETHEUS_DIR)
    p(sorted(d["kind"] for d in docs) == ["PodMonitor", "PrometheusRule"], f"objects: {[d['kind'] for d in docs]}")
    kustomization = yaml.safe_load((PROMETHEUS_DIR / "kustomization.yaml").read_text())
    wanted = {k: v for entry in kustomization.get("labels", []) for k, v in entry.get("pairs", {}).items()}
    p(bool(wanted), "kustomization.yaml must set the labels Prometheus selects by (`labels:`)")
    for doc in docs:
        p(doc.get("apiVersion") == "monitoring.coreos.com/v1", f"{doc['kind']}: apiVersion {doc.get('apiVersion')}")
        labels = doc["metadata"].get("labels", {})
        p(all(labels.get(k) == v for k, v in wanted.items()), f"{doc['kind']} lacks the selection labels {wanted}")
    podmonitor, rule = one(docs, "PodMonitor"), one(docs, "PrometheusRule")
    spec = podmonitor["spec"]
    endpoints = spec.get("podMetricsEndpoints", [])
    p(len(endpoints) == 1 and endpoints[0].get("port") == "gate-admin" and endpoints[0].get("path") == "/metrics",
      "PodMonitor must scrape gate-admin /metrics")
    p(set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"},
      f"PodMonitor spec has unexpected fields {sorted(spec)}")
    p(spec.get("namespaceSelector") == {"any": True}, "PodMonitor must select gated pods in every namespace")
    for name, path in (("base", KUSTOMIZE_DIR / "base"), ("component fixture", FIXTURE_DIR)):
        pods = one(render(path), "Deployment")["spec"]["template"]["metadata"]["labels"]
        p(selects(spec["selector"], pods), f"PodMonitor does not select the {name}'s pods")
    alerts = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    p(set(rule["spec"]) == {"groups"} and rule["spec"]["groups"] == alerts["groups"],
      "PrometheusRule spec.groups differ from alerts.yml (make prometheus-rules)")
    rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    print(f"  prometheus: PodMonitor + PrometheusRule ({rules} rules), labels {wanted}")


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


def check_rollback_equals_base(problems: Problems) -> None:
    """The rollback overlay renders exactly the base but for its phase label: rolling back is
    redeploying the base."""
    base = render(KUSTOMIZE_DIR / "base")
    rollback = render(KUSTOMIZE_DIR / "overlays" / "rollback")
    for doc in base + rollback:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["metadata"]["labels"].pop(PHASE_LABEL)
    problems.check(base == rollback, "rollback differs from the base beyond its phase label")


def check_phase(phase: str, problems: Problems) -> None:
    """One rollout phase's rendering (the base or an overlay): schemas and the phase's rules."""
    path = KUSTOMIZE_DIR / ("base" if phase == "base" else f"overlays/{phase}")
    docs = render(path)
    schema_validate(docs, problems)
    check_rendering(docs, phase, problems)
    kinds = sorted(d["kind"] for d in docs)
    print(f"  {phase}: rendered {len(docs)} objects ({', '.join(kinds)}), schemas {' and '.join(K8S_VERSIONS)}")


# The targets other than the rollout phases, each with its check.
CHECKS = {
    "secret-template": check_secret_template,
    "component": check_component,
    "prometheus": check_prometheus,
    "replay-store": check_replay_store,
    "reload": check_reload,
    "keys-template": check_keys_template,
    "rollback-equals-base": check_rollback_equals_base,
}


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    target = sys.argv[1]
    problems = Problems()
    if target in CHECKS:
        CHECKS[target](problems)
    elif target in PHASES:
        check_phase(target, problems)
    else:
        print(f"unknown target {target!r}", file=sys.stderr)
        return 2
    for item in problems.items:
        print(f"  problem: {item}")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
