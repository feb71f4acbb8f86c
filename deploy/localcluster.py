"""The production topology as real processes on one machine (no container engine runs here):
nginx in front of two API replicas, PostgreSQL, Redis, an MLflow tracking server (from its
own venv, with a shared artifact store) and Prometheus scraping each replica. nginx terminates
TLS with a certificate from a local CA made at ``up`` (``HOME/cluster/tls/ca.pem`` is what
clients trust; plain HTTP only redirects), and every other part listens on loopback only.

    python -m deploy.localcluster up [--dataset DIR] [--llm none|transformers] [--home DIR]
    python -m deploy.localcluster deploy [--set CINEREC_NAME=VALUE ...] [--home DIR]
    python -m deploy.localcluster down [--home DIR]

``up`` prints the nginx URL and, for every process it started, its name, pid and URL; the
same facts are kept in ``HOME/cluster/cluster.json`` for ``down`` and for tests, which use
``LocalCluster`` to stop and restart parts under load. ``deploy`` is a blue-green deploy: the
new version's replicas beside the old, checked, then switched to and the old drained (a failed
check leaves the old serving; ``LocalCluster.deploy``). PostgreSQL and Redis are the
cluster's own instances (free ports, their own data folders), never the machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import httpx

from deploy.tls import make_certificates

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "cinerec.conf.template"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
MLFLOW_VERSION = "3.17.2"  # the server's own venv; the app keeps mlflow-skinny of the same version
REPLICAS = 2
log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {seconds:.0f} s")
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_bin(tool: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} was not found (Debian package postgresql)")
    return str(found[-1])


@dataclass
class Process:
    name: str
    pid: int
    url: str
    port: int
    extra: dict[str, Any] = field(default_factory=dict)


class LocalCluster:
    def __init__(self, home: Path, *, mlflow_venv: Path | None = None) -> None:
        self.home = home.resolve()
        self.mlflow_venv = (mlflow_venv or self.home / "mlflow-venv").resolve()
        self.base = self.home / "cluster"
        self.state_file = self.base / "cluster.json"
        self.processes: dict[str, Process] = {}
        self.env: dict[str, str] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started by this process: waited for
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            self.processes = {n: Process(**p) for n, p in state["processes"].items()}
            self.env = state["env"]

    # -- bookkeeping --------------------------------------------------------------------
    def _save(self) -> None:
        state = {"processes": {n: vars(p) for n, p in self.processes.items()}, "env": self.env}
        self.state_file.write_text(json.dumps(state, indent=2))

    @property
    def url(self) -> str:
        return self.processes["nginx"].url

    def replica_urls(self) -> list[str]:
        return [self.processes[f"replica-{i}"].url for i in range(1, REPLICAS + 1)]

    def _spawn(
        self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log: str | None = None
    ) -> int:
        with open(self.base / (log or f"{name}.log"), "ab") as out:  # the child keeps its own copy
            proc = subprocess.Popen(
                cmd,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=self.base,
            )
        self._children[proc.pid] = proc
        return proc.pid

    # -- the parts ----------------------------------------------------------------------
    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's data: under the system temp folder, which its own user can reach (a
        home under a private folder, like pytest's, would be out of its reach)."""
        digest = hashlib.sha1(str(self.base).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"cinerec-pg-{digest}"

    def _postgres(self) -> None:
        data, port = self.pg_dir / "data", free_port()
        if not data.exists():
            data.mkdir(parents=True)
            if os.geteuid() == 0:
                for folder in (self.pg_dir, data):
                    shutil.chown(folder, "postgres", "postgres")
            subprocess.run(
                _as_postgres([_pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]),
                check=True,
                capture_output=True,
            )
        self.processes["postgres"] = Process(
            "postgres", 0, f"postgresql://postgres@127.0.0.1:{port}/cinerec", port
        )
        self.start("postgres")
        subprocess.run(
            _as_postgres(
                [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "cinerec"]
            ),
            check=False,
            capture_output=True,
        )

    def _redis(self) -> None:
        port = free_port()
        self.processes["redis"] = Process("redis", 0, f"redis://127.0.0.1:{port}/0", port)
        self.start("redis")

    def _mlflow_venv(self) -> Path:
        """The MLflow server's own venv, installed once: kept across clusters (installing MLflow
        takes minutes), and installed by one process while any other asking waits for it."""
        venv = self.mlflow_venv
        mlflow = venv / "bin" / "mlflow"
        venv.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{venv}.lock"):
            if not mlflow.exists():
                uv = Path(sys.executable).parent / "uv"  # make install's uv: seconds where pip takes minutes
                if uv.exists():
                    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
                    install = [str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
                else:
                    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                    install = [str(venv / "bin" / "pip"), "install", "-q"]
                subprocess.run([*install, f"mlflow=={MLFLOW_VERSION}"], check=True)
        return mlflow

    def _mlflow(self) -> None:
        mlflow, port = self._mlflow_venv(), free_port()
        artifacts = self.base / "mlflow-artifacts"
        artifacts.mkdir(exist_ok=True)
        cmd = [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.base / 'mlflow.db'}",
            "--artifacts-destination",
            str(artifacts),
        ]
        pid = self._spawn("mlflow", cmd)
        self.processes["mlflow"] = Process("mlflow", pid, f"http://127.0.0.1:{port}", port)
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/health"), "the MLflow server", 180)

    def _app_env(self, llm: str) -> dict[str, str]:
        return {
            "CINEREC_ENV": "test",
            "CINEREC_DATABASE_URL": self.processes["postgres"].url.replace(
                "postgresql://", "postgresql+asyncpg://"
            ),
            "CINEREC_REDIS_URL": self.processes["redis"].url,
            "CINEREC_MLFLOW_TRACKING_URI": self.processes["mlflow"].url,
            "CINEREC_JWT_SECRET": self.env.get("CINEREC_JWT_SECRET") or secrets.token_urlsafe(48),
            "CINEREC_TRUSTED_PROXIES": "127.0.0.1/32",
            "CINEREC_LLM_BACKEND": llm,
            "CINEREC_LLM_CACHE_DIR": str(self.home / "llm"),
            "CINEREC_HOME": str(self.base / "cli"),
            "HF_HUB_OFFLINE": "1",
        }

    def cinerec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A `cinerec` command against the cluster (ingest, train, users ...)."""
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"cinerec {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def _replica(self, i: int, *, name: str | None = None, env: dict[str, str] | None = None) -> None:
        name = name or f"replica-{i}"
        port = self.processes[name].port if name in self.processes else free_port()
        home = self.base / name
        home.mkdir(exist_ok=True)
        env = {**(env if env is not None else self.env), "CINEREC_HOME": str(home)}
        cmd = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ]
        pid = self._spawn(name, cmd, env={**env, "PYTHONPATH": str(ROOT)})
        self.processes[name] = Process(name, pid, f"http://127.0.0.1:{port}", port)

    @property
    def ca_file(self) -> Path:
        """The local CA's certificate: what a client of the cluster's HTTPS trusts."""
        return self.base / "tls" / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _nginx(self) -> None:
        known = self.processes.get("nginx")
        port = known.port if known is not None else free_port()
        http_port = int(known.extra["http_port"]) if known is not None else free_port()
        tls = self.base / "tls"
        if not (tls / "server.pem").exists():
            make_certificates(tls)
        self._nginx_site(port, http_port)
        temp = self.base / "nginx-temp"
        temp.mkdir(exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.base / "nginx.conf").write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {self.base / 'nginx.pid'};\n"
            f"error_log {self.base / 'nginx-error.log'} warn;\nevents {{ worker_connections 1024; }}\n"
            "http {\n"
            f"  access_log {self.base / 'nginx-access.log'};\n"
            f"  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
            f"  fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n"
            f"  include {self.base / 'cinerec-site.conf'};\n"
            "}\n"
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        pid = self._spawn("nginx", [nginx, "-c", str(self.base / "nginx.conf")])
        self.processes["nginx"] = Process(
            "nginx", pid, f"https://localhost:{port}", port, {"http_port": http_port}
        )
        context = self.ssl_context()
        _wait(
            lambda: (
                httpx.get(f"https://localhost:{port}/healthz", timeout=2, verify=context).status_code == 200
            ),
            "nginx",
        )

    def _nginx_site(self, port: int, http_port: int) -> None:
        """nginx's site for the replicas serving now (``replica-1`` …)."""
        tls = self.base / "tls"
        cache = self.base / "nginx-cache"
        cache.mkdir(exist_ok=True)
        servers = "\n    ".join(
            f"server 127.0.0.1:{self.processes[f'replica-{i}'].port} max_fails=0;"
            for i in range(1, REPLICAS + 1)
        )
        site = string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
            UPSTREAM_SERVERS=servers,
            LISTEN_PORT=f"127.0.0.1:{port}",
            HTTP_PORT=f"127.0.0.1:{http_port}",
            HTTPS_PORT=f":{port}",
            TLS_CERT=str(tls / "server.pem"),
            TLS_KEY=str(tls / "server.key"),
            CACHE_DIR=str(cache),
        )
        (self.base / "cinerec-site.conf").write_text(site)

    def _prometheus_config(self) -> None:
        targets = ", ".join(
            f'"127.0.0.1:{self.processes[f"replica-{i}"].port}"' for i in range(1, REPLICAS + 1)
        )
        rules = f'rule_files: ["{ALERT_RULES}"]\n' if ALERT_RULES.exists() else ""
        (self.base / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
            + rules
            + "scrape_configs:\n  - job_name: cinerec-api\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )

    def _prometheus(self) -> None:
        port = free_port()
        self._prometheus_config()
        prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
        cmd = [
            prometheus,
            f"--config.file={self.base / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.base / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        pid = self._spawn("prometheus", cmd)
        self.processes["prometheus"] = Process("prometheus", pid, f"http://127.0.0.1:{port}", port)
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/-/ready"), "Prometheus")

    # -- the whole ----------------------------------------------------------------------
    def up(
        self, *, dataset: Path | None, llm: str = "transformers", train_args: tuple[str, ...] = ()
    ) -> None:
        if self.state_file.exists():
            raise RuntimeError(f"a cluster is up already ({self.state_file}): `make cluster-down` first")
        self.base.mkdir(parents=True, exist_ok=True)
        try:
            self._postgres()
            self._redis()
            self._mlflow()
            self.env = self._app_env(llm)
            self._save()
            self.cinerec("db", "upgrade")
            if dataset is not None:
                self.cinerec("data", "ingest", str(dataset))
                self.cinerec("train", "--if-missing", *(train_args or ("--epochs", "10", "--no-tune")))
            for i in range(1, REPLICAS + 1):
                self._replica(i)
            for url in self.replica_urls():
                _wait(lambda u=url: _answers(f"{u}/readyz"), f"replica {url}", 600)
            self._nginx()
            self._prometheus()
        finally:
            self._save()

    def describe(self) -> str:
        lines = [
            f"cinerec cluster: {self.url}/graphql (nginx in front of {REPLICAS} replicas; TLS from the "
            f"local CA {self.ca_file}: curl --cacert {self.ca_file} {self.url}/healthz)"
        ]
        for p in self.processes.values():
            lines.append(f"{p.name} pid {p.pid} {p.url}")
        return "\n".join(lines)

    # -- blue-green ---------------------------------------------------------------------
    def deploy(self, *, env: dict[str, str] | None = None, ready_seconds: float = 600) -> list[Process]:
        """A new version beside the old: its replicas start with ``env`` over the cluster's
        environment (a new image's settings; here the code is the working tree's), each must
        get ready and answer the smoke query, then nginx switches to them with a graceful reload
        (its old workers finish what they hold), Prometheus follows, and the old replicas drain
        (SIGTERM: uvicorn finishes its requests and closes its sockets as "going away").
        A replica that is not ready in ``ready_seconds`` or fails the smoke stops the new ones
        and raises :class:`DeployFailed`: the old version goes on serving, untouched."""
        new_env = {**self.env, **(env or {})}
        old = [self.processes[f"replica-{i}"] for i in range(1, REPLICAS + 1)]
        fresh = [f"replica-{i}-next" for i in range(1, REPLICAS + 1)]
        try:
            for i, name in enumerate(fresh, start=1):
                self._replica(i, name=name, env=new_env)
            for name in fresh:
                url = self.processes[name].url
                _wait(lambda u=url: _answers(f"{u}/readyz"), f"the new {name}", ready_seconds)
                if problem := smoke(url):
                    raise DeployFailed(f"the new {name} failed the smoke query: {problem}")
        except (DeployFailed, RuntimeError) as exc:
            for name in fresh:
                if name in self.processes:
                    self.stop(name)
                    del self.processes[name]
            self._save()
            raise DeployFailed(f"{exc}; the old version goes on serving") from exc
        for i, name in enumerate(fresh, start=1):
            self.processes[f"replica-{i}"] = self.processes.pop(name)
            self.processes[f"replica-{i}"].name = f"replica-{i}"
        self.env = new_env
        self._save()
        self._reload_nginx()
        self._prometheus_config()
        if "prometheus" in self.processes:
            os.kill(self.processes["prometheus"].pid, signal.SIGHUP)
        for retired in old:
            self._stop_process(retired)
        self._save()
        return [self.processes[f"replica-{i}"] for i in range(1, REPLICAS + 1)]

    def _reload_nginx(self, seconds: float = 120) -> None:
        """nginx onto the replicas serving now: the new site checked (``nginx -t``), then a
        graceful reload, waited for until every worker of the old configuration has finished
        its requests and exited (from then on nothing reaches the old replicas)."""
        nginx = self.processes["nginx"]
        self._nginx_site(nginx.port, int(nginx.extra["http_port"]))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        checked = subprocess.run(
            [binary, "-t", "-q", "-c", str(self.base / "nginx.conf")], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused the new site: {checked.stderr.strip()}")
        before = _workers(nginx.pid)
        os.kill(nginx.pid, signal.SIGHUP)
        _wait(
            lambda: not (set(_workers(nginx.pid)) & set(before)) and bool(_workers(nginx.pid)),
            "nginx's reload (its old workers draining)",
            seconds,
        )

    # -- faults and repairs ---------------------------------------------------------------
    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 60) -> None:
        """Stop one part and wait until its process is gone."""
        self._stop_process(self.processes[name], sig, wait)

    def _stop_process(self, p: Process, sig: int = signal.SIGTERM, wait: float = 60) -> None:
        name = p.name
        if name == "postgres":
            subprocess.run(
                _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.pg_dir / "data"), "-m", "fast", "stop"]),
                check=False,
                capture_output=True,
            )
        elif p.pid:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        if (child := self._children.pop(p.pid, None)) is not None:
            try:
                child.wait(wait)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        else:  # started by another process (`make cluster`): poll
            while p.pid and _running(p.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        if name != "postgres" and p.pid:
            self._stop_group(p.pid, deadline)

    @staticmethod
    def _stop_group(pgid: int, deadline: float) -> None:
        """What a part started in its session (MLflow's server workers, uvicorn's) goes with it:
        asked to stop, then killed at the deadline."""
        if not (left := _group(pgid)):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        while (left := _group(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            log.warning("killing what process group %d left running: %s", pgid, left)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            while _group(pgid) and time.monotonic() < deadline + 10:
                time.sleep(0.05)

    def start(self, name: str) -> None:
        """Start one part again, on its own port and data."""
        p = self.processes[name]
        if name == "postgres":
            sockets = self.pg_dir / "sockets"
            sockets.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(sockets, "postgres", "postgres")
            subprocess.run(
                _as_postgres(
                    [
                        _pg_bin("pg_ctl"),
                        "-D",
                        str(self.pg_dir / "data"),
                        "-l",
                        str(self.pg_dir / "postgres.log"),
                        "-o",
                        f"-p {p.port} -k {sockets} -c listen_addresses=127.0.0.1",
                        "-w",
                        "start",
                    ]
                ),
                check=True,
                capture_output=True,
            )
            p.pid = int((self.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
        elif name == "redis":
            p.pid = self._spawn(
                "redis",
                [
                    "redis-server",
                    "--port",
                    str(p.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.base),
                ],
            )
            _wait(
                lambda: _listening(p.port),
                "Redis",
                30,
            )
        elif name.startswith("replica-"):
            self._replica(int(name.rsplit("-", 1)[1]))
            _wait(lambda: _answers(f"{self.processes[name].url}/readyz"), name, 600)
        else:
            raise ValueError(f"cannot restart {name} on its own")
        self._save()

    def down(self, *, wipe: bool = False) -> None:
        """Stop everything this cluster started; with ``wipe`` forget its data too."""
        for name in [
            "nginx",
            "prometheus",
            *(f"replica-{i}" for i in range(REPLICAS, 0, -1)),
            "mlflow",
            "redis",
            "postgres",
        ]:
            if name in self.processes:
                self.stop(name)
        if self.state_file.exists():
            self.state_file.unlink()
        self.processes = {}
        if wipe:
            shutil.rmtree(self.base, ignore_errors=True)
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def _live_group(pid: int) -> int | None:
    """The process group of ``pid`` while it runs (from /proc); None once it is gone or a
    zombie (exited, its parent has not waited yet)."""
    if (stat := _stat(pid)) is None:
        return None
    state, _ppid, group = stat
    return None if state == "Z" else group


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of ``pid`` from /proc, or None once it is gone."""
    try:
        state, ppid, group = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:3]
    except (OSError, ValueError):
        return None
    return state, int(ppid), int(group)


def _group(pgid: int) -> list[int]:
    """The running processes of process group ``pgid``."""
    pids = (int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit())
    return [pid for pid in pids if _live_group(pid) == pgid]


def _running(pid: int) -> bool:
    return _live_group(pid) is not None


def _workers(master: int) -> list[int]:
    """The running children of process ``master`` (nginx's workers), from /proc."""
    pids = (int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit())
    return [pid for pid in pids if (stat := _stat(pid)) and stat[1] == master and stat[0] != "Z"]


class DeployFailed(RuntimeError):
    """A blue-green deploy that did not switch: the old version serves as before."""


SMOKE_QUERY = "{ movies(first: 1) { edges { node { movieId title } } } }"


def smoke(url: str) -> str | None:
    """What is wrong with a replica's answer to the smoke query, or None when it is right:
    HTTP 200, no errors, one movie with a title."""
    try:
        response = httpx.post(f"{url}/graphql", json={"query": SMOKE_QUERY}, timeout=30)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status_code != 200 or body.get("errors"):
        return f"HTTP {response.status_code}: {body.get('errors')}"
    edges = (body.get("data") or {}).get("movies", {}).get("edges") or []
    return None if len(edges) == 1 and edges[0]["node"]["title"] else f"no movie in {body}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "deploy", "down", "mlflow-venv"])
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("CINEREC_HOME", "var")))
    ap.add_argument("--dataset", type=Path, help="a MovieLens folder to ingest and train on")
    ap.add_argument("--llm", default="transformers", choices=["transformers", "none"])
    ap.add_argument("--wipe", action="store_true", help="with down: delete the cluster's data too")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with deploy: a setting of the new version (CINEREC_…), over the cluster's",
    )
    a = ap.parse_args()
    cluster = LocalCluster(a.home)
    if a.action == "mlflow-venv":  # installation only (make test does it before the suite)
        print(cluster._mlflow_venv())
        return
    if a.action == "down":
        cluster.down(wipe=a.wipe)
        print("cinerec cluster stopped")
        return
    if a.action == "deploy":
        try:
            serving = cluster.deploy(env=dict(s.split("=", 1) for s in a.set))
        except DeployFailed as exc:
            print(f"deploy failed: {exc}", file=sys.stderr)
            sys.exit(1)
        print("deployed: " + ", ".join(f"{p.name} pid {p.pid} {p.url}" for p in serving))
        return
    cluster.up(dataset=a.dataset, llm=a.llm)
    print(cluster.describe())


if __name__ == "__main__":
    main()
