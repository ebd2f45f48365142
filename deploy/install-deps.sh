#!/usr/bin/env bash
# Installs everything dinamo needs to build, test and run, from Debian 12 packages.
# Idempotent: packages already present are left as they are. Run as root.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libzmq3-dev cppzmq-dev
  libprotobuf-dev protobuf-compiler
  libboost-dev libboost-system-dev
  libspdlog-dev libfmt-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev
  python3 python3-zmq python3-protobuf python3-numpy
  curl procps
)

# The transformer variant (DINAMO-ML). OpenBLAS matters: with Debian's reference BLAS a
# training step is about four times slower.
if [[ "${DINAMO_WITH_TORCH:-ON}" != "OFF" ]]; then
  packages+=(libtorch-dev libopenblas0-pthread libopenblas-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
