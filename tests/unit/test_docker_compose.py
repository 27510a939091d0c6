"""docker-compose.yml and docker/flink/Dockerfile agree with the rest of the repo: host ports
with settings/defaults.yaml, image versions with flink-conf/pom.xml and pyproject.toml, mounts
with real files, container settings with settings.load(). Needs no Docker engine; the one
check that needs a compose client is skipped when there is none."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

import settings
from settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "docker" / "flink"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = DOCKER_DIR / "Dockerfile.dockerignore"
FLINK_CONF = ROOT / "flink-conf" / "config.yaml"
POM = ROOT / "flink-conf" / "pom.xml"
FLINK_SERVICES = ("jobmanager", "taskmanager")
PROJECT_DIRS = ("jobs", "udfs", "settings", "stack", "avro", "sql", "flink-conf")


# ---- readers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def defaults() -> dict:
    return settings.load(environ={})


def pom_properties() -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(POM).getroot().find("m:properties", ns)
    return {el.tag.split("}")[1]: (el.text or "").strip() for el in props}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    for dep in pyproject()["project"]["dependencies"]:
        name, _, version = dep.partition("==")
        if name.strip() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned with == in pyproject.toml")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each short-syntax port entry."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"port {entry!r}: give host ip, host port and container port"
        out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return out


def mounts(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def flink_properties(service: dict) -> dict[str, str]:
    props = {}
    for line in environment(service).get("FLINK_PROPERTIES", "").splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            props[key.strip()] = value.strip()
    return props


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, args = current.strip().partition(" ")
            out.append((word.upper(), args.strip()))
            current = ""
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def from_images() -> list[str]:
    return [args.split()[0] for word, args in dockerfile_instructions() if word == "FROM"]


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from a stage)."""
    out = []
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


