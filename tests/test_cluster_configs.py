"""cluster/: the launcher YAML against Ray's own schema, the RayJob's required keys, the runtime_env
and the size of what a job uploads, and the docs' own check of every command in cluster/README.md."""

from __future__ import annotations

import re
import shlex
import sys
import zipfile
from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"
# harness sweep's own ray.init(runtime_env={"env_vars": ...}) sets these; a job's runtime_env that sets
# one too makes Ray refuse to merge the two, and the job dies at once.
SWEEP_DRIVER_ENV_VARS = {"WANDB_MODE", "WANDB_SILENT", "WANDB_CONSOLE", "HARNESS_DATA_DIR", "HARNESS_CACHE_DIR"}


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _ffcv_apt_packages() -> list[str]:
    text = (REPO / "scripts" / "install_ffcv.sh").read_text()
    m = re.search(r"^APT_PKGS=\(([^)]*)\)", text, re.M)
    assert m, "scripts/install_ffcv.sh no longer lists APT_PKGS=(...)"
    return m.group(1).split()


# ---------------------------------------------------------------------------------------------
# gpu-cluster.yaml: Ray's launcher schema, offline

def _prepared_launcher_config(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def test_launcher_config_passes_rays_schema():
    cfg = _load("gpu-cluster.yaml")
    prepared = _prepared_launcher_config(cfg)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != prepared["head_node_type"]}
    assert workers, "no worker node type"
    for name, t in workers.items():
        assert t["max_workers"] > t.get("min_workers", 0), f"{name} does not autoscale"
        assert re.match(r"^(g|p)\d", t["node_config"]["InstanceType"]), f"{name} is not a GPU instance"
    assert types[prepared["head_node_type"]]["resources"].get("CPU") == 0  # trials never land on the head


def test_launcher_schema_check_can_fail():
    import jsonschema

    cfg = _load("gpu-cluster.yaml")
    cfg["available_node_types"]["gpu_worker"]["node_cfg"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _prepared_launcher_config(cfg)


def test_launcher_installs_ffcv_and_the_project():
    cfg = _load("gpu-cluster.yaml")
    setup = "\n".join(cfg["setup_commands"])
    for pkg in [*_ffcv_apt_packages(), "build-essential"]:
        assert re.search(rf"apt-get install[^\n]*\b{re.escape(pkg)}\b", setup), f"apt package {pkg} not installed"
    assert re.search(r"pip install [^\n]*cnn-harness\[ffcv\]", setup)
    image = cfg["docker"]["image"]
    assert image == f"rayproject/ray:{ray.__version__}-{PY_TAG}-gpu", image


def test_launcher_auth_and_ports():
    cfg = _load("gpu-cluster.yaml")
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    head = " ".join(cfg["head_start_ray_commands"])
    workers = " ".join(cfg["worker_start_ray_commands"])
    for cmds in (head, workers):
        assert "RAY_AUTH_MODE=token" in cmds
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head + workers
    assert "WANDB_API_KEY" not in yaml.safe_dump(cfg.get("file_mounts"))  # the key file stays commented out


# ---------------------------------------------------------------------------------------------
# rayjob.yaml: KubeRay's required keys, checked by hand (no offline schema ships with Ray)

def _containers(pod_template: dict) -> list[dict]:
    containers = pod_template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)
    return containers


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def test_rayjob_has_the_keys_kuberay_requires():
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # never a LoadBalancer
    containers = _containers(head["template"])
    assert _workers_ok(cluster["workerGroupSpecs"])
    images = {c["image"] for c in containers}
    for g in cluster["workerGroupSpecs"]:
        images |= {c["image"] for c in _containers(g["template"])}
    images |= {c["image"] for c in _containers(spec["submitterPodTemplate"])}
    assert len(images) == 1 and next(iter(images)).endswith(f":{ray.__version__}-gpu"), images


def _workers_ok(groups: list[dict]) -> bool:
    assert groups
    for g in groups:
        assert g["groupName"] and isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"] and g["maxReplicas"] > g["minReplicas"]
        for c in _containers(g["template"]):
            assert c["resources"]["limits"].get("nvidia.com/gpu"), "worker without a GPU"
    return True


def test_rayjob_runs_the_full_sweep_with_valid_flags():
    from harness.cli import build_parser

    job = _load("rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:5] == ["python", "-m", "harness", "sweep", "--matrix"] and argv[5] == "full"
    build_parser().parse_args(argv[3:])  # exits 2 on an unknown flag
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)
    assert not set(env.get("env_vars", {})) & SWEEP_DRIVER_ENV_VARS


def test_rayjob_auth_and_secrets_come_from_kubernetes_secrets():
    job = _load("rayjob.yaml")
    cluster = job["spec"]["rayClusterSpec"]
    ray_containers = _containers(cluster["headGroupSpec"]["template"])
    for g in cluster["workerGroupSpecs"]:
        ray_containers += _containers(g["template"])
    for c in [*ray_containers, *_containers(job["spec"]["submitterPodTemplate"])]:
        env = _env(c)
        assert env["RAY_AUTH_MODE"]["value"] == "token", c["name"]
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], c["name"]
        assert "value" not in env["RAY_AUTH_TOKEN"]
    for c in ray_containers:
        key = _env(c)["WANDB_API_KEY"]
        assert "value" not in key and key["valueFrom"]["secretKeyRef"]["optional"] is True


def test_dockerfile_matches_the_cluster_image_and_installs_ffcv():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM {re.escape(_load('gpu-cluster.yaml')['docker']['image'])}$", text, re.M)
    for pkg in [*_ffcv_apt_packages(), "build-essential"]:
        assert re.search(rf"\b{re.escape(pkg)}\b", text), pkg
    assert "cnn-harness[ffcv]" in text
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "data", "runs", "sweeps", "results"} <= set(ignored)


