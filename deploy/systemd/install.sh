#!/usr/bin/env bash
# Install edgeyolo as a systemd service (Jetson with JetPack 6, or any Debian/Ubuntu box).
#
#   sudo deploy/systemd/install.sh [--source PATH] [--config FILE] [--opencv auto|system|pip]
#                                  [--no-start] [--dry-run]
#
#   --source PATH   what pip installs: this checkout (default) or a built wheel
#   --config FILE   config to install as /etc/edgeyolo/config.yaml (never overwrites one)
#                   (default: deploy/config.example.yaml)
#   --opencv WHICH  system: the system python3's OpenCV (JetPack's; has GStreamer, needed for
#                   CSI cameras), numpy < 2, no OpenCV from PyPI. pip: PyPI's (no GStreamer).
#                   auto (default): system when python3's cv2 has GStreamer, else pip
#   --no-start      install and enable, but do not start now
#   --dry-run       print the commands instead of running them (no root needed)
#
# Layout: venv /opt/edgeyolo/venv, models /opt/edgeyolo/models, config /etc/edgeyolo,
# engine cache /var/cache/edgeyolo, user and group "edgeyolo" (member of video and render).
# Re-running it upgrades the package and keeps the config. See docs/deploy.md.
set -euo pipefail

PREFIX=/opt/edgeyolo
VENV="$PREFIX/venv"
ETC=/etc/edgeyolo
CACHE=/var/cache/edgeyolo
UNIT=/etc/systemd/system/edgeyolo.service
SERVICE_USER=edgeyolo

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source_path="$repo"
config="$repo/deploy/config.example.yaml"
start=1
dry_run=0
opencv=auto

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) [ $# -ge 2 ] || die "--source needs a path"; source_path="$2"; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; config="$2"; shift 2 ;;
    --opencv) [ $# -ge 2 ] || die "--opencv needs auto, system or pip"; opencv="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

run() {
  if [ "$dry_run" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

[ -e "$source_path" ] || die "--source $source_path: no such file or folder"
[ -f "$config" ] || die "--config $config: no such file"
if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or with --dry-run to see the commands"
fi
command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
command -v systemctl >/dev/null || [ "$dry_run" = 1 ] || die "systemctl not found: not a systemd system"

# On a Jetson, TensorRT's Python bindings come from JetPack's python3-libnvinfer in the system
# interpreter (3.10 on JetPack 6): the venv must see system site-packages to import them.
# JetPack's OpenCV (built with GStreamer) lives there too: installing PyPI's OpenCV into the
# venv would shadow it and every GStreamer camera would fail, and the system cv2 is built for
# numpy 1.x, so that path pins numpy < 2 (deploy/constraints-system-opencv.txt).
venv_args=()
extras=()
pins=()
has_trt=0
if python3 -c 'import tensorrt' >/dev/null 2>&1; then
  has_trt=1
  venv_args=(--system-site-packages)
  extras+=(tensorrt)
  echo "install.sh: system python3 has TensorRT; the venv will see it" >&2
fi
gst_cv2_check='import cv2, re, sys; sys.exit(0 if re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) else 1)'
case "$opencv" in
  auto)
    if python3 -c "$gst_cv2_check" >/dev/null 2>&1; then opencv=system; else opencv=pip; fi ;;
  system)
    python3 -c "$gst_cv2_check" >/dev/null 2>&1 || [ "$dry_run" = 1 ] \
      || die "--opencv system: python3's cv2 is missing or has no GStreamer (JetPack: apt-get install libopencv-python; Debian: python3-opencv)" ;;
  pip) ;;
  *) die "--opencv $opencv: expected auto, system or pip" ;;
esac
if [ "$opencv" = system ]; then
  venv_args=(--system-site-packages)
  pins=(-c "$repo/deploy/constraints-system-opencv.txt")
  echo "install.sh: using the system OpenCV (GStreamer); numpy < 2, no OpenCV from PyPI" >&2
else
  extras+=(opencv)
  # With TensorRT from the system, numpy stays 1.x for its bindings too.
  if [ "$has_trt" = 1 ]; then pins=("numpy<2"); fi
  echo "install.sh: installing OpenCV from PyPI (no GStreamer cameras)" >&2
fi

# 1. User: no login, no home of its own; video for cameras, render for GPU nodes.
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
  run useradd --system --user-group --home-dir "$CACHE" --no-create-home \
    --shell /usr/sbin/nologin "$SERVICE_USER"
fi
for group in video render; do
  if getent group "$group" >/dev/null; then
    run usermod --append --groups "$group" "$SERVICE_USER"
  fi
done

# 2. Package into its own venv (owned by root: the service cannot modify its own code).
run install -d -m 0755 "$PREFIX" "$PREFIX/models" "$PREFIX/share/docs"
if [ ! -x "$VENV/bin/python" ]; then
  run python3 -m venv "${venv_args[@]}" "$VENV"
fi
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
extra=""
if [ "${#extras[@]}" -gt 0 ]; then extra="[$(IFS=,; echo "${extras[*]}")]"; fi
# A folder (this checkout) or a wheel; with TensorRT present, cuda-python comes too.
run "$VENV/bin/python" -m pip install --quiet --upgrade "${pins[@]}" "$source_path$extra"
# Which OpenCV the service will use (edgeyolo doctor shows the same).
run "$VENV/bin/python" -c 'from edgeyolo.sources.opencv import opencv_info; print("install.sh:", opencv_info().describe())'
if [ -d "$repo/models" ]; then
  run install -m 0644 -t "$PREFIX/models" "$repo"/models/*.onnx
fi
run install -m 0644 -t "$PREFIX/share/docs" "$repo/docs/deploy.md"

# 3. Config (kept when present) and engine cache.
run install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
if [ ! -e "$ETC/config.yaml" ]; then
  run install -m 0640 -o root -g "$SERVICE_USER" "$config" "$ETC/config.yaml"
else
  echo "install.sh: keeping the existing $ETC/config.yaml" >&2
fi
run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$CACHE"

# 4. Check the config as the service user before systemd tries it.
run runuser -u "$SERVICE_USER" -- "$VENV/bin/edgeyolo" check-config "$ETC/config.yaml"

# 5. Unit.
run install -m 0644 "$here/edgeyolo.service" "$UNIT"
run systemctl daemon-reload
if [ "$start" = 1 ]; then
  run systemctl enable --now edgeyolo.service
  echo "install.sh: started; follow it with: journalctl -u edgeyolo -f" >&2
else
  run systemctl enable edgeyolo.service
fi
