#!/usr/bin/env python3
"""Checks that deploy/kubernetes agrees with the code.

The services and whom each calls come from the runtime's table
(crates/agora/src/runtime.rs: ServiceName::ALL, as_str, calls), plus the calls of
REQUIRED_CALLS below. Checked:

- every service of the binary has a workload named after it running `agora run
  <service>`, a Service, and a PodDisruptionBudget that selects its pods;
- every workload reads the agora-config ConfigMap, its own database
  (agora_<service>), the agora-secrets Secret mounted at AGORA_SECRET_DIR, has
  readiness and liveness probes, resource requests and limits, runs as
  non-root, and carries the label the NetworkPolicies select Agora's pods by;
- every AGORA_URL_<SERVICE> that some service calls is in the ConfigMap, and no
  other; each lists exactly the instances of that service's StatefulSet
  (<service>-<n>.<service>:<port>, one per replica) behind its headless Service;
- the NetworkPolicies admit, on each service's port, exactly the Agora services that
  call it, and anyone on the gateway's; they select every Agora pod, so that a pod
  with no rule of its own takes no connection;
- AGORA_BUS lists every node of the NATS cluster of nats-values.yaml;
- kustomization.yaml names every manifest of the directory.

Run with a Python that has PyYAML (the kubernetes-validate virtualenv of
.ci/kubernetes has it). Exits non-zero, naming each problem, if anything disagrees.
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
RUNTIME = ROOT / "crates" / "agora" / "src" / "runtime.rs"
NOT_OBJECTS = {"kustomization.yaml", "nats-values.yaml"}
PART_OF = ("app.kubernetes.io/part-of", "agora")
NAME = "app.kubernetes.io/name"
# Calls the manifests must carry whether or not the table lists them yet: ordering
# reads catalog's event feed (its replica of the products is rebuilt from it).
REQUIRED_CALLS = {"ordering": ["catalog"]}

problems = []


def problem(text):
    problems.append(text)


def services_from_code():
    """The services in start order, their names, and whom each calls."""
    source = RUNTIME.read_text()
    all_block = source[source.index("pub const ALL") :]
    all_block = all_block[: all_block.index("];")]
    variants = re.findall(r"ServiceName::(\w+)", all_block)
    # SERVICES: one row per service, in ALL's order.
    table_block = source[source.index("const SERVICES") :]
    table_block = table_block[: table_block.index("\n};")]
    rows = re.findall(r'name:\s*"([a-z]+)".*?calls:\s*&\[([^\]]*)\]', table_block, re.S)
    names = {v: name for v, (name, _) in zip(variants, rows)}
    calls = {v: re.findall(r"\w+", peers) for v, (_, peers) in zip(variants, rows)}
    if len(rows) != len(variants) or any(v.lower() != names[v] for v in variants):
        sys.exit(f"the rows of SERVICES in {RUNTIME.relative_to(ROOT)} do not follow ServiceName::ALL")
    if not variants or set(variants) != set(names) or set(variants) != set(calls):
        sys.exit(f"could not read the service table of {RUNTIME.relative_to(ROOT)}")
    services = [names[v] for v in variants]
    table = {names[v]: [names[p] for p in calls[v]] for v in variants}
    for service, peers in REQUIRED_CALLS.items():
        table[service] += [p for p in peers if p not in table[service]]
    return services, table


def load_objects():
    objects = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name in NOT_OBJECTS:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            key = (document["kind"], document["metadata"]["name"])
            if key in objects:
                problem(f"{path.name}: {key[0]} {key[1]} is defined twice")
            objects[key] = (path.name, document)
    return objects


def selects(selector, labels):
    """Whether a label selector (matchLabels and matchExpressions) selects `labels`."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


ANYONE = "anyone"
# Prometheus, as the scrape policy names it: pods labelled app.kubernetes.io/name:
# prometheus in the namespace `monitoring`; the one peer outside the namespace a
# policy may admit (to every Agora pod's port, for /metrics).
SCRAPER = "prometheus"
SCRAPER_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def admitted(service, labels, port, services, pod_labels, objects):
    """Who the NetworkPolicies let open connections to `port` (a name or a number) of
    the pods with `labels`: ANYONE, or the set of Agora services (and SCRAPER when
    Prometheus may scrape them). None when no policy selects the pods (Kubernetes then
    admits anyone)."""
    sources = set()
    selected = False
    for (kind, name), (_, policy) in objects.items():
        if kind != "NetworkPolicy":
            continue
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        if not selects(spec.get("podSelector", {}), labels):
            continue
        selected = True
        for rule in spec.get("ingress", []):
            rule_ports = rule.get("ports")
            if rule_ports and not any(p.get("port") in port for p in rule_ports):
                continue
            peers = rule.get("from")
            if not peers:
                return ANYONE
            for peer in peers:
                if peer == SCRAPER_PEER:
                    sources.add(SCRAPER)
                    continue
                if "ipBlock" in peer or "namespaceSelector" in peer:
                    problem(f"NetworkPolicy {name}: admits pods outside the namespace to {service}")
                    continue
                sources |= {s for s in services if selects(peer["podSelector"], pod_labels[s])}
    return sources if selected else None