# ---------------------------------------------------------------------------------------------
# runtime_env.yaml and the upload

def test_runtime_env_is_valid_and_conflict_free():
    from ray.runtime_env import RuntimeEnv

    from harness.jobs.submission import load_runtime_env

    raw = _load("runtime_env.yaml")
    RuntimeEnv(**raw)
    assert not set(raw.get("env_vars", {})) & SWEEP_DRIVER_ENV_VARS
    env = load_runtime_env(CLUSTER / "runtime_env.yaml", REPO)
    assert env["working_dir"] == str(REPO)
    for needed in (".git/", ".venv/", "data/", "runs/", "sweeps/", "results/", "wandb/"):
        assert needed in raw["excludes"], needed


def test_job_upload_is_small_and_holds_no_data(tmp_path):
    """What `--working-dir . --runtime-env cluster/runtime_env.yaml` uploads, built by Ray's own packager.

    Built without the .gitignore rules (as with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1), so the excludes
    alone must keep venvs, data and results out; Ray's limit is a few hundred MiB, this asks for < 50.
    """
    from ray._private.runtime_env.packaging import create_package

    raw = _load("runtime_env.yaml")
    pkg = tmp_path / "pkg.zip"
    create_package(str(REPO), pkg, include_gitignore=False, excludes=raw["excludes"])
    size_mib = pkg.stat().st_size / 2**20
    assert size_mib < 50, f"the job upload is {size_mib:.1f} MiB"
    names = zipfile.ZipFile(pkg).namelist()
    assert "harness/jobs/wrapper.py" in names and "cluster/smoke-matrix.yaml" in names
    bad = [n for n in names if n.split("/")[0] in {".venv", ".git", "data", "runs", "sweeps", "results", "wandb"}
           or n.endswith(".beton")]
    assert not bad, bad[:10]


# ---------------------------------------------------------------------------------------------
# The docs' own check: every command in cluster/README.md parses with the real parsers

ALLOWED = {"harness", "python", "ray", "kubectl", "docker", "export", "."}


def _readme_commands() -> list[str]:
    text = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"^\s*```bash\n(.*?)^\s*```", text, re.M | re.S)
    assert blocks, "no bash blocks in cluster/README.md"
    lines = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _command_of(line: str) -> list[str]:
    m = re.match(r"^[A-Z_]+=\$\((.*)\)$", line)  # JOB=$(harness submit ... | tail -n 1)
    if m:
        line = m.group(1).split(" | ")[0]
    argv = shlex.split(line.replace("$JOB", "harness-20250101-000000-abcd"))
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        argv = argv[1:]
    return argv


def _check_harness(args: list[str]) -> None:
    from harness.cli import build_parser

    ns = build_parser().parse_args(args)
    if args[0] == "submit":
        sweep_args = [a for a in ns.sweep_args if a != "--"]
        build_parser().parse_args(["sweep", *sweep_args])


def _check_ray(args: list[str]) -> None:
    import click
    from ray.scripts.scripts import cli

    cmd, ctx = cli, None
    while isinstance(cmd, click.Group):
        name = args.pop(0)
        cmd = cmd.get_command(ctx, name)
        assert cmd is not None, f"ray has no command {name}"
    cmd.make_context(cmd.name, list(args))  # raises click.UsageError on an unknown option
    if "--" in args:
        entry = args[args.index("--") + 1:]
        if entry[:3] == ["python", "-m", "harness"]:
            _check_harness(entry[3:])


def _check_file_args(args: list[str]) -> None:
    for i, a in enumerate(args):
        if a == "-f":
            path = REPO / args[i + 1]
            assert path.is_file(), f"{args[i + 1]} does not exist"
            if path.suffix == ".yaml":
                yaml.safe_load(path.read_text())


@pytest.mark.parametrize("line", _readme_commands())
def test_readme_command_parses(line):
    argv = _command_of(line)
    assert argv and argv[0] in ALLOWED, f"cluster/README.md walks through an unchecked program: {line}"
    prog, args = argv[0], argv[1:]
    if prog == "harness":
        _check_harness(args)
    elif prog == "python":
        assert args[:2] == ["-m", "harness"], line
        _check_harness(args[2:])
    elif prog == "ray":
        _check_ray(args)
        for a in args:
            if a.startswith("cluster/"):
                assert (REPO / a).is_file(), a
    elif prog == "kubectl":
        assert args[0] in {"apply", "delete", "create", "logs", "port-forward", "get"}, line
        if args[0] in {"apply", "delete"}:
            _check_file_args(args)
    elif prog == "docker":
        assert args[0] in {"build", "push"}, line
        if args[0] == "build":
            _check_file_args(args)


def test_readme_names_only_files_that_exist():
    text = (CLUSTER / "README.md").read_text()
    for name in set(re.findall(r"\b(?:cluster|tests|scripts)/[\w./-]+\.(?:yaml|py|sh|md)\b|cluster/Dockerfile", text)):
        assert (REPO / name).exists(), name


def test_readme_covers_the_safety_and_gpu_notes():
    text = (CLUSTER / "README.md").read_text()
    for needed in ("face the internet", "RAY_AUTH_MODE=token", "weights_only=True", "--lr-scaling linear",
                   "warm-up", "NCCL", "bf16", "channels_last", "runtime_env", "env_vars", "s3://", "gs://", "NFS",
                   "betons"):
        assert needed in text, needed
