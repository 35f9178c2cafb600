"""The Dockerfile, compose file, nginx config and Kubernetes manifests agree with the app.

No container engine runs here, so these tests read the files as the tools would and check what
the tools would not: ports, probe paths, referenced files and environment variable names are the
ones the application really has.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.app import create_app
from app.server import shutdown_budget
from app.settings import ConfigError, Settings, load_settings
from tests.deploy.files import (
    DEPLOY,
    K8S,
    ROOT,
    compose,
    dockerfile_stages,
    exec_form,
    healthcheck_command,
    load_yaml_documents,
    manifest,
    manifests,
)
from tests.support.servers import free_port, running_app

PORT = 8080
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
SETTINGS_FIELDS = set(Settings.model_fields)
SECRET_SETTINGS = {"SPATIALREAL_API_KEY", "AUTH_API_KEYS", "JWT_SECRET"}
# What an operator must decide for a production deployment: the ConfigMap has to show them.
IMPORTANT_CONFIG = {
    "APP_ENV",
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "PUBLIC_URL",
    "REDIS_URL",
    "SPATIALREAL_APP_ID",
    "SPATIALREAL_PROVIDER",
    "SPATIALREAL_REGION",
    "SPATIALREAL_FALLBACK_REGIONS",
    "DEFAULT_AVATAR_ID",
    "AUTH_MODE",
    "CORS_ORIGINS",
    "TRUSTED_PROXIES",
    "RATE_LIMIT_PRINCIPAL_PER_MINUTE",
    "RATE_LIMIT_IP_PER_MINUTE",
    "RESUME_WINDOW_SECONDS",
    "DRAIN_TIMEOUT_SECONDS",
}


def path_of_url(command: str) -> str:
    match = re.search(r"http://127\.0\.0\.1:[^/]+(/[a-z]+)", command)
    assert match is not None, command
    return match.group(1)


# --- Dockerfile ---


def test_dockerfile_builds_from_the_lock_on_slim_python_in_two_stages() -> None:
    text = (ROOT / "Dockerfile").read_text()
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert arg is not None
    assert arg.group(1) == "python:3.11-slim"
    stages = dockerfile_stages()
    python_stages = [s for s in stages if s.base == "${PYTHON_IMAGE}"]
    assert [s.name for s in python_stages] == ["builder", "runtime"]
    builder, runtime = python_stages
    syncs = [run for run in builder.all("RUN") if "uv sync" in run]
    assert syncs, "the builder installs with uv sync"
    for run in syncs:
        assert "--frozen" in run.split()
        assert "--no-dev" in run.split()
    assert builder.env()["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    # The runtime stage takes the venv and nothing else from the build.
    copies = runtime.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_runs_unprivileged_on_the_app_port_without_secrets() -> None:
    runtime = dockerfile_stages()[-1]
    (user,) = runtime.all("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert runtime.all("EXPOSE") == [str(PORT)]
    env = runtime.env()
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == str(PORT)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert exec_form(runtime.all("CMD")[0]) == ["avatar-relay", "serve"]
    health = healthcheck_command(runtime)
    assert health[0] == "python"
    assert path_of_url(health[-1]) == "/healthz"
    for stage in dockerfile_stages():
        for keyword in ("ENV", "ARG"):
            for args in stage.all(keyword):
                for item in shlex.split(args):
                    assert item.partition("=")[0].upper() not in SECRET_SETTINGS, item


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; parents count."""
    ignored = False
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(candidate, pattern[3:])
            ):
                ignored = not negate
                break
    return ignored


def test_build_context_has_what_the_dockerfile_copies_and_no_credentials() -> None:
    builder = next(s for s in dockerfile_stages() if s.name == "builder")
    sources = [
        source
        for copy in builder.all("COPY")
        if not copy.startswith("--from")
        for source in copy.split()[:-1]
    ]
    assert sources == [
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "clients/python/pyproject.toml",
        "clients/python/README.md",
        "app",
        "clients/python/avatar_relay_client",
    ]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), source
    assert not dockerignored("app/api/app.py")
    assert not dockerignored("clients/python/avatar_relay_client/browser_protocol.py")
    for private in (
        ".env",
        "app/.env",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "clients/python/.venv/bin/python",
    ):
        assert dockerignored(private), private
    assert dockerignored("app/__pycache__/x.pyc")


