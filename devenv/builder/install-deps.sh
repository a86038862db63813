#!/usr/bin/env bash
# Installs what the builder host (tests/images) and `make image` need on a Debian 12 machine:
# mmdebstrap builds the Debian rootfs, podman + runc build the workload image without a
# registry, systemd-container / iproute2 / socat run the systemd-nspawn builder variant.
# Idempotent: a second run with everything present does no apt work at all.
set -euo pipefail

PACKAGES=(
  mmdebstrap          # Debian rootfs for the builder host and the container base image
  podman runc uidmap  # build + save the workload image (crun fails here; runc works)
  systemd-container   # systemd-nspawn: a builder host where systemd and dockerd really run
  iproute2 socat      # network namespace + veth for nspawn, loopback relay to the mirror
  iptables            # the local cloud routes each server's metadata address to Nova's metadata API
  openssh-client      # ssh-keygen for the bake key and pinned known_hosts
  gnupg               # signs the local stand-in of Docker's apt repository (devenv/docker_repo.py)
  rabbitmq-server     # the AMQP broker (devenv/rabbitmq.py): a node of our own on loopback ports
  ca-certificates util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "builder-deps: need root (or sudo) to install: ${missing[*]:-nothing}" >&2; exit 1; }
  SUDO="sudo"
fi

# podman's default nofile/nproc ulimits can exceed this machine's hard limits (runc then fails
# with "error setting rlimit"): cap them at the hard limits; use runc (crun fails here).
conf=/etc/containers/containers.conf.d/50-queue-workers.conf
# (measured: nproc at the full hard limit still fails under conmon; 16384 works.)
cap() { local h; h="$(ulimit "$1")"; if [ "$h" = unlimited ] || [ "$h" -gt 16384 ]; then echo 16384; else echo "$h"; fi; }
n="$(cap -Hn)"; u="$(cap -Hu)"
want="$(printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n\n[engine]\nruntime = "runc"\n' "$n" "$n" "$u" "$u")"
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  $SUDO mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
fi
if [ "${#missing[@]}" -eq 0 ]; then
  echo "builder-deps: all present (${PACKAGES[*]})"
  exit 0
fi

echo "builder-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq -o Acquire::Check-Valid-Until=false
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts the packaged broker (and epmd) on every address: devenv runs its own nodes on
# loopback, so a broker this script just installed is stopped and not started at boot.
if [[ " ${missing[*]} " == *" rabbitmq-server "* ]] && command -v systemctl >/dev/null \
    && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now rabbitmq-server.service epmd.socket epmd.service >/dev/null 2>&1 || true
fi

echo "builder-deps: done"
