"""deploy/compose and deploy/k8s, validated without Docker or a cluster.

They cannot be run here, so these tests check what would break them: the YAML parses; every file
they reference (bind mounts, Dockerfile, provisioning, dashboards, the policy file, the
Prometheus config) exists; every DUEWATCH_*/KAFKA_* variable is one streams/settings.py reads,
and the values parse with its from_env; the web port everywhere (ports, healthchecks, probes,
scrape targets, annotations) is DUEWATCH_WEB_PORT's, whose default is Settings().web_port;
probes point at /health and /ready; RocksDB state (DUEWATCH_STATE_DIR) is on a volume; and the
pieces are wired to each other (Kafka listeners, service selectors, secrets, scrape relabelling).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from streams import settings as settings_module
from streams.policy_loader import load_policy
from streams.settings import Settings, from_env
from tests.support.shared import REPO

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deploy files (pip install pyyaml)")

ROOT = REPO
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S_DIR = DEPLOY / "k8s"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "duewatch.json"

WEB_PORT = Settings().web_port  # DUEWATCH_WEB_PORT's default (6066)

#: Variables in the Kubernetes manifests that are not duewatch's own: the downward API.
K8S_OTHER_ENV = {"POD_NAME", "POD_NAMESPACE"}


def known_env_names() -> set[str]:
    """The variables streams/settings.py reads (its VARIABLES, the list from_env reads)."""
    names = {variable.name for variable in settings_module.VARIABLES}
    assert {"DUEWATCH_WEB_PORT", "DUEWATCH_STATE_DIR", "KAFKA_BOOTSTRAP_SERVERS"} <= names, names
    return names


def policy_env_names(policy_file: Path | None) -> set[str]:
    """Variables a policy file names (partner keys: ``key_env = "VAR"``)."""
    if policy_file is None:
        return set()

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "key_env" and isinstance(value, str):
                    yield value
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return set(walk(tomllib.loads(policy_file.read_text(encoding="utf-8"))))


def is_under(path: str, directory: str) -> bool:
    return (
        PurePosixPath(path) == PurePosixPath(directory)
        or PurePosixPath(directory) in PurePosixPath(path).parents
    )


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def port_of_url(url: str) -> tuple[str, int, str]:
    m = re.search(r"https?://([^/:'\"\s]+):(\d+)(/[^'\"\s]*)?", url)
    assert m, f"no http://host:port in {url!r}"
    return m.group(1), int(m.group(2)), m.group(3) or "/"


# =========================================================================== compose


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def interpolate(value: Any) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with an empty environment."""
    text = str(value)
    text = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{\w+\}|\$(?!\$)\w+", "", text)


def service_env(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): interpolate(v) for k, v in env.items()}


