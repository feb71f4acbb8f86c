"""The local cluster under faults: real nginx, two replicas, PostgreSQL, Redis, an MLflow
tracking server and Prometheus, as `make cluster` runs them (deploy/localcluster.py).

Each fault runs under load through nginx; what was measured (requests failed, writes kept,
time to recover) is printed and kept in ``bench-results/cluster_faults.json``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import websockets

from deploy.localcluster import DeployFailed, LocalCluster
from ml.registry import CHAMPION, RECOMMENDER
from tests.e2e.conftest import ADMIN, wait_until
from tests.movielens_fixture import write_movielens

ROOT = Path(__file__).resolve().parents[2]
RESULTS: dict[str, object] = {}
# what the clients trust: the cluster's local CA (set by the fixture; plain-HTTP replica URLs
# ignore it)
TRUST: dict[str, ssl.SSLContext] = {}


def trust() -> ssl.SSLContext | bool:
    return TRUST.get("ca", True)


LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home = tmp_path_factory.mktemp("cluster")
    write_movielens(home / "ml")
    # the MLflow server's venv outlives the test run (installing MLflow takes minutes)
    running = LocalCluster(home, mlflow_venv=ROOT / "var" / "mlflow-venv")
    try:
        running.up(dataset=home / "ml", llm="none", train_args=("--epochs", "2", "--no-tune"))
        TRUST["ca"] = running.ssl_context()
        running.cinerec("users", "create-admin", "--email", ADMIN[0], "--password", ADMIN[1])
        yield running
    finally:
        running.down()
        out = ROOT / "bench-results"
        out.mkdir(exist_ok=True)
        (out / "cluster_faults.json").write_text(json.dumps(RESULTS, indent=2))


def gql(
    url: str, query: str, variables: dict | None = None, token: str | None = None, timeout: float = 30
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=timeout,
        verify=trust(),
    )


def admin_token(url: str) -> str:
    return gql(url, LOGIN, {"e": ADMIN[0], "p": ADMIN[1]}).json()["data"]["login"]["token"]


def served_version(url: str, token: str) -> str | None:
    found = gql(url, "{ recommendations(userId: 3, first: 1) { rank } }", token=token).json()
    return found.get("extensions", {}).get("recommender", {}).get("version")


@dataclass
class Load:
    """Clients sending requests through nginx until stopped; every answer is sorted. The fault
    tests send an admin's token: a fast machine empties the anonymous bucket of the one test
    address within the module (429s, then a refused login), and the fault, not the rate limit,
    is under test there (tests/e2e/test_serving.py tests the limits)."""

    url: str
    make: Callable[[int], tuple[str, dict]]
    token: str | None = None
    threads: int = 4
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        i = worker
        with httpx.Client(timeout=30, verify=trust()) as client:
            while not self.stop.is_set():
                query, variables = self.make(i)
                headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
                try:
                    response = client.post(
                        f"{self.url}/graphql", json={"query": query, "variables": variables}, headers=headers
                    )
                    body = response.json()
                    outcome = (
                        "ok"
                        if response.status_code == 200 and "errors" not in body
                        else (
                            f"{response.status_code}:"
                            + ",".join(
                                e.get("extensions", {}).get("code", "?") for e in body.get("errors", [])
                            )
                        )
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    outcome = f"transport:{type(exc).__name__}"
                with self._lock:
                    if outcome == "ok":
                        self.ok += 1
                    else:
                        self.failed.append(outcome)
                    self.codes[outcome] = self.codes.get(outcome, 0) + 1
                i += self.threads

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, args=(w,)) for w in range(self.threads)]
        for t in self._workers:
            t.start()
        wait_until(lambda: self.ok >= 20, "the load is flowing")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self._workers:
            t.join()


def movie_reads(i: int) -> tuple[str, dict]:
    return "query($id: Int!) { movie(movieId: $id) { title ratingsCount } }", {"id": 1 + i % 30}


def test_nginx_serves_https_only_http2_with_hsts_and_the_rest_listens_on_loopback(
    cluster: LocalCluster,
) -> None:
    nginx = cluster.processes["nginx"]
    https, http_port = cluster.url, nginx.extra["http_port"]
    # the local CA's certificate, for localhost: trusted with the CA, refused without it
    answered = httpx.get(f"{https}/healthz", verify=trust())
    assert answered.status_code == 200
    assert answered.headers["strict-transport-security"] == "max-age=31536000"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https}/healthz")
    # plain HTTP answers nothing but a redirect to the same path over HTTPS, a POST included
    for method in ("GET", "POST"):
        moved = httpx.request(method, f"http://localhost:{http_port}/graphql?x=1", content=b"{}")
        assert moved.status_code == 308 and moved.headers["location"] == f"{https}/graphql?x=1", moved
        assert "data" not in moved.text
    # HTTP/2 is offered (ALPN), over TLS 1.3 or 1.2 (nginx's ssl_protocols turns the rest away)
    context = cluster.ssl_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", nginx.port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2" and tls.version() in ("TLSv1.2", "TLSv1.3")
    capped = cluster.ssl_context()  # a client that stops at TLS 1.2 is still served
    capped.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", nginx.port)) as raw,
        capped.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"
    # the API over HTTPS and a subscription's socket over WSS
    token = admin_token(https)
    assert gql(https, "{ me { userId } }", token=token).json()["data"]["me"]["userId"]

    async def secure_socket() -> None:
        ws = await _ws_connect(https, token)
        await ws.close()

    asyncio.run(secure_socket())
    # every part listens on loopback only (nginx too, on this one machine: in compose and
    # Kubernetes it is the only part published)
    listening: dict[str, set[str]] = {}
    for name, part in cluster.processes.items():
        if not part.pid:
            continue
        for proc in [psutil.Process(part.pid), *psutil.Process(part.pid).children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.setdefault(name, set()).add(conn.laddr.ip)
    assert {"replica-1", "replica-2", "postgres", "redis", "nginx"} <= set(listening), listening
    assert all(ip in ("127.0.0.1", "::1") for ips in listening.values() for ip in ips), listening


def test_a_promotion_through_one_replica_is_served_by_the_other_and_prometheus_scrapes_both(
    cluster: LocalCluster,
) -> None:
    from app.infra.model_registry import registry_for
    from app.infra.settings import Settings

    a, b = cluster.replica_urls()
    token = admin_token(cluster.url)
    registry = registry_for(
        Settings(mlflow_tracking_uri=cluster.env["CINEREC_MLFLOW_TRACKING_URI"], home=cluster.base / "cli")
    )
    folder = registry.download(RECOMMENDER, "1", cluster.base / "copy")
    run_id, source = registry.log_run(
        experiment=RECOMMENDER, params={"copy_of": 1}, metrics={}, artifacts=folder
    )
    version = registry.register(RECOMMENDER, source=source, run_id=run_id)
    promoted = gql(a, f'mutation {{ promoteModel(version: "{version}") {{ version }} }}', token=token).json()
    assert promoted["data"]["promoteModel"]["version"] == version
    started = time.monotonic()
    wait_until(lambda: served_version(b, token) == version, "replica B serves the promoted version")
    RESULTS["promotion_seen_by_other_replica_s"] = round(time.monotonic() - started, 2)
    prometheus = cluster.processes["prometheus"].url

    def scraped() -> set[str]:
        found = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="cinerec-api"} == 1'}).json()
        return {r["metric"]["instance"] for r in found["data"]["result"]}

    wait_until(
        lambda: scraped() == {u.removeprefix("http://") for u in (a, b)}, "Prometheus scrapes both replicas"
    )
    # back to version 1 for the other tests
    assert (
        gql(b, "mutation { rollbackModel { version } }", token=token).json()["data"]["rollbackModel"][
            "version"
        ]
        == "1"
    )
    wait_until(lambda: served_version(a, token) == "1", "replica A follows the rollback")


async def _ws_connect(url: str, token: str) -> websockets.ClientConnection:
    secure = url.startswith("https://")
    ws = await websockets.connect(
        url.replace("http", "ws", 1) + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        ssl=TRUST["ca"] if secure else None,
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


def test_sigterm_to_a_replica_under_load(cluster: LocalCluster) -> None:
    token = admin_token(cluster.url)
    replica = cluster.processes["replica-1"]

    async def sockets() -> tuple[list[int | None], bool]:
        open_ = [await _ws_connect(cluster.url, token) for _ in range(6)]  # least_conn spreads them
        with Load(cluster.url, movie_reads, token) as load:
            cluster.stop("replica-1", signal.SIGTERM)
            closed: list[int | None] = []
            for ws in open_:
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    closed.append(None)
                except websockets.ConnectionClosed as exc:
                    closed.append(exc.rcvd.code if exc.rcvd else None)
                except TimeoutError:
                    closed.append(None)  # on the other replica: still open
            again = await _ws_connect(cluster.url, token)  # a client reconnects, to the other replica
            await again.close()
            await asyncio.sleep(1)  # the load goes on a moment past the shutdown
        for ws in open_:
            await ws.close()
        RESULTS["sigterm_replica"] = {"ok": load.ok, "failed": len(load.failed), "failures": load.codes}
        assert load.failed == [], load.codes
        return closed, True

    closed, reconnected = asyncio.run(sockets())
    assert 1001 in closed and reconnected  # the ones on the stopped replica were told "going away"
    assert all(code in (None, 1001) for code in closed)
    cluster.start("replica-1")
    assert cluster.processes["replica-1"].pid != replica.pid


def test_redis_stopped_under_load(cluster: LocalCluster) -> None:
    from app.infra.model_registry import registry_for
    from app.infra.settings import Settings

    a, b = cluster.replica_urls()
    token = admin_token(cluster.url)
    registry = registry_for(
        Settings(mlflow_tracking_uri=cluster.env["CINEREC_MLFLOW_TRACKING_URI"], home=cluster.base / "cli")
    )
    target = registry.versions(RECOMMENDER)[0].version  # the newest registered version
    with Load(cluster.url, movie_reads, token) as load:
        cluster.stop("redis")
        wait_until(
            lambda: httpx.get(f"{a}/readyz").json().get("status") == "degraded", "replica A says degraded"
        )
        # a promotion during the outage: replica B cannot hear of it
        promoted = gql(
            a, f'mutation {{ promoteModel(version: "{target}") {{ version }} }}', token=token
        ).json()
        assert promoted["data"]["promoteModel"]["version"] == target
        time.sleep(1)  # load keeps flowing through the outage
        down_for = time.monotonic()
        cluster.start("redis")
        wait_until(
            lambda: served_version(b, token) == target,
            "replica B picked up the promotion after Redis came back",
        )
        RESULTS["redis_outage"] = {
            "follower_resync_after_redis_back_s": round(time.monotonic() - down_for, 2)
        }
    RESULTS["redis_outage"].update({"ok": load.ok, "failed": len(load.failed), "failures": load.codes})  # type: ignore[attr-defined]
    assert load.failed == [], load.codes
    assert registry.alias_version(RECOMMENDER, CHAMPION) == target
    gql(a, 'mutation { promoteModel(version: "1") { version } }', token=token)


def test_postgres_restarted_under_load(cluster: LocalCluster) -> None:
    emails = [f"writer-{uuid.uuid4().hex[:6]}@example.com" for _ in range(2)]
    for email in emails:
        cluster.cinerec("users", "create", "--email", email, "--password", "a-fine-passphrase")
    tokens = [
        gql(cluster.url, LOGIN, {"e": e, "p": "a-fine-passphrase"}).json()["data"]["login"]["token"]
        for e in emails
    ]
    acknowledged: dict[tuple[int, int], float] = {}  # the last acknowledged rating per (writer, movie)
    acks = [0]  # every acknowledged write: the dict stops growing once each movie has one
    lock = threading.Lock()
    stop = threading.Event()
    errors: dict[str, int] = {}

    def writer(w: int) -> None:
        i = 0
        with httpx.Client(timeout=30, verify=trust()) as client:
            while not stop.is_set():
                movie, rating = 1 + i % 30, 0.5 * (1 + i % 10)
                try:
                    response = client.post(
                        f"{cluster.url}/graphql",
                        json={
                            "query": "mutation($m: Int!, $r: Float!) { rateMovie(movieId: $m, rating: $r) { rating } }",
                            "variables": {"m": movie, "r": rating},
                        },
                        headers={"authorization": f"Bearer {tokens[w]}"},
                    )
                    body = response.json()
                    if "errors" not in body:
                        with lock:
                            acknowledged[(w, movie)] = rating
                            acks[0] += 1
                    else:
                        code = body["errors"][0]["extensions"]["code"]
                        with lock:
                            errors[code] = errors.get(code, 0) + 1
                except (httpx.HTTPError, ValueError) as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: acks[0] >= 10, "writes are flowing")
    with Load(cluster.url, movie_reads, admin_token(cluster.url)) as load:
        cluster.stop("postgres")
        time.sleep(2)  # the outage lasts a while; requests meanwhile get UNAVAILABLE
        cluster.start("postgres")
        back = time.monotonic()
        acked_at_restart = acks[0]
        wait_until(
            lambda: acks[0] > acked_at_restart + 5,
            "writes succeed again without restarting cinerec",
        )
        recovered_s = time.monotonic() - back
    stop.set()
    for t in threads:
        t.join()
    outcomes = set(load.codes) | set(errors)
    RESULTS["postgres_restart"] = {
        "reads_ok": load.ok,
        "reads_failed": len(load.failed),
        "read_failures": load.codes,
        "write_errors": errors,
        "writes_acknowledged": acks[0],
        "recovered_after_start_s": round(recovered_s, 2),
    }
    # during the outage: clear errors, never INTERNAL or a bare 500
    assert not any("INTERNAL" in o or o.startswith("500") for o in outcomes), outcomes
    me = "{ me { ratings(first: 100) { edges { node { movieId rating } } } } }"
    kept = 0
    for w, token in enumerate(tokens):
        stored = {
            e["node"]["movieId"]: e["node"]["rating"]
            for e in gql(cluster.url, me, token=token).json()["data"]["me"]["ratings"]["edges"]
        }
        for writer_id, movie in acknowledged:
            if writer_id == w:
                assert stored.get(movie) is not None, f"acknowledged rating of movie {movie} lost"
                kept += 1
    RESULTS["postgres_restart"]["acknowledged_writes_kept"] = kept  # type: ignore[index]
    assert kept == len(acknowledged)


@dataclass
class OpenLoop:
    """Requests through nginx at a fixed rate, each sent on schedule whether or not the ones
    before it have answered (an open loop: a stall shows as requests piling up, not as a
    slower client); every answer is sorted, and its cost limit (which a deploy below moves)
    is kept in order of sending."""

    url: str
    token: str
    rate: float = 25.0
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        query, variables = movie_reads(i)
        try:
            response = await client.post(
                f"{self.url}/graphql",
                json={"query": query, "variables": variables},
                headers={"authorization": f"Bearer {self.token}"},
            )
            body = response.json()
            if response.status_code == 200 and "errors" not in body:
                self.ok += 1
                self.limits.append(int(body["extensions"]["cost"]["limit"]))
            else:
                self.failed.append(f"{response.status_code}:{body.get('errors')}")
        except (httpx.HTTPError, ValueError) as exc:
            self.failed.append(f"transport:{type(exc).__name__}:{exc}")

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=60, verify=trust()) as client:
            pending: set[asyncio.Task[None]] = set()
            started, i = time.monotonic(), 0
            while not self.stop.is_set():
                task = asyncio.create_task(self._one(client, i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
                await asyncio.sleep(max(0.0, started + i / self.rate - time.monotonic()))
            await asyncio.gather(*pending)

    def __enter__(self) -> OpenLoop:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),))
        self._thread.start()
        wait_until(lambda: self.ok >= 20, "the open-loop load is flowing")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        assert self._thread is not None
        self._thread.join()


def test_blue_green_deploy_switches_under_open_loop_load_and_a_failed_smoke_keeps_the_old(
    cluster: LocalCluster,
) -> None:
    names = [f"replica-{i}" for i in (1, 2)]
    old = {n: cluster.processes[n].pid for n in names}
    limit = int(cluster.env.get("CINEREC_MAX_QUERY_COST", "5000"))

    # a new version that fails its smoke query (it prices a one-movie page over its limit):
    # it is stopped, and the old one serves as before
    with pytest.raises(DeployFailed, match="smoke query"):
        cluster.deploy(env={"CINEREC_MAX_QUERY_COST": "1"})
    assert {n: cluster.processes[n].pid for n in names} == old
    assert all(psutil.pid_exists(pid) for pid in old.values())
    assert not any(n.endswith("-next") for n in cluster.processes)
    token = admin_token(cluster.url)

    # a good one under open-loop load: every request answers, the old replicas are gone, and
    # what answers from then on is the new version (its cost limit, 4,321)
    with OpenLoop(cluster.url, token) as load:
        serving = cluster.deploy(env={"CINEREC_MAX_QUERY_COST": "4321"})
        after = load.ok
        wait_until(lambda: load.ok >= after + 25, "the load goes on past the switch")
    RESULTS["blue_green"] = {"ok": load.ok, "failed": len(load.failed), "rate": load.rate}
    assert load.failed == [], load.failed[:5]
    assert {p.name for p in serving} == set(names)
    assert all(p.pid != old[p.name] for p in serving)
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in old.values()
    )
    assert load.limits[0] == limit and load.limits[-25:] == [4321] * 25
    assert cluster.env["CINEREC_MAX_QUERY_COST"] == "4321"  # a restart keeps the new version


def test_cluster_down_from_another_process_stops_every_process_it_started(cluster: LocalCluster) -> None:
    """`make cluster-down` (a process of its own, reading the cluster's state file) stops every
    process `up` started, their children included (uvicorn's workers, PostgreSQL's backends),
    and frees every port. Last in this module: the cluster is gone after it."""
    started = [psutil.Process(p.pid) for p in cluster.processes.values() if p.pid]
    family = started + [c for p in started for c in p.children(recursive=True)]
    called = {p.pid: " ".join(p.cmdline()[:4]) for p in family}
    assert len(started) >= 7, cluster.processes  # nginx, 2 replicas, postgres, redis, mlflow, prometheus
    ports = [p.port for p in cluster.processes.values() if p.port]
    down = subprocess.run(
        [sys.executable, "-m", "deploy.localcluster", "down", "--home", str(cluster.home)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr[-2000:]

    def gone(process: psutil.Process) -> bool:  # a zombie is gone: only its parent's wait is left
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    left = [f"{p.pid} {called[p.pid]}" for p in family if not gone(p)]
    assert not left, f"still running after down: {left}"
    listening = [port for port in ports if _accepts(port)]
    assert not listening, f"ports still open after down: {listening}"
    assert not (cluster.base / "cluster.json").exists()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
