#!/usr/bin/env bash
# Debian packages the tests, benchmarks and media features use. Installs only what is missing; skips without root.
set -u
want=(redis-server postgresql chromium espeak-ng ffmpeg python3-doc git-doc fonts-dejavu-core bubblewrap)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: not root; please install: ${missing[*]} (tests that need them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || echo "system-deps: apt-get failed for some of: ${missing[*]} (tests that need them will skip)" >&2
exit 0