def check_workload(service, kind, workload, config, objects):
    where = f"{kind} {service}"
    spec = workload["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    if not selects(spec["selector"], labels):
        problem(f"{where}: its selector does not select its own pods")
    if labels.get(PART_OF[0]) != PART_OF[1]:
        problem(f"{where}: pods lack the label {PART_OF[0]}: {PART_OF[1]} (NetworkPolicies)")
    pod_spec = pod["spec"]
    containers = pod_spec["containers"]
    if len(containers) != 1:
        problem(f"{where}: one container expected, found {len(containers)}")
        return
    container = containers[0]
    if container.get("args") != ["run", service]:
        problem(f"{where}: runs {container.get('args')}, not ['run', '{service}']")
    if {"configMapRef": {"name": "agora-config"}} not in container.get("envFrom", []):
        problem(f"{where}: does not read the agora-config ConfigMap")
    env = {e["name"]: e for e in container.get("env", [])}
    db = env.get("AGORA_DB", {}).get("value", "")
    database, _, query = db.partition("?")
    if database != f"$(AGORA_POSTGRES_URL)/agora_{service}":
        problem(f"{where}: AGORA_DB is {db!r}, not $(AGORA_POSTGRES_URL)/agora_{service}[?…]")
    if not any(p.startswith("pool_max_conns=") for p in query.split("&") if p):
        problem(f"{where}: AGORA_DB sets no pool_max_conns (a pool of 10 per pod by default)")
    secret_ref = env.get("AGORA_POSTGRES_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if secret_ref.get("name") != "agora-postgres":
        problem(f"{where}: AGORA_POSTGRES_URL does not come from the agora-postgres Secret")
    secret_volumes = {
        v["name"]
        for v in pod_spec.get("volumes", [])
        if v.get("secret", {}).get("secretName") == "agora-secrets"
    }
    mounts = {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in secret_volumes}
    if config.get("AGORA_SECRET_DIR") not in mounts:
        problem(f"{where}: the agora-secrets Secret is not mounted at AGORA_SECRET_DIR")
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in container:
            problem(f"{where}: no {probe}")
    resources = container.get("resources", {})
    for field in ("cpu", "memory"):
        if field not in resources.get("requests", {}):
            problem(f"{where}: no {field} request")
    for field in ("cpu", "memory"):
        if field not in resources.get("limits", {}):
            problem(f"{where}: no {field} limit")
    security = pod_spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
        problem(f"{where}: does not run as a non-root user")
    port = {p["name"]: p["containerPort"] for p in container.get("ports", [])}.get("http")
    listen = config.get("AGORA_LISTEN", "")
    if port is None or not listen.endswith(f":{port}"):
        problem(f"{where}: its http port {port} is not the one of AGORA_LISTEN ({listen})")
    pdbs = [
        name
        for (kind_, name), (_, pdb) in objects.items()
        if kind_ == "PodDisruptionBudget" and selects(pdb["spec"]["selector"], labels)
    ]
    if not pdbs:
        problem(f"{where}: no PodDisruptionBudget selects its pods")
    annotations = pod["metadata"].get("annotations", {})
    wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    for key, value in wanted.items():
        if annotations.get(key) != value:
            problem(f"{where}: pods lack the annotation {key}: {value!r} (Prometheus scrapes /metrics)")


def main():
    services, calls = services_from_code()
    objects = load_objects()
    config_entry = objects.get(("ConfigMap", "agora-config"))
    if config_entry is None:
        sys.exit("no ConfigMap agora-config in deploy/kubernetes")
    config = config_entry[1]["data"]

    workloads = {}
    for service in services:
        found = [
            kind for kind in ("Deployment", "StatefulSet") if (kind, service) in objects
        ]
        if len(found) != 1:
            problem(f"{service}: expected one Deployment or StatefulSet named {service}, found {found}")
            continue
        workloads[service] = (found[0], objects[(found[0], service)][1])
        if ("Service", service) not in objects:
            problem(f"{service}: no Service named {service}")
        check_workload(service, found[0], workloads[service][1], config, objects)
    for (kind, name) in objects:
        if kind in ("Deployment", "StatefulSet") and name not in services:
            problem(f"{kind} {name}: not a service of the binary")

    called = sorted({peer for service in services for peer in calls[service]})
    wanted = {f"AGORA_URL_{peer.upper()}": peer for peer in called}
    present = {k for k in config if k.startswith("AGORA_URL_")}
    for variable in sorted(set(wanted) - present):
        callers = [s for s in services if wanted[variable] in calls[s]]
        problem(f"ConfigMap: no {variable} (called by {', '.join(callers)})")
    for variable in sorted(present - set(wanted)):
        problem(f"ConfigMap: {variable} names no service that is called")
    for variable in sorted(set(wanted) & present):
        peer = wanted[variable]
        if peer not in workloads:
            continue
        kind, workload = workloads[peer]
        if kind != "StatefulSet":
            problem(f"{peer}: it is called by URL, so it needs a StatefulSet (a name per instance)")
            continue
        service = objects.get(("Service", peer), (None, {}))[1]
        if service.get("spec", {}).get("clusterIP") != "None":
            problem(f"Service {peer}: not headless (clusterIP: None)")
        if workload["spec"].get("serviceName") != peer:
            problem(f"StatefulSet {peer}: serviceName is not {peer}")
        ports = {p["name"]: p["port"] for p in service.get("spec", {}).get("ports", [])}
        replicas = workload["spec"].get("replicas", 1)
        expected = [f"http://{peer}-{i}.{peer}:{ports.get('http')}" for i in range(replicas)]
        actual = [u.strip() for u in config[variable].split(",")]
        if actual != expected:
            problem(f"ConfigMap: {variable} is {actual}, the StatefulSet's {replicas} instances are {expected}")

    pod_labels = {s: workloads[s][1]["spec"]["template"]["metadata"].get("labels", {}) for s in workloads}
    for service in workloads:
        container = workloads[service][1]["spec"]["template"]["spec"]["containers"][0]
        port = {"http"} | {p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http"}
        sources = admitted(service, pod_labels[service], port, list(workloads), pod_labels, objects)
        if sources not in (None, ANYONE):
            if SCRAPER not in sources:
                problem(f"NetworkPolicies: Prometheus cannot scrape {service}'s /metrics")
            sources = sources - {SCRAPER}
        if service == "gateway":
            if sources != ANYONE:
                problem(f"NetworkPolicies: the gateway's port is open to {sources}, not to anyone")
            continue
        callers = {s for s in services if service in calls[s]}
        if sources is None or sources == ANYONE:
            problem(f"NetworkPolicies: {service}'s port is open to anyone, not only to {sorted(callers)}")
        elif sources != callers:
            extra, missing = sorted(sources - callers), sorted(callers - sources)
            problem(
                f"NetworkPolicies: {service}'s port admits {sorted(sources)}; "
                f"its callers are {sorted(callers)}"
                + (f" (does not call it: {extra})" if extra else "")
                + (f" (not admitted: {missing})" if missing else "")
            )
    unlabelled = {"app.kubernetes.io/part-of": "agora"}
    if admitted("a new Agora pod", unlabelled, {"http", 8080}, list(workloads), pod_labels, objects) - {SCRAPER} != set():
        problem("NetworkPolicies: an Agora pod without a rule of its own is not closed to all")

    nats = yaml.safe_load((DEPLOY / "nats-values.yaml").read_text())
    cluster = nats["config"]["cluster"]
    nodes = cluster["replicas"] if cluster.get("enabled") else 1
    expected_bus = [f"nats://nats-{i}.nats-headless:4222" for i in range(nodes)]
    actual_bus = [u.strip() for u in config.get("AGORA_BUS", "").split(",")]
    if actual_bus != expected_bus:
        problem(f"ConfigMap: AGORA_BUS is {actual_bus}, the NATS cluster is {expected_bus}")
    if not nats["config"]["jetstream"].get("enabled"):
        problem("nats-values.yaml: JetStream is not enabled")

    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    files = {p.name for p in DEPLOY.glob("*.yaml")} - NOT_OBJECTS
    for name in sorted(files - listed):
        problem(f"kustomization.yaml: {name} is not among its resources")
    for name in sorted(listed - files):
        problem(f"kustomization.yaml: names {name}, which is not in deploy/kubernetes")

    for text in problems:
        print(f"deploy/kubernetes: {text}")
    checked = len(services)
    if problems:
        print(f"manifests: {len(problems)} problem(s)")
        return 1
    edges = sum(len(calls[s]) for s in services)
    print(
        f"manifests agree with the code: {checked} services, {len(wanted)} AGORA_URL_* variables, "
        f"NetworkPolicies admit exactly the {edges} calls"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
