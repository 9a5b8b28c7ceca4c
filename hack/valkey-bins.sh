#!/usr/bin/env bash
# Builds Valkey from its source release (shared/third_party, next to the clone) and caches it
# by version outside the clone, as hack/k8s-bins.sh does for Kubernetes. Prints the path of
# valkey-server. Valkey is not packaged in Debian 12 and no registry is reachable, so the
# source release is the way; where it is absent, the script says so and prints "redis-server"
# (the tests then run on redis-server, which speaks the same protocol and takes the same flags).
#
#   VALKEY_SOURCE=/path/to/valkey-8.0.1.tar.gz hack/valkey-bins.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
src="${VALKEY_SOURCE:-$here/../../shared/third_party/valkey-$VALKEY_VERSION.tar.gz}"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/cachefleet/valkey/$VALKEY_VERSION"
if [[ -x "$dir/valkey-server" ]]; then
  echo "$dir/valkey-server"; exit 0
fi
if [[ ! -f "$src" ]]; then
  echo "valkey-bins: no Valkey source release at $src: the tests run on redis-server" >&2
  echo "redis-server"; exit 0
fi
echo "valkey-bins: building Valkey $VALKEY_VERSION from $src (about a minute on 2 cores)" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xzf "$src" -C "$work"
make -C "$work/valkey-$VALKEY_VERSION" -j"$(nproc)" BUILD_TLS=no MALLOC=libc >"$work/build.log" 2>&1 ||
  { tail -20 "$work/build.log" >&2; exit 1; }
mkdir -p "$dir"
for b in valkey-server valkey-cli valkey-benchmark; do
  cp "$work/valkey-$VALKEY_VERSION/src/$b" "$dir/$b.tmp" && mv "$dir/$b.tmp" "$dir/$b"
done
echo "$dir/valkey-server"
