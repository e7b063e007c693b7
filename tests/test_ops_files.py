"""The deployment files of ops/ hold together.

They cannot be run here (no Kubernetes cluster, no systemd as init, no
Prometheus or Grafana), so these tests check what ties them to each other
and to the binaries: names, ports, labels and selectors, the environment
variables the C sources really read, the autoscaler flags the binary
accepts, the stream and consumer-group names of docs/protocol.md, and the
metric names a running gateway really exports. Where the real tool exists
on the machine (systemd-analyze, kubectl kustomize) it checks the files too.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT, free_port

OPS = ROOT / "ops"
K8S = OPS / "k8s"
SYSTEMD = OPS / "systemd"

# Variables the deployment files may set that are not lorq's to read.
FOREIGN_ENV = {"CUDA_VISIBLE_DEVICES"}


# ---- helpers ----

def c_string_literals():
    """Every "UPPER_CASE" string literal of the C sources: the env var names lorq reads."""
    names = set()
    for sub in ("common", "worker", "gateway", "ops", "cli"):
        for path in (ROOT / sub).glob("*.c"):
            names.update(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', path.read_text(errors="replace")))
    return names


def c_define(header, name):
    m = re.search(rf'#define\s+{name}\s+"([^"]*)"', (ROOT / header).read_text())
    assert m, f"{name} not found in {header}"
    return m.group(1)


def k8s_docs():
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = path.name
                docs.append(doc)
    return docs


def k8s_get(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(workload):
    return workload["spec"]["template"]["spec"]["containers"]


def container_env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def parse_unit(path):
    """A systemd unit as {section: [(key, value), ...]} (keys may repeat)."""
    sections, current = {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path.name}: {line!r} outside a section"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def unit_env(unit):
    env = {}
    for value in unit_values(unit, "Service", "Environment"):
        name, _, v = value.partition("=")
        env[name] = v
    return env


def units():
    return {p.name: parse_unit(p) for p in sorted(SYSTEMD.glob("*.service"))}


# ---- Kubernetes ----

def test_k8s_kustomization_lists_every_manifest_in_one_namespace():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    for doc in k8s_docs():
        if doc["kind"] in ("Namespace", "Kustomization"):
            continue
        assert doc["metadata"].get("namespace") == kust["namespace"], f"{doc['_file']}: {doc['metadata']['name']}"
    assert k8s_get(k8s_docs(), "Namespace", kust["namespace"])


def test_k8s_services_select_their_pods_and_ports():
    docs = k8s_docs()
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        targets = [w for w in workloads
                   if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} workloads"
        w = targets[0]
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for c in containers(w) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            tp = p["targetPort"]
            assert (tp in ports) if isinstance(tp, str) else (tp in ports.values()), f"{svc['metadata']['name']}: {tp}"


def test_k8s_gateway_port_env_probe_and_scrape_annotation_agree():
    docs = k8s_docs()
    gw = k8s_get(docs, "Deployment", "lorq-gateway")
    c = containers(gw)[0]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert int(container_env(c)["PORT"]) == port
    ann = gw["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"
    # Readiness must not depend on a live worker (see gateway.yaml), so not /health.
    assert c["readinessProbe"]["httpGet"]["path"] != "/health"
    assert c["command"][0].endswith("/lorq-gateway")


def test_k8s_worker_requests_a_gpu_and_drains_on_sigterm():
    w = k8s_get(k8s_docs(), "Deployment", "lorq-worker")
    c = containers(w)[0]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert c["command"][0].endswith("/lorq-worker")


def test_k8s_config_points_at_the_redis_service():
    docs = k8s_docs()
    cfg = k8s_get(docs, "ConfigMap", "lorq-config")["data"]
    redis_svc = k8s_get(docs, "Service", "lorq-redis")
    m = re.fullmatch(r"redis://([^:/]+):(\d+)", cfg["REDIS_URL"])
    assert m and m.group(1) == redis_svc["metadata"]["name"]
    assert int(m.group(2)) == redis_svc["spec"]["ports"][0]["port"]
    redis = k8s_get(docs, "StatefulSet", "lorq-redis")
    args = containers(redis)[0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    for d in ("lorq-gateway", "lorq-worker"):
        refs = [e["configMapRef"]["name"] for e in containers(k8s_get(docs, "Deployment", d))[0]["envFrom"]]
        assert refs == ["lorq-config"]


def test_k8s_keda_triggers_watch_every_adapter_stream_of_the_worker_group():
    docs = k8s_docs()
    so = k8s_get(docs, "ScaledObject", "lorq-worker")
    worker = k8s_get(docs, "Deployment", "lorq-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] or so["spec"]["minReplicaCount"] == 0
    cfg = k8s_get(docs, "ConfigMap", "lorq-config")["data"]
    prefix = cfg.get("LORQ_PREFIX", c_define("common/redis.h", "LQ_DEFAULT_PREFIX"))
    adapters = [entry.split("=", 1)[0] for entry in cfg["LORA_ADAPTERS"].split(",") if entry]
    want_streams = {f"{prefix}q:{a}" for a in adapters} | {f"{prefix}q:@base"}
    group = c_define("common/redis.h", "LQ_GROUP")
    redis_svc = k8s_get(docs, "Service", "lorq-redis")
    streams = set()
    for t in so["spec"]["triggers"]:
        md = t["metadata"]
        assert t["type"] == "redis-streams"
        host, port = md["address"].rsplit(":", 1)
        assert host.split(".")[0] == redis_svc["metadata"]["name"]
        assert host.split(".")[1] == redis_svc["metadata"]["namespace"]
        assert int(port) == redis_svc["spec"]["ports"][0]["port"]
        assert md["consumerGroup"] == group
        # Scaling on the group's lag (XINFO GROUPS) needs lagCount; values are strings in KEDA.
        assert isinstance(md["lagCount"], str) and int(md["lagCount"]) > 0
        assert isinstance(md["activationLagCount"], str) and int(md["activationLagCount"]) >= 0
        streams.add(md["stream"])
    assert streams == want_streams
    assert len(so["spec"]["triggers"]) == len(want_streams), "one trigger per stream"


def test_k8s_env_names_are_read_by_lorq():
    known = c_string_literals()
    docs = k8s_docs()
    names = set(k8s_get(docs, "ConfigMap", "lorq-config")["data"])
    for d in ("lorq-gateway", "lorq-worker"):
        names |= set(container_env(containers(k8s_get(docs, "Deployment", d))[0]))
    assert names - FOREIGN_ENV <= known, f"not read by any lorq binary: {sorted(names - FOREIGN_ENV - known)}"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_k8s_kustomize_renders():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    for kind in ("Namespace", "ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment", "ScaledObject"):
        assert kind in kinds


# ---- systemd ----

def test_systemd_units_run_the_built_binaries_with_known_env(bin_dir):
    known = c_string_literals()
    all_units = units()
    assert set(all_units) == {"lorq-redis.service", "lorq-gateway.service", "lorq-worker@.service",
                              "lorq-autoscaler.service"}
    for name, unit in all_units.items():
        exec_start = unit_values(unit, "Service", "ExecStart")
        assert len(exec_start) == 1, name
        binary = pathlib.Path(exec_start[0].split()[0]).name
        assert binary in ("redis-server", "lorq-gateway", "lorq-worker", "lorq-autoscaler"), name
        if binary != "redis-server":
            assert (bin_dir / binary).exists(), f"{name}: {binary} is not a built program"
        env = set(unit_env(unit)) - FOREIGN_ENV
        assert env <= known, f"{name}: not read by lorq: {sorted(env - known)}"
        for dep in unit_values(unit, "Unit", "After") + unit_values(unit, "Unit", "Wants"):
            for u in dep.split():
                if u.startswith("lorq-"):
                    assert u in all_units, f"{name} refers to {u}"
    example = SYSTEMD / "lorq.env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}
    assert names <= known


def test_systemd_autoscaler_flags_are_accepted(bin_dir):
    unit = units()["lorq-autoscaler.service"]
    args = unit_values(unit, "Service", "ExecStart")[0].split()[1:]
    out = subprocess.run([str(bin_dir / "lorq-autoscaler"), "--check", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    drain = float(args[args.index("--drain-timeout") + 1])
    stop = float(unit_values(unit, "Service", "TimeoutStopSec")[0])
    assert stop > drain, "systemd must wait longer than the autoscaler's own drain"
    assert unit_values(unit, "Service", "KillMode") == ["mixed"]


def test_systemd_worker_drains_with_sigterm():
    unit = units()["lorq-worker@.service"]
    assert unit_values(unit, "Service", "KillSignal") == ["SIGTERM"]
    assert float(unit_values(unit, "Service", "TimeoutStopSec")[0]) >= 60
    assert unit_env(unit)["CUDA_VISIBLE_DEVICES"] == "%i"


def test_systemd_redis_keeps_an_aof():
    cmd = unit_values(units()["lorq-redis.service"], "Service", "ExecStart")[0].split()
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    port = int(cmd[cmd.index("--port") + 1])
    example = (SYSTEMD / "lorq.env.example").read_text()
    assert f"REDIS_URL=redis://127.0.0.1:{port}" in example


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path, bin_dir):
    """systemd's own checker, on copies pointing at this build instead of /opt/lorq."""
    for path in SYSTEMD.glob("*.service"):
        text = path.read_text().replace("/opt/lorq/bin", str(bin_dir)).replace("/etc/lorq/lorq.env",
                                                                               str(SYSTEMD / "lorq.env.example"))
        name = path.name.replace("@.service", "@0.service")
        (tmp_path / name).write_text(text)
    files = sorted(str(p) for p in tmp_path.glob("*.service"))
    out = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout


