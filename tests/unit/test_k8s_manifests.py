"""deploy/k8s rendered without a cluster: Kubernetes schemas, then the wiring a cluster would only show at run time."""

from __future__ import annotations

import json
import pathlib
import shlex

import jsonschema
import pytest
import yaml

from routemesh.certs import IDENTITIES
from routemesh.cli import SERVICES as SERVE_COMMANDS
from routemesh.cli import build_parser
from routemesh.common.interceptors import CALLERS
from routemesh.common.policy import parse_policy
from routemesh.common.tls import ENV_CA, ENV_CERT, ENV_KEY

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
GRPC_SERVICES = {"router": 50051, "classifier": 50052, "telemetry": 50053, "executor": 50054, "control": 50055}
HTTP_SERVICES = {"sim": 50056, "gateway": 50057}
HEADLESS = {"classifier", "executor", "telemetry"}
# Each routemesh service's Prometheus metrics port (docs/metrics.md).
METRICS_PORTS = {"router": 50061, "classifier": 50062, "telemetry": 50063, "executor": 50064, "control": 50065,
                 "gateway": 50067}
# Deployments that run with a mesh certificate: every `routemesh serve` service (sim is a plain HTTP provider).
TLS_SERVICES = set(SERVE_COMMANDS)
TLS_MOUNT = "/certs"
# NetworkPolicy (networking.k8s.io/v1) and the definitions it adds to tests/data/k8s-schema-v1.34.json, from
# the same source and in the same shape (kubernetes-validate 1.37.0, v1.34.0-local-strict, Apache-2.0;
# descriptions dropped). They belong in that bundle; they sit here until it is regenerated with them.
NETWORKING_V1_KINDS = {"networking.k8s.io/v1/NetworkPolicy": "io.k8s.api.networking.v1.NetworkPolicy"}
NETWORKING_V1_SCHEMAS = json.loads("""{
 "io.k8s.api.networking.v1.IPBlock": {"properties":{"cidr":{"type":"string"},"except":{"items":{"type":["string","null"]},"type":["array","null"],"x-kubernetes-list-type":"atomic"}},"required":["cidr"],"type":["object","null"],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicy": {"properties":{"apiVersion":{"type":["string","null"],"enum":["networking.k8s.io/v1"]},"kind":{"type":["string","null"],"enum":["NetworkPolicy"]},"metadata":{"$ref":"#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},"spec":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicySpec"}},"type":["object","null"],"x-kubernetes-group-version-kind":[{"group":"networking.k8s.io","kind":"NetworkPolicy","version":"v1"}],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicyEgressRule": {"properties":{"ports":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyPort"},"type":["array","null"],"x-kubernetes-list-type":"atomic"},"to":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyPeer"},"type":["array","null"],"x-kubernetes-list-type":"atomic"}},"type":["object","null"],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicyIngressRule": {"properties":{"from":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyPeer"},"type":["array","null"],"x-kubernetes-list-type":"atomic"},"ports":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyPort"},"type":["array","null"],"x-kubernetes-list-type":"atomic"}},"type":["object","null"],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicyPeer": {"properties":{"ipBlock":{"$ref":"#/$defs/io.k8s.api.networking.v1.IPBlock"},"namespaceSelector":{"$ref":"#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},"podSelector":{"$ref":"#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"}},"type":["object","null"],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicyPort": {"properties":{"endPort":{"format":"int32","type":["integer","null"]},"port":{"$ref":"#/$defs/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},"protocol":{"type":["string","null"]}},"type":["object","null"],"additionalProperties":false},
 "io.k8s.api.networking.v1.NetworkPolicySpec": {"properties":{"egress":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyEgressRule"},"type":["array","null"],"x-kubernetes-list-type":"atomic"},"ingress":{"items":{"$ref":"#/$defs/io.k8s.api.networking.v1.NetworkPolicyIngressRule"},"type":["array","null"],"x-kubernetes-list-type":"atomic"},"podSelector":{"$ref":"#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},"policyTypes":{"items":{"type":["string","null"]},"type":["array","null"],"x-kubernetes-list-type":"atomic"}},"type":["object","null"],"additionalProperties":false}
}""")


