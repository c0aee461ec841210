#!/usr/bin/env bash
# Stock Debian images for tests/system/test_stock_containers.py: the root file systems debootstrap makes (minbase plus
# python3, no pip packages at all), imported into Docker. Debian 11 has python3 3.9 (Amazon Linux 2023's version),
# Debian 12 has 3.11; the debootstrap output is cached as a tarball in ~/.cache/grid-resume. The image without
# python3 is docker-test.sh's bookworm minbase.
set -euo pipefail
docker=${DOCKER:-/usr/bin/docker}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/grid-resume
mkdir -p "$cache"
stock() { # stock NAME SUITE
  local image=grid-resume-test/$1:latest tarball=$cache/$1.tar.gz dir
  "$docker" image inspect "$image" >/dev/null 2>&1 && return 0
  if [[ ! -s "$tarball" ]]; then
    dir=$(mktemp -d -t grid-resume-stock.XXXXXX)
    printf '%s ▶ debootstrap --variant=minbase --include=python3 %s (once; cached in %s)\n' "$(date +%H:%M:%S)" "$2" "$cache"
    debootstrap --variant=minbase --include=python3 "$2" "$dir/rootfs" >"$dir/debootstrap.log" 2>&1 \
      || { tail -20 "$dir/debootstrap.log" >&2; rm -rf "$dir"; exit 1; }
    tar -C "$dir/rootfs" -c . | gzip -1 >"$tarball.part"
    mv "$tarball.part" "$tarball"
    rm -rf "$dir"
  fi
  zcat "$tarball" | "$docker" import - "$image" >/dev/null
}
stock debian11-python3 bullseye
stock debian12-python3 bookworm
