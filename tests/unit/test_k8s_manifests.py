"""deploy/k8s rendered without a cluster: Kubernetes schemas, then the wiring a cluster would only show at run time."""

from __future__ import annotations

import json
import pathlib
import shlex

import jsonschema
import pytest
import yaml

from routemesh.cli import build_parser
from routemesh.common.policy import parse_policy

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
GRPC_SERVICES = {"router": 50051, "classifier": 50052, "telemetry": 50053, "executor": 50054, "control": 50055}
HTTP_SERVICES = {"sim": 50056, "gateway": 50057}
HEADLESS = {"classifier", "executor", "telemetry"}


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


def test_grpc_services_are_probed_with_grpc_health_on_their_port():
    for name, port in GRPC_SERVICES.items():
        spec = container(objects("Deployment")[name])
        assert ports_of(objects("Deployment")[name]) == {"grpc": port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert spec[probe]["grpc"] == {"port": port}, f"{name} {probe}"


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


def test_referenced_configmaps_exist_and_secrets_are_optional():
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


def test_control_reads_the_mounted_policy_file():
    control = objects("Deployment")["control"]
    policy_path = pathlib.PurePosixPath(env_of(control)["ROUTEMESH_POLICY"])
    (mount,) = container(control)["volumeMounts"]
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
    assert compose["services"]["router"]["environment"].keys() <= env.keys(), "keep env.yaml in step with compose"
    for key, value in env.items():
        if not (key.endswith("_ADDR") or key.endswith("_URL") or key.endswith("_ENDPOINT")):
            continue
        host, _, port = value.split("://")[-1].split("/")[0].partition(":")
        assert host in services, f"{key}: no Service {host}"
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, f"{key}: {host} has no port {port}"
