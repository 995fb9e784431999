#!/usr/bin/env bash
# Makes a base image for the Dockerfile without any container registry: a minimal Debian
# bookworm root filesystem with python3.11, bootstrapped by mmdebstrap from Debian packages
# through this machine's own apt sources, imported under a local name.
#
#   deploy/bootstrap-base.sh [NAME]      # default NAME: localhost/qusec-base:bookworm
#   podman build --format docker --build-arg BASE_IMAGE=localhost/qusec-base:bookworm ...
#
# Needs root (or mmdebstrap's unshare mode), mmdebstrap, and podman or docker (ENGINE=...).
# The apt sources are the host's (/etc/apt/sources.list and sources.list.d/*.list|*.sources);
# they must offer bookworm. An existing image of that name is replaced.
set -euo pipefail

name="${1:-localhost/qusec-base:bookworm}"
engine="${ENGINE:-$(command -v podman || command -v docker || true)}"
if [ -z "$engine" ]; then
  echo "bootstrap-base: neither podman nor docker is installed" >&2
  exit 2
fi
command -v mmdebstrap >/dev/null || { echo "bootstrap-base: mmdebstrap is not installed" >&2; exit 2; }

sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sources+=("$f")
done
if [ "${#sources[@]}" -eq 0 ] || ! grep -qs '\bbookworm\b' "${sources[@]}"; then
  echo "bootstrap-base: this machine's apt sources do not offer bookworm" >&2
  exit 2
fi

# What the official python:3.11-slim image offers the Dockerfile: python3.11 with venv and
# ensurepip, CA certificates, and useradd (passwd, part of minbase). No docs, manuals, locales.
mmdebstrap --variant=minbase --quiet \
  --include=python3.11,python3.11-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm - "${sources[@]}" \
  | "$engine" import --change 'CMD ["/bin/bash"]' - "$name"
