#!/bin/sh
# Entrypoint of the Dockerfile.jetson image: checks TensorRT when the container starts, then runs isplit-export.
#
# Why at start and not in `docker build`: on JetPack the NVIDIA container runtime mounts the host's Tegra
# libraries that TensorRT loads (libnvdla_compiler.so and others) only into a container started with
# `--runtime nvidia`, never into a build step (dusty-nv/jetson-containers#1218, #1185). Without them
# `verify`, `plan` and `run` with onnxruntime still work, so this says in one line what is missing and how to
# fix it, and goes on; `build-engines` and `--backend tensorrt` then stop with exit 4 (not run) themselves.
set -eu
if ! err=$(python3 -c "import tensorrt" 2>&1); then
    reason=$(printf '%s\n' "$err" | tail -n 1)
    echo "isplit-export image: TensorRT does not import in this container ($reason): start it with 'docker run --runtime nvidia' on a JetPack 6 (L4T r36) Jetson; verify, plan and run with onnxruntime work without it" >&2
elif ! command -v trtexec > /dev/null 2>&1; then
    echo "isplit-export image: trtexec is not on PATH (expected /usr/src/tensorrt/bin/trtexec from the L4T base image): build_engines.sh needs it, isplit-export build-engines does not" >&2
fi
exec isplit-export "$@"
