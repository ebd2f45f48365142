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
  libssl-dev zlib1g-dev
  python3 python3-zmq python3-protobuf python3-numpy
  curl procps
)

# The transformer variant (DINAMO-ML). OpenBLAS matters: with Debian's reference BLAS a
# training step is about four times slower.
if [[ "${DINAMO_WITH_TORCH:-ON}" != "OFF" ]]; then
  packages+=(libtorch-dev libopenblas0-pthread libopenblas-dev)
fi

# libtorch links libblas.so.3 and liblapack.so.3, which the alternatives system points at a
# BLAS: make sure it is OpenBLAS (auto mode picks it; a manual choice of the reference BLAS
# would not). Setting the link it already has changes nothing.
select_openblas() {
  [[ "${DINAMO_WITH_TORCH:-ON}" != "OFF" ]] || return 0
  local dir=/usr/lib/x86_64-linux-gnu/openblas-pthread lib
  for lib in libblas.so.3 liblapack.so.3; do
    if [[ -e "$dir/$lib" && "$(readlink -f "/usr/lib/x86_64-linux-gnu/$lib")" != "$dir/$lib" ]]
    then
      update-alternatives --set "$lib-x86_64-linux-gnu" "$dir/$lib"
    fi
  done
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  select_openblas
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
select_openblas