def render(directory: pathlib.Path) -> list[dict]:
    """What `kustomize build` prints, for the kustomization fields this repository uses (others fail loudly)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    supported = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions"}
    assert set(kustomization) <= supported, f"teach render() {sorted(set(kustomization) - supported)}"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    generators = kustomization.get("configMapGenerator", [])
    if generators:
        # With a hash suffix every reference would need rewriting; the base pins names instead.
        assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash") is True
    for gen in generators:
        data = {pathlib.Path(f).name: (directory / f).read_text() for f in gen.get("files", [])}
        data.update(literal.split("=", 1) for literal in gen.get("literals", []))
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


OBJECTS = render(BASE)


def objects(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def ports_of(deployment: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def env_of(deployment: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects("ConfigMap")[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e})
    return env


def test_every_object_matches_the_kubernetes_schema():
    schema = json.loads((ROOT / "tests/data/k8s-schema-v1.34.json").read_text())
    schema["kinds"] = {**NETWORKING_V1_KINDS, **schema["kinds"]}
    schema["$defs"] = {**NETWORKING_V1_SCHEMAS, **schema["$defs"]}
    names = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names)), "duplicate objects"
    for obj in OBJECTS:
        kind = f"{obj['apiVersion']}/{obj['kind']}"
        assert kind in schema["kinds"], f"{kind}: add its schema to tests/data/k8s-schema-v1.34.json"
        validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/" + schema["kinds"][kind], "$defs": schema["$defs"]})
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{kind} {obj['metadata']['name']}: {errors}"


def test_every_service_has_a_deployment_and_a_service_selecting_its_pods():
    deployments, services = objects("Deployment"), objects("Service")
    assert set(deployments) == {*GRPC_SERVICES, *HTTP_SERVICES, "redis", "jaeger"}
    for name, deployment in deployments.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name
        assert any(s["spec"]["selector"].items() <= pod_labels.items() for s in services.values()), name
    for name, service in services.items():
        (target,) = [d for d in deployments.values()
                     if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        for port in service["spec"]["ports"]:
            assert ports_of(target).get(port["targetPort"]) == port["port"], f"service {name} port {port['name']}"


def test_grpc_services_are_probed_with_routemesh_health_on_their_port():
    # kubelet's native gRPC probe cannot present a client certificate, and the internal services require one:
    # `routemesh health` runs in the container, with its TLS environment, against the loopback address that
    # every mesh certificate names.
    for name, port in GRPC_SERVICES.items():
        spec = container(objects("Deployment")[name])
        assert ports_of(objects("Deployment")[name]) == {"grpc": port, "metrics": METRICS_PORTS[name]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = spec[probe]["exec"]["command"]
            assert command == ["routemesh", "health", f"127.0.0.1:{port}"], f"{name} {probe}"
            args = build_parser().parse_args(command[1:])
            assert spec[probe].get("timeoutSeconds", 1) > args.timeout, f"{name} {probe}: kubelet gives up first"


def test_no_tls_service_uses_a_native_grpc_probe_or_claims_cleartext():
    for name in TLS_SERVICES:
        spec = container(objects("Deployment")[name])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in spec.get(probe, {}), f"{name} {probe}: a native gRPC probe cannot pass mutual TLS"
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in objects("Deployment").items()}
    for service in objects("Service").values():
        (target,) = [n for n, labels in pods.items() if service["spec"]["selector"].items() <= labels.items()]
        if target in TLS_SERVICES:
            for port in service["spec"]["ports"]:
                assert port.get("appProtocol") != "kubernetes.io/h2c", f"{service['metadata']['name']} is TLS"


def test_every_routemesh_service_runs_with_its_own_certificate_from_a_required_secret():
    assert TLS_SERVICES <= set(IDENTITIES), "each service needs an identity `routemesh certs` issues"
    for name, deployment in objects("Deployment").items():
        env = env_of(deployment)
        if name not in TLS_SERVICES:
            assert not {ENV_CERT, ENV_KEY, ENV_CA} & env.keys(), f"{name} has no certificate"
            continue
        mount = pathlib.PurePosixPath(TLS_MOUNT)
        assert env[ENV_CERT] == str(mount / f"{name}.pem"), name
        assert env[ENV_KEY] == str(mount / f"{name}-key.pem"), name
        assert env[ENV_CA] == str(mount / "ca.pem"), name
        (volume_mount,) = [m for m in container(deployment).get("volumeMounts", []) if m["mountPath"] == TLS_MOUNT]
        assert volume_mount.get("readOnly") is True and "subPath" not in volume_mount, \
            f"{name}: read-only, and no subPath, so a rotated Secret reaches the files"
        (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == volume_mount["name"]]
        secret = volume["secret"]
        assert secret["secretName"] == f"routemesh-tls-{name}", name
        assert not secret.get("optional"), f"{name}: TLS is on wherever the manifests run, so the Secret is required"
        assert "items" not in secret, f"{name}: the Secret's keys are the file names `routemesh certs` writes"


def test_other_probes_use_declared_ports():
    for name, deployment in objects("Deployment").items():
        spec = container(deployment)
        assert "readinessProbe" in spec and "livenessProbe" in spec, name
        for probe in (spec[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in spec):
            action = probe.get("httpGet") or probe.get("tcpSocket")
            if action:
                assert action["port"] in ports_of(deployment), f"{name}: probe port {action['port']}"


def test_every_container_has_resource_requests_and_limits():
    for name, deployment in objects("Deployment").items():
        resources = container(deployment)["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name


def test_callers_balance_over_headless_services():
    services = objects("Service")
    for name in HEADLESS:
        assert services[name]["spec"].get("clusterIP") == "None", f"{name} must be headless for round_robin"
    assert services["router-pods"]["spec"]["clusterIP"] == "None"


def test_hpas_scale_existing_deployments_that_leave_replicas_to_them():
    hpas = objects("HorizontalPodAutoscaler")
    assert set(hpas) == {"router", "executor"}
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        deployment = objects("Deployment")[target["name"]]
        assert "replicas" not in deployment["spec"], f"{name}: a fixed replicas fights the autoscaler"
        assert "cpu" in container(deployment)["resources"]["requests"], "CPU utilization needs a CPU request"
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


# Secrets the operator must create before the first apply (the README's Deployment section says how).
REQUIRED_SECRETS = {"routemesh-key-pepper"}


def test_referenced_configmaps_exist_and_only_tls_and_key_secrets_are_required():
    configmaps = objects("ConfigMap")
    for name, deployment in objects("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for source in container(deployment).get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, name
            if "secretRef" in source:
                assert source["secretRef"].get("optional") is True, f"{name}: the base ships no Secret"
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, name
            if "secret" in volume and volume["secret"]["secretName"] not in {f"routemesh-tls-{name}", *REQUIRED_SECRETS}:
                assert volume["secret"].get("optional") is True, f"{name}: the base ships no Secret"


def test_control_reads_the_mounted_policy_file():
    control = objects("Deployment")["control"]
    policy_path = pathlib.PurePosixPath(env_of(control)["ROUTEMESH_POLICY"])
    (mount,) = [m for m in container(control)["volumeMounts"] if m["mountPath"] not in (TLS_MOUNT, "/key-pepper")]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates, so control could not hot-reload"
    assert policy_path.parent == pathlib.PurePosixPath(mount["mountPath"])
    (volume,) = [v for v in control["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert policy_path.name in objects("ConfigMap")[volume["configMap"]["name"]]["data"]


def test_policy_is_the_default_one_with_the_sim_service_as_provider():
    text = objects("ConfigMap")["routemesh-policy"]["data"]["policy.yaml"]
    default = (ROOT / "services/routemesh/policies/default.yaml").read_text()
    assert text == default.replace("${ROUTEMESH_SIM_URL:-http://127.0.0.1:50056/v1}",
                                   "${ROUTEMESH_SIM_URL:-http://sim:50056/v1}"), "keep policy.yaml in step with default.yaml"
    assert parse_policy(text, environ={}).providers["sim"].base_url == "http://sim:50056/v1"


@pytest.mark.parametrize("name", sorted({*GRPC_SERVICES, *HTTP_SERVICES}))
def test_containers_run_routemesh_commands_that_parse(name):
    deployment = objects("Deployment")[name]
    spec = container(deployment)
    assert spec["image"] == "routemesh:dev" and spec["command"] == ["routemesh"]
    expected = ["sim"] if name == "sim" else ["serve", name]
    assert spec["args"][: len(expected)] == expected
    try:
        args = build_parser().parse_args(spec["args"])
    except SystemExit:
        pytest.fail(f"`routemesh {shlex.join(spec['args'])}` does not parse")
    host, _, port = args.listen.rpartition(":")
    assert host == "0.0.0.0" and int(port) == next(iter(ports_of(deployment).values()))


def test_addresses_in_the_environment_name_services_and_their_ports():
    services = objects("Service")
    env = objects("ConfigMap")["routemesh-env"]["data"]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    router_env = env_of(objects("Deployment")["router"])
    assert compose["services"]["router"]["environment"].keys() <= router_env.keys(), "keep env.yaml in step with compose"
    for key, value in env.items():
        if not (key.endswith("_ADDR") or key.endswith("_URL") or key.endswith("_ENDPOINT")):
            continue
        host, _, port = value.split("://")[-1].split("/")[0].partition(":")
        assert host in services, f"{key}: no Service {host}"
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, f"{key}: {host} has no port {port}"


# --- NetworkPolicies: evaluated here as a cluster's network plugin would, for the peers this base uses ---

ANYONE = "*"  # a rule without `from`, or a peer by namespace or IP block: not only this namespace's pods
# The gRPC service each RPC package serves, by the Deployment that runs it.
SERVER_OF = {"routemesh.v1.RouterService": "router", "routemesh.v1.ClassifierService": "classifier",
             "routemesh.v1.ExecutorService": "executor", "routemesh.v1.TelemetryService": "telemetry",
             "routemesh.v1.ControlPlaneService": "control"}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {"In": present and value in expr.get("values", []), "NotIn": value not in expr.get("values", []),
              "Exists": present, "DoesNotExist": not present}[expr["operator"]]
        if not ok:
            return False
    return True


def pod_labels() -> dict[str, dict[str, str]]:
    return {name: d["spec"]["template"]["metadata"]["labels"] for name, d in objects("Deployment").items()}


def allowed_connections() -> set[tuple[str, str, int]]:
    """(source Deployment or ANYONE, target Deployment, port) for every connection the policies admit."""
    pods = pod_labels()
    allowed = set()
    for policy in objects("NetworkPolicy").values():
        spec = policy["spec"]
        assert spec.get("policyTypes") == ["Ingress"], f"{policy['metadata']['name']}: ingress-only policies"
        for target in (n for n, labels in pods.items() if selects(spec["podSelector"], labels)):
            for rule in spec.get("ingress", []):
                sources: set[str] = set()
                for peer in rule.get("from", [{"namespaceSelector": {}}]):
                    if "namespaceSelector" in peer or "ipBlock" in peer:
                        sources.add(ANYONE)
                    else:
                        sources |= {n for n, labels in pods.items() if selects(peer["podSelector"], labels)}
                declared = ports_of(objects("Deployment")[target])
                ports = {declared[p["port"]] if isinstance(p["port"], str) else p["port"]
                         for p in rule.get("ports", [])} or set(declared.values())
                allowed |= {(source, target, port) for source in sources for port in ports}
    return allowed


def needed_connections() -> set[tuple[str, str, int]]:
    """What the mesh dials, from the code: CALLERS, each service's address options, Redis, traces, providers."""
    deployments = objects("Deployment")
    needed = {(ANYONE, "router", GRPC_SERVICES["router"]), (ANYONE, "gateway", HTTP_SERVICES["gateway"]),
              (ANYONE, "jaeger", ports_of(deployments["jaeger"])["ui"])}
    for method, callers in CALLERS.items():
        server = SERVER_OF[method.split("/")[1]]
        # "admin" is the operator's CLI: it comes in through `kubectl port-forward`, which policies do not see.
        needed |= {(caller, server, GRPC_SERVICES[server]) for caller in callers - {"admin"}}
    otlp_port = int(objects("ConfigMap")["routemesh-env"]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"].rpartition(":")[2])
    for name in SERVE_COMMANDS:
        args = vars(build_parser().parse_args(container(deployments[name])["args"]))
        needed |= {(name, peer, GRPC_SERVICES[peer]) for peer in GRPC_SERVICES if args.get(peer) and peer != name}
        if "redis_url" in args:
            needed.add((name, "redis", ports_of(deployments["redis"])["redis"]))
        needed.add((name, "jaeger", otlp_port))
    # Providers (the sim among them) are called by the executor alone.
    needed.add(("executor", "sim", HTTP_SERVICES["sim"]))
    # Prometheus, from whichever namespace it runs in, scrapes every routemesh service.
    needed |= {(ANYONE, name, port) for name, port in METRICS_PORTS.items()}
    # A port open to anyone needs no rule for each caller (the gateway dials the router).
    return {(s, t, p) for s, t, p in needed if s == ANYONE or (ANYONE, t, p) not in needed}


def test_ingress_is_denied_by_default():
    deny = [p for p in objects("NetworkPolicy").values()
            if p["spec"]["podSelector"] == {} and p["spec"].get("policyTypes") == ["Ingress"]
            and not p["spec"].get("ingress")]
    assert deny, "a default-deny ingress policy selects every pod in the namespace"
    for name, labels in pod_labels().items():
        assert any(selects(p["spec"]["podSelector"], labels) and p["spec"].get("ingress")
                   for p in objects("NetworkPolicy").values()), f"{name}: default-deny with no policy opening it"


def test_network_policies_admit_exactly_the_connections_the_mesh_makes():
    allowed, needed = allowed_connections(), needed_connections()
    assert not needed - allowed, f"add to deploy/k8s/base/network-policies.yaml: {sorted(needed - allowed)}"
    assert not allowed - needed, f"open beyond what the mesh needs: {sorted(allowed - needed)}"


def test_the_connection_table_is_the_documented_one():
    # The table in network-policies.yaml, so a change to CALLERS that moves it shows up here as well.
    by_target: dict[str, set[str]] = {}
    for source, target, _ in needed_connections():
        by_target.setdefault(target, set()).add(source)
    assert by_target == {  # ANYONE everywhere in the mesh: Prometheus, on the metrics port only
        "router": {ANYONE}, "gateway": {ANYONE},
        "classifier": {"router", ANYONE}, "executor": {"router", ANYONE},
        "telemetry": {"router", "executor", "gateway", ANYONE},
        "control": {"router", "classifier", "executor", "telemetry", "gateway", ANYONE},
        "redis": {"router", "telemetry", "control"}, "sim": {"executor"},
        "jaeger": {ANYONE, *SERVE_COMMANDS},
    }


def test_the_router_requires_api_keys_and_shares_the_pepper_with_control():
    deployments = objects("Deployment")
    assert env_of(deployments["router"])["ROUTEMESH_REQUIRE_KEYS"] == "true"
    for name in ("router", "control"):
        assert env_of(deployments[name])["ROUTEMESH_KEY_PEPPER_FILE"] == "/key-pepper/pepper"
        (volume,) = [v for v in deployments[name]["spec"]["template"]["spec"]["volumes"] if v["name"] == "key-pepper"]
        assert volume["secret"]["secretName"] == "routemesh-key-pepper" and not volume["secret"].get("optional")
        assert any(m["name"] == "key-pepper" and m["mountPath"] == "/key-pepper"
                   for m in container(deployments[name])["volumeMounts"])
    assert "routemesh-key-pepper" in (ROOT / "README.md").read_text()


def test_every_routemesh_service_serves_metrics_where_its_annotations_say():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, port in METRICS_PORTS.items():
        deployment = objects("Deployment")[name]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                               "prometheus.io/path": "/metrics"}, name
        assert ports_of(deployment)["metrics"] == port
        variable = f"ROUTEMESH_{name.upper()}_METRICS_LISTEN"
        assert env_of(deployment)[variable] == f"0.0.0.0:{port}", name
        assert compose[name]["environment"][variable] == f"0.0.0.0:{port}", name
