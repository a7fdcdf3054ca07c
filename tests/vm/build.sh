#!/usr/bin/env bash
# Build what the QEMU multi-NUMA guest tests need; idempotent, cached outside the repo.
#
#   ${NUMATOP_CACHE:-~/.cache/numatop-llm}/vm/
#     vmlinuz             a Debian 12 kernel (linux-image-<abi>-amd64, via apt-get download)
#     initramfs.cpio.gz   static busybox + the modules for virtio-9p and overlayfs + tests/vm/init.sh
#     kernel-version      the kernel's release string
#     stamp               what the initramfs was built from (rebuilt when it changes)
#
# Installs qemu-system-x86 busybox-static numactl cpio kmod with apt-get when missing (needs root).
# Env: NUMATOP_VM_KERNEL_PKG=linux-image-6.1.0-NN-amd64 picks a kernel package (default: the one
# linux-image-amd64 depends on now; a cached kernel is kept until the cache is removed).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${NUMATOP_CACHE:-$HOME/.cache/numatop-llm}/vm"
export DEBIAN_FRONTEND=noninteractive
MODULES=(virtio_pci 9p 9pnet_virtio overlay)

say() { printf 'vm/build: %s\n' "$*" >&2; }

# 1. packages
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s numactl >/dev/null 2>&1 || need+=(numactl)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
if ! dpkg -s busybox-static >/dev/null 2>&1 && ! dpkg -s busybox >/dev/null 2>&1; then
  need+=(busybox-static)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    say "missing ${need[*]} and not root: cannot install" && exit 3
  fi
  say "apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH="$PATH:/sbin:/usr/sbin"

mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# 2. a static busybox (busybox-static's /bin/busybox; when the dynamic busybox package holds that
#    path, take the binary out of the busybox-static package without installing it)
BUSYBOX="$CACHE/busybox"
if [ ! -x "$BUSYBOX" ]; then
  if dpkg -s busybox-static >/dev/null 2>&1; then
    cp /bin/busybox "$BUSYBOX.tmp"
  else
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root busybox-static >/dev/null)
    dpkg -x "$work"/busybox-static_*.deb "$work/bb"
    cp "$work/bb/bin/busybox" "$BUSYBOX.tmp"
  fi
  if ldd "$BUSYBOX.tmp" >/dev/null 2>&1; then say "$BUSYBOX.tmp is not a static binary" && exit 1; fi
  mv "$BUSYBOX.tmp" "$BUSYBOX"
fi

# 3. the kernel and the modules the guest needs
if [ ! -s "$CACHE/vmlinuz" ] || [ ! -d "$CACHE/modules" ]; then
  pkg="${NUMATOP_VM_KERNEL_PKG:-}"
  if [ -z "$pkg" ]; then
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  fi
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  fi
  [ -n "$pkg" ] || { say "cannot find a Debian kernel package (linux-image-amd64)"; exit 1; }
  say "kernel package $pkg"
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) ||
    { apt-get update -qq && (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null); }
  mkdir "$work/k"
  dpkg -x "$work"/linux-image-*.deb "$work/k"
  kver="$(ls "$work/k/lib/modules" | head -1)"
  depmod -b "$work/k" "$kver"
  dep="$work/k/lib/modules/$kver/modules.dep"
  # load order: each module after its dependencies (modules.dep lists direct and indirect deps)
  declare -A seen=()
  order=()
  add() {
    local path="$1" line d
    [ -n "${seen[$path]:-}" ] && return 0
    seen[$path]=1
    line="$(grep -E "^$path:" "$dep")" || { say "module $path not in modules.dep"; exit 1; }
    for d in ${line#*:}; do add "$d"; done
    order+=("$path")
  }
  for m in "${MODULES[@]}"; do
    path="$(grep -oE "^[^:]*/$m\.ko(\.xz|\.zst|\.gz)?:" "$dep" | head -1)"
    [ -n "$path" ] || { say "kernel $kver has no module $m"; exit 1; }
    add "${path%:}"
  done
  rm -rf "$CACHE/modules.tmp" && mkdir "$CACHE/modules.tmp"
  : >"$CACHE/modules.tmp/load-order"
  for p in "${order[@]}"; do
    name="$(basename "$p")"
    src="$work/k/lib/modules/$kver/$p"
    case "$name" in
      *.xz) xz -dc "$src" >"$CACHE/modules.tmp/${name%.xz}"; name="${name%.xz}" ;;
      *.zst) zstd -qdc "$src" >"$CACHE/modules.tmp/${name%.zst}"; name="${name%.zst}" ;;
      *.gz) gzip -dc "$src" >"$CACHE/modules.tmp/${name%.gz}"; name="${name%.gz}" ;;
      *) cp "$src" "$CACHE/modules.tmp/$name" ;;
    esac
    echo "$name" >>"$CACHE/modules.tmp/load-order"
  done
  rm -rf "$CACHE/modules" && mv "$CACHE/modules.tmp" "$CACHE/modules"
  cp "$work/k/boot/vmlinuz-$kver" "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
  echo "$kver" >"$CACHE/kernel-version"
  rm -rf "$work/k" "$work"/*.deb
fi

# 4. the initramfs (rebuilt when the init script, busybox or the modules change)
stamp="$(cat "$HERE/init.sh" "$BUSYBOX" "$CACHE/modules/load-order" "$CACHE/kernel-version" | sha256sum | cut -c1-16)"
if [ ! -s "$CACHE/initramfs.cpio.gz" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$stamp" ]; then
  say "initramfs for $(cat "$CACHE/kernel-version")"
  r="$work/root"
  mkdir -p "$r"/{bin,dev,proc,sys,lib/modules,newroot,lower,rw}
  cp "$BUSYBOX" "$r/bin/busybox"
  cp "$CACHE"/modules/* "$r/lib/modules/"
  install -m 755 "$HERE/init.sh" "$r/init"
  (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$CACHE/initramfs.cpio.gz.tmp"
  mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
  echo "$stamp" >"$CACHE/stamp"
fi
say "ready: $CACHE (kernel $(cat "$CACHE/kernel-version"))"
