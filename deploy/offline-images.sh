#!/usr/bin/env bash
# Air-gapped base images: local stand-ins for python:3.11-slim, redis:7 and haproxy:2.6,
# built from Debian bookworm packages, for machines that reach a Debian mirror but no image
# registry. Sites with a registry never run this; the Dockerfile and compose.yaml name the
# official tags and work unchanged either way.
#
#   deploy/offline-images.sh                 # build the missing ones (idempotent)
#   deploy/offline-images.sh --force         # rebuild all three
#   deploy/offline-images.sh redis:7         # only this one (same for python:3.11-slim, haproxy:2.6)
#
# How: `debootstrap --variant=minbase --include=<the service's packages>` into a temporary
# root, a small fix-up inside it (users, entrypoint, the paths the official image uses),
# docs/locales/apt lists stripped, then `tar | docker import --change CMD/ENTRYPOINT/...`
# tagged with the official name. The root filesystem tarball and the downloaded .debs are
# cached in $CALLBRIDGE_IMAGE_CACHE (default /var/cache/callbridge-images), so a machine whose
# Docker store was wiped re-imports in seconds instead of bootstrapping again.
#
# Needs root, debootstrap, a running Docker engine and a Debian mirror: DEBIAN_MIRROR, else the
# bookworm entry of /etc/apt/sources.list(.d). Packages come from the bookworm suite as
# published on that mirror (point-release level); see deploy/README.md.
set -euo pipefail

SUITE=bookworm
CACHE=${CALLBRIDGE_IMAGE_CACHE:-/var/cache/callbridge-images}
RECIPE_VERSION=2   # bump when a recipe below changes: invalidates the cached tarballs
FORCE=0
WANTED=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    python:3.11-slim|redis:7|haproxy:2.6) WANTED+=("$arg") ;;
    *) echo "offline-images: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#WANTED[@]} -gt 0 ] || WANTED=(python:3.11-slim redis:7 haproxy:2.6)

log() { printf '[offline-images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'offline-images: %s\n' "$*" >&2; exit 1; }

# The mirror this machine's apt already uses for bookworm (one-line and deb822 formats).
detect_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1)==s) { print $i; exit } } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" 'BEGIN { RS=""; FS="\n" }
      { uri=""; ok=0; deb=0
        for (i=1;i<=NF;i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri=a[2] }
          if ($i ~ /^Suites:/) { n=split($i, b, /[ \t]+/); for (j=2;j<=n;j++) if (b[j]==s) ok=1 }
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb=1
          if ($i ~ /^Enabled:[ \t]*no/) ok=0
        }
        if (ok && deb && uri != "") { print uri; exit } }' "$f"
  done
}

MIRROR=${DEBIAN_MIRROR:-$(detect_mirror | head -n1)}
[ -n "$MIRROR" ] || die "no Debian $SUITE mirror in /etc/apt/sources.list(.d); set DEBIAN_MIRROR"
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and docker import need it)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install -y debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd first)"
mkdir -p "$CACHE/debs"

WORK=$(mktemp -d /var/tmp/callbridge-rootfs.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# --- per-image recipes ----------------------------------------------------------------
# Each recipe: the packages added to minbase, a fix-up run inside the root, and the
# `docker import --change` lines that reproduce the official image's config.

python_packages="python3,python3-venv,python3-pip,ca-certificates"
python_fixup() {
  local root=$1
  # The official image: `python` and `pip` on PATH in /usr/local/bin, pip may install into
  # the system interpreter (no PEP 668 marker), UTF-8 locale.
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
}
python_changes() {
  local version
  version=$(chroot "$1" python3 -c 'import platform; print(platform.python_version())')
  printf '%s\n' \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV LANG=C.UTF-8" \
    "ENV PYTHON_VERSION=$version" \
    'CMD ["python3"]'
}

redis_packages="redis-server"
redis_fixup() {
  local root=$1
  mkdir -p "$root/data"
  chroot "$root" chown redis:redis /data
  # The official image's entrypoint: started as root, it makes /data the redis user's and
  # drops to that user (setpriv here, gosu there); its redis is built with protected mode
  # off, which a bare `redis-server` (no config file) needs to accept non-loopback clients.
  cat > "$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
  shift
  if [ "${1%.conf}" != "${1:-}" ]; then
    conf=$1; shift
    set -- redis-server "$conf" --protected-mode no "$@"
  else
    set -- redis-server --protected-mode no "$@"
  fi
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
EOF
  chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
}
redis_changes() {
  printf '%s\n' \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "VOLUME /data" \
    "WORKDIR /data" \
    "EXPOSE 6379" \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'CMD ["redis-server"]'
}

haproxy_packages="haproxy"
haproxy_fixup() {
  local root=$1
  # The official image reads /usr/local/etc/haproxy/haproxy.cfg and runs as user haproxy
  # in the master-worker, foreground mode (-W -db) its entrypoint adds. (Its STOPSIGNAL
  # SIGUSR1, a soft stop, cannot be set by `docker import`: SIGTERM stops it at once, which
  # for a stateless LB in front of draining replicas is the same outcome.)
  mkdir -p "$root/usr/local/etc/haproxy" "$root/var/lib/haproxy"
  cp "$root/etc/haproxy/haproxy.cfg" "$root/usr/local/etc/haproxy/haproxy.cfg"
  chroot "$root" chown haproxy:haproxy /var/lib/haproxy
  cat > "$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then
  set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
EOF
  chmod 755 "$root/usr/local/bin/docker-entrypoint.sh"
}
haproxy_changes() {
  printf '%s\n' \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "WORKDIR /var/lib/haproxy" \
    "USER haproxy" \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
}

# --- shared steps ---------------------------------------------------------------------

# Keep the images small the way Debian's slim images do: no docs (copyright files stay),
# man pages, locales or apt lists, and tell dpkg to skip them in derived images too.
strip_root() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
         "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old "$root"/var/log/*.log \
         "$root"/var/log/apt/* "$root"/tmp/* "$root"/root/.cache
  find "$root/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
  cat > "$root/etc/dpkg/dpkg.cfg.d/docker-minimal" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  # A container's hostname and resolver come from Docker.
  rm -f "$root/etc/hostname"
  : > "$root/etc/resolv.conf"
}