def probed_paths() -> set[str]:
    """Every path a health check, probe or scraper configured in these files will request."""
    c = container()
    annotations = deployment()["spec"]["template"]["metadata"]
    return {
        path_of_url(healthcheck_command(dockerfile_stages()[-1])[-1]),
        *(
            c[probe]["httpGet"]["path"]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe")
        ),
        annotations["annotations"]["prometheus.io/path"],
    }


async def test_every_probed_path_is_served_by_the_app() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        spatialreal_console_url=f"http://127.0.0.1:{free_port()}/v1/console",
        spatialreal_fallback_regions=[],
    )
    paths = probed_paths()
    assert paths == {"/healthz", "/readyz", "/metrics"}
    async with (
        running_app(create_app(settings)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        for path in sorted(paths):
            response = await client.get(path)
            # /readyz is 503 here (no upstream console): served, just not ready.
            assert response.status_code in (200, 503), (path, response.status_code)
            if path == "/readyz":
                assert response.json()["checks"]["upstream"]["ok"] is False


# --- docker compose ---


def test_compose_runs_the_app_with_a_healthy_redis_first() -> None:
    services = compose()["services"]
    assert set(services) == {"app", "redis"}
    app, redis = services["app"], services["redis"]
    assert app["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert (ROOT / ".env.example").is_file()
    assert app["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    env = app["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["HOST"] == "0.0.0.0"
    assert int(env["PORT"]) == PORT
    assert app["ports"] == [f"{PORT}:{PORT}"]
    # Longer than the server's own drain + handover + graceful shutdown (with the drain timeout
    # the compose file leaves at its default), so SIGKILL never cuts it short.
    assert "DRAIN_TIMEOUT_SECONDS" not in env
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert int(app["stop_grace_period"].removesuffix("s")) > shutdown_budget(default)


def test_compose_without_env_file_is_a_valid_emulator_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SETTINGS_FIELDS:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in compose()["services"]["app"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings(_env_file=None)
    assert settings.emulator_mode
    assert settings.port == PORT


# --- Kubernetes ---


def test_every_manifest_parses_and_kustomize_lists_existing_files() -> None:
    found = manifests()
    assert {p.name for p in found} >= {
        "kustomization.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "configmap.yaml",
        "secret.example.yaml",
    }
    for path, docs in found.items():
        for doc in docs:
            assert doc.get("apiVersion"), path
            assert doc.get("kind"), path
    kustomization = manifest("Kustomization")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    # The example Secret holds placeholders: it must never be applied by `kubectl apply -k`.
    assert "secret.example.yaml" not in kustomization["resources"]


def deployment() -> dict[str, Any]:
    return manifest("Deployment", "avatar-relay")


def configmap() -> dict[str, Any]:
    return manifest("ConfigMap", "avatar-relay-config")


def secret() -> dict[str, Any]:
    return manifest("Secret", "avatar-relay-secrets")


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_deployment_probes_use_the_app_port_and_health_routes() -> None:
    c = container()
    (port,) = c["ports"]
    assert port == {"name": "http", "containerPort": PORT, "protocol": "TCP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # The image's CMD starts the server: the manifest must not override it.
    assert "command" not in c
    assert "args" not in c
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_deployment_drains_sessions_before_it_is_killed() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert spec["terminationGracePeriodSeconds"] >= 60
    drain = float(configmap()["data"]["DRAIN_TIMEOUT_SECONDS"])
    settings = Settings(_env_file=None, drain_timeout_seconds=drain)  # type: ignore[call-arg]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + shutdown_budget(settings)
    assert deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_deployment_runs_as_the_images_non_root_user_with_resources() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (user,) = dockerfile_stages()[-1].all("USER")
    assert str(spec["securityContext"]["runAsUser"]) == user.split(":")[0]
    c = container()
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"]["cpu"]
    assert c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_service_pdb_and_ingress_select_the_deployments_pods() -> None:
    pods = deployment()
    labels = pods["spec"]["template"]["metadata"]["labels"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = manifest("Service", "avatar-relay")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container()["ports"][0]["name"]
    pdb = manifest("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ingresses = load_yaml_documents(K8S / "ingress.example.yaml")
    assert len(ingresses) == 2
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] == port["name"]
    sockets = next(i for i in ingresses if i["metadata"]["name"] == "avatar-relay-sockets")
    annotations = sockets["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$arg_session"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    next_upstream = annotations.get("nginx.ingress.kubernetes.io/proxy-next-upstream", "")
    assert "http_503" not in next_upstream


def env_names() -> dict[str, set[str]]:
    """Every environment variable named in compose and the manifests, by where it appears."""
    out: dict[str, set[str]] = {
        "docker-compose.yml": set(compose()["services"]["app"]["environment"]),
        "configmap": set(configmap()["data"]),
        "secret": set(secret()["stringData"]),
        "deployment": {e["name"] for e in container().get("env", [])},
    }
    return out


def test_every_environment_variable_named_is_a_real_setting() -> None:
    for where, names in env_names().items():
        for name in names:
            assert name == name.upper(), (where, name)
            assert name.lower() in SETTINGS_FIELDS, f"{where}: {name} is not a setting"


def test_configmap_and_secret_cover_what_an_operator_must_set() -> None:
    names = env_names()
    assert names["configmap"] >= IMPORTANT_CONFIG
    assert names["secret"] >= {"SPATIALREAL_API_KEY", "AUTH_API_KEYS"}
    # Secrets go in the Secret only.
    assert not names["configmap"] & SECRET_SETTINGS
    env_from = {
        next(iter(ref.values()))["name"] for ref in container()["envFrom"] if isinstance(ref, dict)
    }
    assert env_from == {"avatar-relay-config", "avatar-relay-secrets"}
    assert configmap()["data"]["PORT"] == str(PORT)


def test_configmap_with_the_example_secret_is_a_valid_production_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SETTINGS_FIELDS:
        monkeypatch.delenv(name.upper(), raising=False)
    env = {
        **configmap()["data"],
        **secret()["stringData"],
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    try:
        settings = load_settings(_env_file=None)
    except ConfigError as error:  # pragma: no cover - the message is the useful part
        pytest.fail("\n".join(error.problems))
    assert settings.app_env == "production"
    assert not settings.emulator_mode
    assert settings.redis_url


# --- nginx ---


def nginx_conf() -> str:
    # Comments dropped, so the checks below see directives only.
    lines = (DEPLOY / "nginx.conf").read_text().splitlines()
    return "\n".join(line.split("#", 1)[0] for line in lines)


def location(conf: str, selector: str) -> str:
    match = re.search(r"location\s+" + re.escape(selector) + r"\s*\{([^}]*)\}", conf)
    assert match is not None, selector
    return match.group(1)


def test_nginx_upgrades_relay_sockets_sticks_sessions_and_hides_metrics() -> None:
    conf = nginx_conf()
    servers = re.findall(r"^\s*server\s+([^\s;{]+)[^;{]*;", conf, re.MULTILINE)
    assert len(servers) == 2
    assert all(server.endswith(f":{PORT}") for server in servers)
    sessions = re.search(r"upstream avatar_relay_sessions\s*\{([^}]*)\}", conf)
    assert sessions is not None
    assert "hash $relay_session consistent;" in sessions.group(1)
    # Sessions move between instances: none may be shunned, no connection kept to a dead one.
    assert "max_fails=0" in sessions.group(1)
    assert "keepalive" not in sessions.group(1)
    # The session id comes from ?session= or the tickets path.
    assert re.search(r"map \$arg_session \$relay_session\s*\{", conf)
    assert "/v1/relay/sessions/(?<sid>[^/]+)/" in conf
    relay = location(conf, "= /v1/relay")
    assert "proxy_pass http://avatar_relay_sessions;" in relay
    assert "proxy_set_header Upgrade $http_upgrade;" in relay
    assert "proxy_set_header Connection $connection_upgrade;" in relay
    timeout = re.search(r"proxy_read_timeout (\d+)s;", relay)
    assert timeout is not None
    assert int(timeout.group(1)) >= 600
    assert "proxy_buffering off;" in relay
    # A 503 (draining, or the session runs elsewhere) goes back to the client, which retries;
    # retried by nginx it would count as a failure and mark a healthy instance down.
    assert "http_503" not in conf
    # A producer's socket belongs to the same session: same instance, same socket settings.
    assert location(conf, "= /v1/relay/producer") == relay
    # An RTC producer's socket upgrades with the same settings (its sessions are per instance).
    rtc = location(conf, "= /v1/rtc/producer")
    assert rtc == relay.replace("avatar_relay_sessions", "avatar_relay")
    assert "deny all;" in location(conf, "= /metrics")
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID", "Host"):
        assert f"proxy_set_header {header} " in conf