# ---- Prometheus and Grafana ----

def test_prometheus_scrapes_the_gateway_where_it_listens():
    prom = yaml.safe_load((OPS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    gw_port = unit_env(units()["lorq-gateway.service"])["PORT"]
    static = jobs["lorq-gateway"]
    assert static.get("metrics_path", "/metrics") == "/metrics"
    assert static["static_configs"][0]["targets"] == [f"127.0.0.1:{gw_port}"]
    k8s = jobs["lorq-gateway-k8s"]
    gw = k8s_get(k8s_docs(), "Deployment", "lorq-gateway")
    labels = gw["spec"]["template"]["metadata"]["labels"]
    keep = [r for r in k8s["relabel_configs"] if r.get("action") == "keep"]
    by_label = [r for r in keep if r["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]]
    assert by_label and by_label[0]["regex"] == labels["app.kubernetes.io/name"]
    assert k8s["kubernetes_sd_configs"][0]["namespaces"]["names"] == [gw["metadata"]["namespace"]]


PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "max", "min", "avg", "count", "topk",
    "bottomk", "clamp_min", "clamp_max", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "le", "vector", "scalar", "abs", "delta", "deriv", "avg_over_time", "max_over_time", "min_over_time", "time",
    "label_replace", "sort", "sort_desc", "round", "ceil", "floor",
}


def dashboard_metric_names(dashboard):
    """Metric names used in the dashboard's PromQL (label matchers, ranges, grouping and strings removed)."""
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            expr = re.sub(r'"[^"]*"', "", expr)
            expr = re.sub(r"\{[^}]*\}", "", expr)
            expr = re.sub(r"\[[^\]]*\]", "", expr)
            expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
            expr = re.sub(r"\$\w+", "", expr)
            for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
                if word not in PROMQL_WORDS:
                    names.add(word)
    return names


def test_grafana_dashboard_is_valid_and_every_panel_has_queries():
    dash = json.loads((OPS / "grafana" / "lorq.json").read_text())
    assert dash["title"] and dash["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p.get("type") != "row":
            assert p.get("targets"), f"panel {p.get('title')} has no query"
            for t in p["targets"]:
                assert t["expr"].strip()


@pytest.fixture
def gateway_metrics(tmp_path, redis_server, bin_dir, model_dir):
    """The /metrics text of a real gateway (no worker needed for it)."""
    port = free_port()
    env = dict(os.environ, PORT=str(port), HOSTNAME="127.0.0.1", REDIS_URL=redis_server.url, MODEL_ID=str(model_dir),
               LORA_ADAPTERS="")
    log = open(tmp_path / "gateway.log", "w")
    proc = subprocess.Popen([str(bin_dir / "lorq-gateway")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, text = time.time() + 30, None
        while time.time() < deadline and text is None:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.1)
        assert text is not None, "the gateway did not answer /metrics within 30 s"
        yield text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def exported_names(metrics_text):
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            # A histogram's series are name_bucket, name_sum and name_count (present once observed).
            names.update({"histogram": [f"{name}_bucket", f"{name}_sum", f"{name}_count"],
                          "summary": [f"{name}_sum", f"{name}_count"]}.get(kind, []))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_grafana_dashboard_uses_metrics_the_gateway_exports(gateway_metrics):
    dash = json.loads((OPS / "grafana" / "lorq.json").read_text())
    used = dashboard_metric_names(dash)
    assert used, "no metric names found in the dashboard"
    missing = used - exported_names(gateway_metrics)
    assert not missing, f"the dashboard queries metrics the gateway does not export: {sorted(missing)}"