human() { numfmt --to=si --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }  # as `docker image ls`

build_one() {
  local tag=$1 kind=$2
  local packages fixup changes key tarball root started
  packages=$(eval echo "\$${kind}_packages")
  if [ "$FORCE" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag: present ($(human "$(docker image inspect -f '{{.Size}}' "$tag")")), skipped"
    return
  fi
  started=$(date +%s)
  key=$(printf '%s|%s|%s|%s|%s' "$RECIPE_VERSION" "$SUITE" "$MIRROR" "$packages" \
        "$(declare -f "${kind}_fixup" "${kind}_changes" strip_root)" | sha256sum | cut -c1-12)
  tarball="$CACHE/${kind}-${SUITE}-${key}.tar.gz"
  root="$WORK/$kind"
  if [ "$FORCE" = 1 ] || [ ! -s "$tarball" ] || [ ! -s "${tarball%.tar.gz}.changes" ]; then
    log "$tag: debootstrap --variant=minbase --include=$packages $SUITE $MIRROR"
    rm -rf "$root"; mkdir -p "$root"
    if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$CACHE/debs" \
         "$SUITE" "$root" "$MIRROR" > "$WORK/$kind-debootstrap.log" 2>&1; then
      tail -n 30 "$WORK/$kind-debootstrap.log" >&2
      die "$tag: debootstrap failed (log above)"
    fi
    "${kind}_fixup" "$root"
    "${kind}_changes" "$root" > "$WORK/$kind.changes"
    strip_root "$root"
    log "$tag: root filesystem $(du -sh "$root" | cut -f1), packing $tarball"
    rm -f "$CACHE/${kind}-${SUITE}-"*.tar.gz "$CACHE/${kind}-${SUITE}-"*.changes
    tar -C "$root" --numeric-owner -cf - . | gzip -1 > "$tarball.tmp"
    mv "$WORK/$kind.changes" "${tarball%.tar.gz}.changes"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  else
    log "$tag: using cached root filesystem $tarball"
  fi
  # The --change lines are cached beside the tarball, so a cached root imports exactly as
  # it was built.
  local -a change_args=()
  local line
  while IFS= read -r line; do
    [ -n "$line" ] && change_args+=(--change "$line")
  done < "${tarball%.tar.gz}.changes"
  docker import "${change_args[@]}" \
    --change "LABEL org.opencontainers.image.description=\"local stand-in for $tag built from Debian $SUITE packages by callbridge deploy/offline-images.sh\"" \
    --message "callbridge offline-images: debootstrap $SUITE + $packages" \
    "$tarball" "$tag" >/dev/null
  log "$tag: imported in $(( $(date +%s) - started ))s, size $(human "$(docker image inspect -f '{{.Size}}' "$tag")")"
}

total_start=$(date +%s)
log "mirror $MIRROR, suite $SUITE, cache $CACHE"
for tag in "${WANTED[@]}"; do
  case "$tag" in
    python:3.11-slim) build_one "$tag" python ;;
    redis:7) build_one "$tag" redis ;;
    haproxy:2.6) build_one "$tag" haproxy ;;
  esac
done
log "done in $(( $(date +%s) - total_start ))s"
for tag in "${WANTED[@]}"; do
  printf '  %-18s %s\n' "$tag" "$(human "$(docker image inspect -f '{{.Size}}' "$tag")")"
done