def command_of(svc: Mapping[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def is_duewatch(svc: Mapping[str, Any]) -> bool:
    build = svc.get("build") or {}
    return isinstance(build, Mapping) and str(build.get("dockerfile", "")).endswith(
        "deploy/compose/Dockerfile"
    )


def duewatch_services() -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in services().items() if is_duewatch(svc)}
    assert found, "no service is built from deploy/compose/Dockerfile"
    return found


def workers() -> dict[str, dict[str, Any]]:
    found = {
        name: svc for name, svc in duewatch_services().items() if command_of(svc) == ["duewatch", "worker"]
    }
    assert len(found) >= 2, f"need at least two `duewatch worker` services, found {sorted(found)}"
    return found


def mounts(svc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target, kind = entry.get("source", ""), entry["target"], entry.get("type", "volume")
        out.append((kind, source, target))
    return out


def host_path(svc: Mapping[str, Any], container_path: str) -> Path:
    """The repository path behind ``container_path`` through the service's bind mounts."""
    best = None
    for kind, source, target in mounts(svc):
        if (
            kind == "bind"
            and is_under(container_path, target)
            and (best is None or len(target) > len(best[1]))
        ):
            best = (source, target)
    assert best is not None, f"{container_path} is not inside any bind mount"
    rest = PurePosixPath(container_path).relative_to(best[1])
    return (COMPOSE_DIR / best[0] / rest).resolve()


def kafka_nodes() -> dict[str, dict[str, Any]]:
    """The compose cluster's Kafka nodes (services running the Kafka image with a node id)."""
    found = {name: svc for name, svc in services().items()
             if str(svc.get("image", "")).startswith("apache/kafka:") and "KAFKA_NODE_ID" in service_env(svc)}  # fmt: skip
    assert found, "no Kafka node in the compose file"
    return found


def test_compose_has_the_services() -> None:
    svcs = services()
    for name in ("kafka-tls", "kafka-users", "topics", "prometheus", "grafana"):
        assert name in svcs, f"no {name} service"
    assert set(kafka_nodes()) == {"kafka-1", "kafka-2", "kafka-3"}
    assert set(workers()) >= {"worker-1", "worker-2"}
    assert command_of(svcs["topics"]) == ["duewatch", "topics", "create"]
    for one_shot in ("topics", "kafka-tls", "kafka-users"):
        assert str(svcs[one_shot].get("restart", "no")) == "no", f"{one_shot} is a one-shot service"


def test_compose_referenced_files_exist() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for kind, source, target in mounts(svc):
            assert target.startswith("/"), f"{name}: {target}"
            if kind == "bind":
                assert (COMPOSE_DIR / source).exists(), f"{name}: bind mount source {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared under volumes:"
        build = svc.get("build")
        if build:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / (
                build.get("dockerfile", "Dockerfile") if isinstance(build, Mapping) else "Dockerfile"
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
        for dep in svc.get("depends_on") or {}:
            assert dep in services(), f"{name} depends on unknown service {dep}"


def listeners_of(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {name: "host:port"}."""
    return dict(item.split("://") for item in value.split(","))


def test_compose_kafka_runs_a_kraft_cluster() -> None:
    nodes = kafka_nodes()
    envs = {name: service_env(svc) for name, svc in nodes.items()}
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1, "one cluster id for all nodes"
    ids = {env["KAFKA_NODE_ID"] for env in envs.values()}
    assert len(ids) == len(nodes), "node ids must differ"
    voters = {}
    for name, svc in nodes.items():
        env = envs[name]
        assert re.fullmatch(r"apache/kafka:4\.0\.\d+", svc["image"]), svc["image"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert "ZOOKEEPER" not in " ".join(env), "KRaft needs no ZooKeeper"
        listeners = listeners_of(env["KAFKA_LISTENERS"])
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
        protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(listeners) <= set(protocols), f"{name}: a listener without a security protocol"
        advertised = listeners_of(env["KAFKA_ADVERTISED_LISTENERS"])
        assert set(advertised) <= set(listeners) and env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
        voters[env["KAFKA_NODE_ID"]] = f"{svc.get('hostname', name)}:{listeners['CONTROLLER'].lstrip(':')}"
        # the state it keeps is on its own volume
        assert any(t == env["KAFKA_LOG_DIRS"] for kind, _, t in mounts(svc) if kind == "volume"), name
        # the health check asks a listener of its own
        check = str(svc["healthcheck"]["test"])
        assert any(f"localhost:{hp.rsplit(':', 1)[1]}" in check for hp in listeners.values()), check
    for env in envs.values():
        assert dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
    data_volumes = [s for svc in nodes.values() for kind, s, t in mounts(svc) if t == "/var/lib/kafka/data"]
    assert len(set(data_volumes)) == len(nodes), "each node keeps its data on its own volume"


def test_compose_kafka_replication_is_a_production_clusters() -> None:
    """Three copies of every partition (internal topics too), acks=all needs two: one node may
    fail without losing an acknowledged record or stopping the writes."""
    nodes = kafka_nodes()
    for name, svc in nodes.items():
        env = service_env(svc)
        for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"):  # fmt: skip
            assert int(env[key]) == 3 <= len(nodes), f"{name}: {key}={env[key]}"
        for key in ("KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"):  # fmt: skip
            assert int(env[key]) == 2, f"{name}: {key}={env[key]}"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    for name, svc in duewatch_services().items():
        assert from_env(service_env(svc)).replication == 3, f"{name}: DUEWATCH_REPLICATION"


def test_compose_clients_use_tls_and_scram() -> None:
    """duewatch reaches every node over SASL_SSL with SCRAM-SHA-512, checking the brokers'
    certificate against the CA the kafka-tls service made; the brokers have the keystore, the
    mechanism and the JAAS file that needs; kafka-users creates that very user."""
    svcs = services()
    nodes = kafka_nodes()
    script = (COMPOSE_DIR / "kafka" / "tls-init.sh").read_text()
    [(tls_volume, secrets_dir)] = [(s, t) for kind, s, t in mounts(svcs["kafka-tls"]) if kind == "volume"]
    for name, svc in nodes.items():
        env = service_env(svc)
        assert (tls_volume, secrets_dir) in {(s, t) for kind, s, t in mounts(svc) if kind == "volume"}, name
        assert secrets_dir == "/etc/kafka/secrets", "the apache/kafka image reads its TLS files there"
        for key in (
            "KAFKA_SSL_KEYSTORE_FILENAME",
            "KAFKA_SSL_KEYSTORE_CREDENTIALS",
            "KAFKA_SSL_KEY_CREDENTIALS",
        ):
            assert f" {env[key]}" in script or f"> {env[key]}" in script, (
                f"{name}: tls-init.sh does not write {env[key]}"
            )
        jaas = re.search(r"java\.security\.auth\.login\.config=(\S+)", env["KAFKA_OPTS"]).group(1)
        assert "ScramLoginModule" in host_path(svc, jaas).read_text()
        mechanisms = env["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
        protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        advertised = listeners_of(env["KAFKA_ADVERTISED_LISTENERS"])
        # the image configures TLS and SASL only for listeners named like this
        assert all(
            ("SSL" in n and protocols[n].endswith("SSL")) or protocols[n] == "PLAINTEXT" for n in advertised
        )
        for dw_name, dw in duewatch_services().items():
            cfg = from_env(service_env(dw))
            assert (cfg.security_protocol, cfg.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512"), dw_name
            assert cfg.sasl_mechanism in mechanisms
            reached = [n for n, hp in advertised.items() if hp in cfg.bootstrap_servers.split(",")]
            assert reached and all(protocols[n] == cfg.security_protocol for n in reached), (dw_name, reached)
            [ca_mount] = [t for kind, s, t in mounts(dw) if kind == "volume" and s == tls_volume]
            assert PurePosixPath(cfg.ssl_cafile) == PurePosixPath(ca_mount) / "ca.pem", dw_name
            assert "ca.pem" in script
    # every node is in every duewatch service's bootstrap list
    for dw_name, dw in duewatch_services().items():
        servers = from_env(service_env(dw)).bootstrap_servers.split(",")
        assert {s.split(":")[0] for s in servers} == {svc.get("hostname", n) for n, svc in nodes.items()}, (
            dw_name
        )
    users = svcs["kafka-users"]
    command = " ".join(command_of(users))
    user = from_env(service_env(svcs["worker-1"])).sasl_username
    assert f"--entity-name {user}" in command and "SCRAM-SHA-512=[password=" in command
    worker_password = str(svcs["worker-1"]["environment"]["KAFKA_SASL_PASSWORD"])
    assert str(users["environment"]["KAFKA_SASL_PASSWORD"]) == worker_password, "the same password variable"


def test_compose_env_vars_are_known_and_parse() -> None:
    known = known_env_names()
    for name, svc in duewatch_services().items():
        env = service_env(svc)
        policy = env.get("DUEWATCH_POLICY_FILE")
        allowed = known | policy_env_names(host_path(svc, policy) if policy else None)
        unknown = sorted(k for k in env if k not in allowed)
        assert not unknown, f"{name}: variables streams/settings.py does not read: {unknown}"
        from_env(env)  # raises ValueError naming a bad value


def test_compose_worker_web_port_healthcheck_and_scrape_targets() -> None:
    targets = {t for c in load_yaml(PROM_CONFIG)["scrape_configs"] if c["job_name"] == "duewatch"
               for sc in c["static_configs"] for t in sc["targets"]}  # fmt: skip
    expected_targets, host_ports, hostnames = set(), [], []
    for name, svc in workers().items():
        port = from_env(service_env(svc)).web_port
        assert port == WEB_PORT, f"{name}: web port {port}, streams/settings.py's default is {WEB_PORT}"
        # set explicitly: the default listens on 127.0.0.1, which Prometheus' container cannot reach
        assert from_env(service_env(svc)).web_bind == "0.0.0.0", name
        published = [str(p) for p in svc.get("ports") or []]
        assert published, f"{name}: web port not published"
        for mapping in published:
            *host, container = mapping.split(":")
            assert int(container) == port, f"{name}: {mapping} does not map to the web port {port}"
            host_ports.append(mapping.rsplit(":", 1)[0])
        check = " ".join(map(str, svc["healthcheck"]["test"]))
        host, hc_port, path = port_of_url(check)
        assert (host, hc_port, path) == ("127.0.0.1", port, "/health"), f"{name}: healthcheck {check}"
        hostname = svc.get("hostname", name)
        hostnames.append(hostname)
        expected_targets.add(f"{hostname}:{port}")
    assert len(set(host_ports)) == len(host_ports), "two workers publish the same host port"
    assert len(set(hostnames)) == len(hostnames), "workers need distinct hostnames (Faust canonical URLs)"
    assert targets == expected_targets, "prometheus.yml's duewatch targets must be exactly the workers"


def test_compose_workers_have_failover_settings_and_their_own_member_id() -> None:
    ids = []
    for name, svc in workers().items():
        cfg = from_env(service_env(svc))
        assert 6 <= cfg.session_timeout <= 15 and cfg.heartbeat_interval <= cfg.session_timeout / 3, name
        assert cfg.instance_id, f"{name}: DUEWATCH_INSTANCE_ID not set"
        ids.append(cfg.instance_id)
    assert len(set(ids)) == len(ids), f"workers share a static member id: {ids}"


def test_compose_workers_keep_state_on_their_own_volume() -> None:
    used = []
    for name, svc in workers().items():
        state_dir = from_env(service_env(svc)).state_dir
        assert state_dir.startswith("/"), f"{name}: DUEWATCH_STATE_DIR should be absolute, is {state_dir}"
        [volume] = [s for kind, s, t in mounts(svc) if kind == "volume" and is_under(state_dir, t)] or [None]
        assert volume, f"{name}: DUEWATCH_STATE_DIR {state_dir} is not on a named volume"
        used.append(volume)
    assert len(set(used)) == len(used), f"workers share a state volume: {used}"


def test_compose_start_order() -> None:
    svcs = services()
    nodes = set(kafka_nodes())
    for name, svc in {**workers(), "topics": svcs["topics"]}.items():
        deps = svc["depends_on"]
        if name != "topics":
            assert {n for n in nodes if deps[n]["condition"] == "service_healthy"} == nodes, name
            assert deps["topics"]["condition"] == "service_completed_successfully", name
    assert svcs["topics"]["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"
    assert {
        n for n, d in svcs["kafka-users"]["depends_on"].items() if d["condition"] == "service_healthy"
    } == nodes
    for node in nodes:
        assert svcs[node]["depends_on"]["kafka-tls"]["condition"] == "service_completed_successfully", node


def test_compose_policy_file_loads() -> None:
    for name, svc in duewatch_services().items():
        policy = service_env(svc).get("DUEWATCH_POLICY_FILE")
        if policy:
            path = host_path(svc, policy)
            assert path.is_file(), f"{name}: {policy} -> {path}"
            load_policy(str(path), environ={})


def test_compose_prometheus_and_grafana_wiring() -> None:
    svcs = services()
    prom = svcs["prometheus"]
    [config] = [a.split("=", 1)[1] for a in command_of(prom) if a.startswith("--config.file=")]
    assert host_path(prom, config) == PROM_CONFIG.resolve()
    for rule_file in load_yaml(PROM_CONFIG)["rule_files"]:
        assert (PROM_CONFIG.parent / rule_file).is_file(), rule_file
        assert host_path(prom, str(PurePosixPath(config).parent / rule_file)).is_file()
    prom_ports = {int(str(p).rsplit(":", 1)[1]) for p in prom.get("ports") or []}

    graf = svcs["grafana"]
    provisioning = GRAFANA_DIR / "provisioning"
    for kind in ("datasources", "dashboards"):
        mounted = host_path(graf, f"/etc/grafana/provisioning/{kind}")
        assert mounted == (provisioning / kind).resolve(), f"grafana {kind} provisioning"
        assert list(mounted.glob("*.yml")), f"no provisioning file in {mounted}"
    [datasource] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    host, port, _ = port_of_url(datasource["url"])
    assert host in svcs and port in prom_ports | {9090}, datasource["url"]
    for provider in load_yaml(provisioning / "dashboards" / "duewatch.yml")["providers"]:
        directory = host_path(graf, provider["options"]["path"])
        assert directory == DASHBOARD.parent.resolve() and DASHBOARD.is_file()
    home = service_env(graf).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert host_path(graf, home).is_file(), home


def test_dockerfile() -> None:
    svc = next(iter(workers().values()))
    context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
    dockerfile = context / svc["build"]["dockerfile"]
    lines = re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines()
    instructions = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines
                    if ln.strip() and not ln.lstrip().startswith("#")]  # fmt: skip
    ignore = Path(f"{dockerfile}.dockerignore")
    allowed = {ln[1:].strip("/") for ln in ignore.read_text().splitlines() if ln.startswith("!")}
    for op, arg in instructions:
        if op == "COPY" and "--from" not in arg:
            *sources, _ = arg.split()
            for src in sources:
                assert (context / src).exists(), f"COPY {src}: not in the build context"
                assert src.strip("/") in allowed, f"COPY {src}: excluded by {ignore.name}"
    text = " ".join(f"{op} {arg}" for op, arg in instructions)
    assert re.search(r"pip install[^&]* (-e )?\.", text), "the image must pip install the project"
    env = dict(re.findall(r"(DUEWATCH_\w+)=(\S+)", text))
    assert from_env(env).web_port == WEB_PORT
    assert f"EXPOSE {WEB_PORT}" in text
    [volume] = re.findall(r"VOLUME \[\"([^\"]+)\"\]", text)
    assert is_under(from_env(env).state_dir, volume)
    assert 'CMD ["duewatch", "worker"]' in text
    assert "HEALTHCHECK" in text and "/health" in text


# =========================================================================== kubernetes


def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        for path in sorted(K8S_DIR.glob("*.yaml"))
    }


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [
        d
        for name, docs in k8s_docs().items()
        if name != "kustomization.yaml"
        for d in docs
        if d["kind"] == kind
    ]


def statefulset() -> dict[str, Any]:
    [sts] = k8s_objects("StatefulSet")
    return sts


def worker_container() -> dict[str, Any]:
    [container] = statefulset()["spec"]["template"]["spec"]["containers"]
    return container


def container_env() -> dict[str, str]:
    """The worker's environment: ConfigMaps of envFrom, then env (Secrets as placeholders)."""
    configmaps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in k8s_objects("ConfigMap")}
    env: dict[str, str] = {}
    for source in worker_container().get("envFrom") or []:
        ref = source.get("configMapRef")
        assert ref, f"unexpected envFrom {source}"
        assert ref["name"] in configmaps, f"envFrom: no ConfigMap {ref['name']}"
        env.update(configmaps[ref["name"]])
    for var in worker_container().get("env") or []:
        field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field in DOWNWARD:
            env[var["name"]] = DOWNWARD[field]
        elif "value" in var:
            # Kubernetes expands $(VAR) from the variables defined before it
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
        else:
            env[var["name"]] = "from-" + next(iter(var["valueFrom"]))
    return env


#: What the downward API gives the first pod, for the manifests' $(POD_NAME) and $(POD_NAMESPACE).
DOWNWARD = {"metadata.name": "duewatch-0", "metadata.namespace": "bank"}


def test_k8s_manifests_parse_and_are_namespace_agnostic() -> None:
    docs = k8s_docs()
    assert {"configmap.yaml", "statefulset.yaml", "service.yaml", "prometheus-scrape.yaml",
            "kustomization.yaml", "secret.example.yaml"} <= set(docs)  # fmt: skip
    for name, objects in docs.items():
        assert objects, f"{name} is empty"
        for obj in objects:
            if name == "kustomization.yaml":
                assert obj["kind"] == "Kustomization"
                continue
            assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], name
            assert "namespace" not in obj["metadata"], f"{name}: {obj['metadata']['name']} pins a namespace"


def test_kustomization_lists_the_manifests() -> None:
    [kustomization] = k8s_docs()["kustomization.yaml"]
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S_DIR / resource).is_file(), resource
    examples = {p.name for p in K8S_DIR.glob("*.example.yaml")}
    assert "secret.example.yaml" in examples
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"} - examples
    assert set(resources) == manifests
    assert not examples & set(resources), (
        "examples (placeholder secrets, a Kafka cluster) must never be applied"
    )
    image = worker_container()["image"].rsplit(":", 1)[0]
    assert image in {i["name"] for i in kustomization.get("images") or []}


def test_k8s_web_port_probes_and_annotations() -> None:
    container = worker_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get("web") == WEB_PORT, f"containerPort 'web' must be {WEB_PORT} (streams/settings.py)"
    assert from_env(container_env()).web_port == ports["web"], "DUEWATCH_WEB_PORT != containerPort"
    # set explicitly: the default listens on 127.0.0.1, which the kubelet and Prometheus cannot reach
    assert container_env().get("DUEWATCH_WEB_BIND") == "0.0.0.0"

    def probe_port(probe: Mapping[str, Any]) -> int:
        port = probe["httpGet"]["port"]
        assert port in ports or port in ports.values(), f"probe port {port} is not a container port"
        return ports.get(port, port)

    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert probe_port(container["livenessProbe"]) == probe_port(container["readinessProbe"]) == WEB_PORT
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
    annotations = statefulset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == WEB_PORT
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container["command"] == ["duewatch", "worker"]


def test_k8s_services_select_the_workers() -> None:
    sts = statefulset()
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for p in worker_container()["ports"]}
    svcs = {s["metadata"]["name"]: s for s in k8s_objects("Service")}
    governing = svcs[sts["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None", "the StatefulSet's service must be headless"
    assert any(s["spec"].get("type", "ClusterIP") == "ClusterIP" and s["spec"].get("clusterIP") != "None"
               for s in svcs.values()), "no ClusterIP service for the web port"  # fmt: skip
    for name, svc in svcs.items():
        assert svc["spec"]["selector"].items() <= pod_labels.items(), f"{name} selects no worker pod"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in port_names or target == WEB_PORT, f"{name}: targetPort {target}"
    # DUEWATCH_WEB_HOST (the canonical URL) is the pod's name under the governing service
    assert f".{governing['metadata']['name']}." in container_env()["DUEWATCH_WEB_HOST"]


def test_k8s_env_vars_are_known_and_parse() -> None:
    known = known_env_names()
    for cm in k8s_objects("ConfigMap"):
        if cm["metadata"]["name"] == "duewatch-config":
            unknown = sorted(set(cm["data"]) - known)
            assert not unknown, f"ConfigMap keys streams/settings.py does not read: {unknown}"
    env = container_env()
    unknown = sorted(set(env) - known - K8S_OTHER_ENV)
    assert not unknown, f"variables streams/settings.py does not read: {unknown}"
    from_env({k: v for k, v in env.items() if not v.startswith("from-")})
    secrets = {s["metadata"]["name"]: s for s in k8s_objects("Secret")}
    for var in worker_container().get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = secrets.get(ref["name"])
            assert secret, f"{var['name']}: no Secret {ref['name']} in secret.example.yaml"
            assert ref["key"] in (secret.get("stringData") or secret.get("data") or {}), var["name"]
            assert ref["key"] in known, ref["key"]


def test_k8s_failover_settings_and_a_static_member_id_per_pod() -> None:
    """Failover in seconds (docs/reliability.md): the session and heartbeat are set where an
    operator looks for them, within what brokers accept, and each pod's static member id is its
    stable StatefulSet name (never one id for all pods, which would fence them off each other)."""
    [configmap] = [cm for cm in k8s_objects("ConfigMap") if cm["metadata"]["name"] == "duewatch-config"]
    assert {"DUEWATCH_SESSION_TIMEOUT", "DUEWATCH_HEARTBEAT_INTERVAL"} <= set(configmap["data"])
    assert "DUEWATCH_INSTANCE_ID" not in configmap["data"], "one instance id for every pod"
    cfg = from_env({k: v for k, v in container_env().items() if not v.startswith("from-")})
    assert 6 <= cfg.session_timeout <= 15, "brokers' group.min.session.timeout.ms is 6 s; the target 15 s"
    assert cfg.heartbeat_interval <= cfg.session_timeout / 3
    assert cfg.group_instance_id == DOWNWARD["metadata.name"]
    [var] = [v for v in worker_container()["env"] if v["name"] == "DUEWATCH_INSTANCE_ID"]
    assert var["value"] == "$(POD_NAME)"


def test_k8s_state_dir_is_on_the_volume_claim() -> None:
    sts = statefulset()
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes") or []}
    mounts_ = worker_container()["volumeMounts"]
    for m in mounts_:
        assert m["name"] in claims | volumes, f"volumeMount {m['name']} has no volume"
    state_dir = from_env(container_env()).state_dir
    assert any(m["name"] in claims and is_under(state_dir, m["mountPath"]) for m in mounts_), (
        f"DUEWATCH_STATE_DIR {state_dir} is not on a volumeClaimTemplate mount"
    )
    security = sts["spec"]["template"]["spec"].get("securityContext") or {}
    assert security.get("fsGroup"), "without fsGroup the non-root worker cannot write its volume"


def test_k8s_kafka_client_uses_tls_scram_and_replication_3() -> None:
    """The workers reach Kafka over TLS (the CA from a mounted Secret) with SCRAM-SHA-512, create
    their topics with replication 3, and kafka.example.yaml is a cluster that serves exactly that."""
    env = container_env()
    cfg = from_env({k: v for k, v in env.items() if not v.startswith("from-")})
    assert (cfg.security_protocol, cfg.sasl_mechanism, cfg.replication) == ("SASL_SSL", "SCRAM-SHA-512", 3)
    assert env["KAFKA_SASL_PASSWORD"] == "from-secretKeyRef", "the password comes from a Secret"
    volumes = {v["name"]: v for v in statefulset()["spec"]["template"]["spec"]["volumes"]}
    [mount] = [m for m in worker_container()["volumeMounts"] if is_under(cfg.ssl_cafile, m["mountPath"])]
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    [tls_secret] = [s for s in k8s_objects("Secret") if s["metadata"]["name"] == secret_name]
    assert PurePosixPath(cfg.ssl_cafile).name in tls_secret["stringData"], (
        "the CA file is a key of the Secret"
    )

    cluster = [d for d in k8s_docs()["kafka.example.yaml"]]
    [kafka] = [d for d in cluster if d["kind"] == "Kafka"]
    [pool] = [d for d in cluster if d["kind"] == "KafkaNodePool"]
    [user] = [d for d in cluster if d["kind"] == "KafkaUser"]
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"broker", "controller"}
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == config["offsets.topic.replication.factor"] == 3
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == 2
    assert config["unclean.leader.election.enable"] is False
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert all(listener["tls"] for listener in listeners), "no plaintext listener"
    host, port = cfg.bootstrap_servers.split(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    [used] = [listener for listener in listeners if listener["port"] == int(port)]
    assert used["authentication"]["type"] == cfg.sasl_mechanism.lower()
    assert user["metadata"]["name"] == cfg.sasl_username
    assert user["spec"]["authentication"]["type"] == cfg.sasl_mechanism.lower()
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (keep, drop, replace) of one target; None when dropped."""
    labels = dict(labels)
    for rc in configs:
        action = rc.get("action", "replace")
        value = rc.get("separator", ";").join(labels.get(name, "") for name in rc.get("source_labels", []))
        m = re.fullmatch(rc.get("regex", "(.*)"), value)
        if action == "keep" and not m or action == "drop" and m:
            return None
        if action == "replace":
            if m:
                replacement = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", rc.get("replacement", "$1"))
                labels[rc["target_label"]] = m.expand(replacement)
        elif action not in ("keep", "drop"):
            raise AssertionError(f"relabel action {action} not simulated here")
    return labels


def test_k8s_scrape_config_finds_the_worker_pods() -> None:
    [scrape_cm] = [
        cm for cm in k8s_objects("ConfigMap") if cm["metadata"]["name"].endswith("prometheus-scrape")
    ]
    [job] = yaml.safe_load(next(iter(scrape_cm["data"].values())))
    assert job["job_name"] == "duewatch"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]

    def sanitize(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", name)

    pod_labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    meta = {f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in pod_labels.items()}
    meta |= {
        "__meta_kubernetes_namespace": "bank",
        "__meta_kubernetes_pod_name": "duewatch-1",
        "job": "duewatch",
    }
    # the pod's ports, and one more (a sidecar's, say) that must not be scraped
    for port in [*worker_container()["ports"], {"name": "sidecar", "containerPort": 9999}]:
        target = relabel(
            meta
            | {
                "__address__": f"10.0.0.7:{port['containerPort']}",
                "__meta_kubernetes_pod_container_port_name": port["name"],
                "instance": f"10.0.0.7:{port['containerPort']}",
            },  # fmt: skip
            job["relabel_configs"],
        )
        if port["name"] == "web":
            assert target is not None, "the web port of a worker pod is not scraped"
            assert target["__address__"].endswith(f":{WEB_PORT}")
            assert (target["namespace"], target["pod"], target["instance"]) == (
                "bank",
                "duewatch-1",
                "duewatch-1",
            )
        else:
            assert target is None, f"port {port['name']} would be scraped too"
    other = {k: v for k, v in meta.items() if "app_kubernetes_io_name" not in k}
    other |= {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "kafka",
              "__meta_kubernetes_pod_container_port_name": "web", "__address__": "10.0.0.8:6066"}  # fmt: skip
    assert relabel(other, job["relabel_configs"]) is None, "pods of other apps would be scraped"


# =========================================================================== docs


def test_deploy_readme_explains_each_directory() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for directory in sorted(p.name for p in DEPLOY.iterdir() if p.is_dir()):
        assert f"{directory}/" in readme, f"deploy/README.md does not mention {directory}/"