def load_render_config():
    spec = importlib.util.spec_from_file_location("render_config", DOCKER_DIR / "render_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- services and ports -------------------------------------------------------------------

def test_services(services):
    assert set(services) == {"kafka", "topics", "postgres", *FLINK_SERVICES}


def test_kafka_is_published_on_settings_bootstrap_servers(services, defaults):
    host, port = defaults["kafka"]["bootstrap_servers"].split(",")[0].rsplit(":", 1)
    kafka = services["kafka"]
    [(host_ip, host_port, container_port)] = published(kafka)
    assert (host_ip, host_port) == (host, int(port))
    env = environment(kafka)
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    # the host listener advertises the published address, and listens on the mapped port
    host_listener = next(a.split("://")[0] for a in advertised if a.endswith(f"//{host}:{port}"))
    assert f"{host_listener}://0.0.0.0:{container_port}" in env["KAFKA_LISTENERS"].split(",")


def test_postgres_is_published_on_settings_embedded_port(services, defaults):
    [(host_ip, host_port, container_port)] = published(services["postgres"])
    embedded = urlsplit(settings.postgres_url(defaults))
    assert (host_ip, host_port) == (embedded.hostname, defaults["postgres"]["embedded_port"])
    assert container_port == 5432  # the postgres image's port


def test_flink_rest_is_published_on_settings_rest_url(services, defaults):
    rest = urlsplit(defaults["flink"]["rest_url"])
    jobmanager = services["jobmanager"]
    [(host_ip, host_port, container_port)] = published(jobmanager)
    assert (host_ip, host_port) == (rest.hostname, rest.port)
    assert container_port == int(flink_properties(jobmanager)["rest.port"])
    assert not published(services["taskmanager"])


def test_postgres_database_user_password_are_the_settings(services, defaults):
    env = environment(services["postgres"])
    pg = defaults["postgres"]
    assert (env["POSTGRES_DB"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (
        pg["database"], pg["user"], pg["password"])


# ---- versions -----------------------------------------------------------------------------

def test_kafka_image_is_the_pom_kafka_version(services):
    image, _, tag = services["kafka"]["image"].partition(":")
    assert image == "apache/kafka"
    major_minor = pom_properties()["kafka.version"].split(".")[:2]
    assert tag.split(".")[:2] == major_minor
    assert int(major_minor[0]) >= 4  # KRaft-only Kafka, as DESIGN.md fixes


def test_flink_base_image_is_the_pinned_flink_version():
    [flink] = [i for i in from_images() if i.startswith("flink:")]
    match = re.fullmatch(r"flink:(\d+\.\d+\.\d+)-scala_2\.12-java(\d+)", flink)
    assert match, f"pin the Flink image to an exact version and Java: {flink}"
    assert match.group(1) == pinned("apache-flink") == pom_properties()["flink.version"]
    assert match.group(2) == "17"


def test_python_in_the_image_is_the_project_python():
    lower = re.search(r">=\s*(\d+\.\d+)", pyproject()["project"]["requires-python"]).group(1)
    [python] = [i for i in from_images() if i.startswith("python:")]
    assert python.removeprefix("python:").split("-")[0] == lower


def test_postgres_image_is_pinned_to_a_major(services):
    image, _, tag = services["postgres"]["image"].partition(":")
    assert image == "postgres" and tag.isdigit()


# ---- mounts and volumes -------------------------------------------------------------------

def test_every_bind_mount_exists_in_the_repo(services):
    binds = [(name, m) for name, svc in services.items() for m in mounts(svc) if is_bind(m[0])]
    assert binds
    for name, (source, _target, _mode) in binds:
        assert (ROOT / source).exists(), f"{name}: bind mount {source} is not in the repo"


def test_repo_files_are_mounted_read_only(services):
    assert ("./sql/postgres", "/docker-entrypoint-initdb.d", "ro") in mounts(services["postgres"])
    assert list((ROOT / "sql" / "postgres").glob("*.sql"))
    conf_in_image = dockerfile_env()["EMAIL_STREAMING_FLINK_CONF"]
    for name in FLINK_SERVICES:
        assert ("./flink-conf/config.yaml", conf_in_image, "ro") in mounts(services[name])


def test_named_volumes_are_declared(compose, services):
    named = {m[0] for svc in services.values() for m in mounts(svc) if not is_bind(m[0])}
    assert named and named <= set(compose.get("volumes") or {})


def test_checkpoints_are_on_one_volume_shared_by_jobmanager_and_taskmanager(services):
    volumes = []
    for name in FLINK_SERVICES:
        props = flink_properties(services[name])
        for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
            path = urlsplit(props[key]).path
            [volume] = [s for s, t, _ in mounts(services[name])
                        if not is_bind(s) and path.startswith(t.rstrip("/") + "/")]
            volumes.append(volume)
    assert len(set(volumes)) == 1


# ---- Flink configuration ------------------------------------------------------------------

def test_thread_mode_comes_from_the_mounted_repo_file(services, tmp_path):
    repo_conf = yaml.safe_load(FLINK_CONF.read_text())
    assert repo_conf["python.execution-mode"] == "thread"
    for name in FLINK_SERVICES:
        props = flink_properties(services[name])
        assert not set(props) & set(repo_conf), f"{name}: FLINK_PROPERTIES overrides the repo file"
    # the entrypoint's rendering keeps every repo key and adds only the Java options
    render_config = load_render_config()
    nested = tmp_path / "nested.yaml"  # Flink 2.x default config.yaml style
    nested.write_text("env:\n  java:\n    opts:\n      all: --add-opens=java.base/x=ALL-UNNAMED\n"
                      "python:\n  execution-mode: process\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("env.java.opts.all: --add-opens=x\n")
    for image_defaults in (nested, flat):
        rendered = render_config.render(FLINK_CONF, image_defaults)
        assert rendered.pop(render_config.JAVA_OPTS).startswith("--add-opens")
        assert rendered == render_config.flatten(repo_conf)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    with pytest.raises(SystemExit, match=re.escape(render_config.JAVA_OPTS)):
        render_config.render(FLINK_CONF, empty)


def test_flink_containers_find_the_jobmanager_and_the_venv(services):
    image_env = dockerfile_env()
    venv_python = image_env["VIRTUAL_ENV"] + "/bin/python"
    assert image_env["PATH"].startswith(image_env["VIRTUAL_ENV"] + "/bin:")
    for name in FLINK_SERVICES:
        props = flink_properties(services[name])
        assert props["jobmanager.rpc.address"] == "jobmanager"
        assert props["python.executable"] == props["python.client.executable"] == venv_python
        assert " " not in "".join(props.values())  # the image's entrypoint strips whitespace


# ---- the image ------------------------------------------------------------------------------

def test_flink_services_use_the_image_built_from_the_dockerfile(services):
    images = set()
    for name in ("topics", *FLINK_SERVICES):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(services[name]["image"])
    assert len(images) == 1


def test_dockerfile_copies_the_connector_jars_and_puts_flink_python_in_lib():
    assert any("jars/flink" in " ".join(sources) for sources, _ in copies())
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    assert re.search(r"\bcp\s+\S*opt/flink-python-\*\.jar\S*\s+\S*/lib/?\"?", runs)
    assert 'cp "/tmp/jars/$jar" "$FLINK_HOME/lib/"' in runs


def test_dockerfile_copies_the_project():
    copied = {dest.rstrip("/"): sources for sources, dest in copies()}
    for name in PROJECT_DIRS:
        assert copied.get(f"/opt/email-streaming/{name}") == [name]
    # every COPY source exists (jars/ only after `make jars`) and passes the dockerignore
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")]
    for sources, _ in copies():
        for source in sources:
            assert any(source.rstrip("/") == a or a.startswith(source.rstrip("/") + "/")
                       for a in allowed), f"{source} is excluded by {DOCKERIGNORE.name}"
            if not source.startswith("jars/"):
                assert (ROOT / source).exists(), source


# ---- settings inside the containers --------------------------------------------------------

def test_container_settings_are_valid_settings_paths(services):
    used = set()
    for name, service in services.items():
        env = {k: v for k, v in environment(service).items() if k.startswith(settings.ENV_PREFIX)}
        used |= set(env)
        settings.load(environ=env)  # raises ConfigError for a key defaults.yaml lacks
        if name in ("topics", *FLINK_SERVICES):
            assert env, f"{name} has no EMAIL_STREAMING__* settings"
    assert used
    with pytest.raises(ConfigError, match="unknown setting"):  # the check above can fail
        settings.load(environ={f"{settings.ENV_PREFIX}FLINK__REST_URI": "x"})


def test_container_settings_point_at_the_compose_services(services):
    env = {k: v for k, v in environment(services["jobmanager"]).items()
           if k.startswith(settings.ENV_PREFIX)}
    config = settings.load(environ=env)
    kafka_env = environment(services["kafka"])
    assert f"INTERNAL://{config['kafka']['bootstrap_servers']}" in (
        kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    rest = urlsplit(config["flink"]["rest_url"])
    assert (rest.hostname, rest.port) == (
        "jobmanager", int(flink_properties(services["jobmanager"])["rest.port"]))
    assert config["flink"]["add_jars"] is False
    pg = urlsplit(settings.postgres_url(config))
    pg_env = environment(services["postgres"])
    assert (pg.hostname, pg.port, pg.path.lstrip("/"), pg.username, pg.password) == (
        "postgres", published(services["postgres"])[0][2], pg_env["POSTGRES_DB"],
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    # the one-shot topics service and the TaskManager see the same settings
    for name in ("topics", "taskmanager"):
        other = {k: v for k, v in environment(services[name]).items()
                 if k.startswith(settings.ENV_PREFIX)}
        assert other == env


def test_topics_service_creates_the_topology_from_settings(services):
    assert services["topics"]["command"] == ["python", "-m", "stack", "topics"]


# ---- Kafka broker -------------------------------------------------------------------------

def test_single_node_kafka_in_kraft_mode(services, defaults):
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["CLUSTER_ID"]
    nodes = len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert nodes == 1
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert int(env[key]) == nodes, key
    # the topology's replication must fit the one broker, or the topics service fails
    assert defaults["kafka"]["replication_factor"] <= nodes
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


# ---- start order --------------------------------------------------------------------------

def test_healthchecks_and_start_order(services):
    for name in ("kafka", "postgres", *FLINK_SERVICES):
        assert services[name]["healthcheck"]["test"], name
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["jobmanager"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert services["taskmanager"]["depends_on"] == {
        "jobmanager": {"condition": "service_healthy"}}


def test_header_tells_how_to_build_start_and_submit():
    header = COMPOSE_FILE.read_text().split("\nname:")[0]
    assert "make jars && docker compose build" in header
    assert "docker compose up" in header
    from jobs.__main__ import JOBS

    submits = re.findall(r"docker compose exec jobmanager python -m jobs submit (\w+)", header)
    assert submits and set(submits) <= set(JOBS)


# ---- compose's own validation ---------------------------------------------------------------

def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        out = subprocess.run([standalone, "version", "--short"], capture_output=True,
                             text=True, timeout=30)
        major = out.stdout.strip().lstrip("v").split(".")[0]
        if out.returncode == 0 and major.isdigit() and int(major) >= 2:
            return [standalone]
    return None


def test_docker_compose_config_validates():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 client (docker compose / docker-compose) on PATH")
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
