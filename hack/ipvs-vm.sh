#!/usr/bin/env bash
# Runs the forwarder's IPVS tests (and its nftables ones, for comparison)
# on a kernel that has IPVS: Debian's stock kernel, unpacked (never
# installed) and booted under qemu with software emulation, with an
# initramfs of busybox, the needed modules and the test binary. Exits with
# the tests' status, read from the serial console. The run fails, whatever
# that status, when a module does not load, when any test skips (inside the
# VM nothing may: IRONLB_REQUIRE_IPVS=1 turns a missing IPVS into a
# failure), or when no IPVS test passed (no benchmark ran, with BENCH).
#
# Environment: IRONLB_CACHE (download cache), TEST_RUN (go test -run
# pattern), BENCH (go test -bench pattern, e.g. IPVS; benchmarks only),
# VM_TIMEOUT (seconds, default 900), VM_SMP (default 2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${IRONLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ironlb}/ipvs-vm
TEST_RUN=${TEST_RUN:-'TestIPVS|TestAvailable|TestNFTablesConformance'}
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_SMP=${VM_SMP:-2}
BENCH=${BENCH:-}
test_args="-test.run '$TEST_RUN'"
if [ -n "$BENCH" ]; then
  test_args="-test.run '^\$' -test.bench '$BENCH' -test.benchtime ${BENCHTIME:-3x} -test.benchmem"
fi

# What IPVS NAT, the lab and the masquerade rules need beyond what Debian
# builds in; modprobe pulls in the rest of each one's dependencies.
MODULES="crc32c_generic libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack
nf_conntrack_netlink nf_nat nfnetlink nf_tables nft_chain_nat nft_masq nft_nat nft_numgen nft_hash
ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_dh ip_vs_sed
ip_vs_nq ip_vs_mh dummy veth"

log() { echo "ipvs-vm: $*" >&2; }

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null
}

# unpack PACKAGE: apt-get download + dpkg -x into the cache, once.
unpack() {
  local pkg=$1 dir=$CACHE/$1
  if [ ! -f "$dir/.ok" ]; then
    log "downloading $pkg"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$CACHE" && rm -f "${pkg}"_*.deb && apt-get download "$pkg" >/dev/null && dpkg -x "${pkg}"_*.deb "$dir" && rm -f "${pkg}"_*.deb)
    touch "$dir/.ok"
  fi
  echo "$dir"
}

need qemu-system-x86_64 qemu-system-x86
need cpio cpio
mkdir -p "$CACHE"

kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
kver=${kpkg#linux-image-}
kdir=$(unpack "$kpkg")
bbdir=$(unpack busybox-static)

# The uncompressed vmlinux boots through PVH and saves decompressing the
# bzImage under emulation; extract it once (falls back to the bzImage).
kernel=$kdir/boot/vmlinuz-$kver
if [ ! -f "$CACHE/vmlinux-$kver" ]; then
  for magic in '\xfd\x37\x7a\x58\x5a\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dc' '\x1f\x8b\x08:gzip -dc'; do
    sig=${magic%%:*} tool=${magic#*:}
    for off in $(LC_ALL=C grep -obUaP "$sig" "$kernel" 2>/dev/null | cut -d: -f1); do
      # The payload is followed by more of the bzImage: the decompressor
      # complains about trailing data, the ELF header says whether it worked.
      tail -c +$((off + 1)) "$kernel" | $tool >"$CACHE/vmlinux.tmp" 2>/dev/null || true
      if [ "$(head -c 4 "$CACHE/vmlinux.tmp" | tail -c 3)" = ELF ]; then
        mv "$CACHE/vmlinux.tmp" "$CACHE/vmlinux-$kver"
        break 2
      fi
    done
  done
  rm -f "$CACHE/vmlinux.tmp"
fi
[ -f "$CACHE/vmlinux-$kver" ] && kernel=$CACHE/vmlinux-$kver
log "kernel $kver ($(basename "$kernel"))"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/root
mkdir -p "$rootfs"/{bin,dev,proc,sys,tmp,run,etc} "$rootfs/lib/modules/$kver"
cp "$bbdir/bin/busybox" "$rootfs/bin/busybox"

log "building the test binary"
(cd "$ROOT" && GOTOOLCHAIN=local CGO_ENABLED=0 go test -c -o "$rootfs/forwarder.test" ./speaker/forwarder)

# Modules, decompressed on the host so busybox's modprobe needs no xz;
# busybox depmod inside the VM writes modules.dep.
mods=$kdir/lib/modules/$kver
copy_module() {
  local f
  f=$(find "$mods/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -n1)
  [ -n "$f" ] || { grep -q "/$1.ko" "$mods/modules.builtin" 2>/dev/null || log "module $1 not found"; return 0; }
  local rel=${f#"$mods"/}
  rel=${rel%.xz}
  rel=${rel%.zst}
  mkdir -p "$rootfs/lib/modules/$kver/$(dirname "$rel")"
  case $f in
  *.xz) xz -dc "$f" >"$rootfs/lib/modules/$kver/$rel" ;;
  *.zst) zstd -qdc "$f" >"$rootfs/lib/modules/$kver/$rel" ;;
  *) cp "$f" "$rootfs/lib/modules/$kver/$rel" ;;
  esac
  # Follow the module's own dependencies.
  local deps
  deps=$(strings "$rootfs/lib/modules/$kver/$rel" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do
    [ -f "$rootfs/lib/modules/$kver/.$d" ] || { touch "$rootfs/lib/modules/$kver/.$d"; copy_module "$d"; }
  done
}
need strings binutils
for m in $MODULES; do copy_module "$m"; done
find "$rootfs/lib/modules/$kver" -name '.*' -type f -delete
cp "$mods/modules.builtin" "$mods/modules.order" "$rootfs/lib/modules/$kver/" 2>/dev/null || true

cat >"$rootfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/netns
# IPv4 real servers need lo up in the initial namespace too.
ip link set lo up
depmod
failed=
for m in $(echo $MODULES); do modprobe \$m || failed="\$failed \$m"; done
[ -z "\$failed" ] || echo "IRONLB-VM-MODPROBE-FAILED\$failed"
echo "ipvs-vm: booted in \$(cut -d' ' -f1 /proc/uptime)s"
cd /tmp
IRONLB_REQUIRE_IPVS=1 /forwarder.test -test.v -test.count=1 -test.timeout=$((VM_TIMEOUT - 60))s $test_args
echo "IRONLB-VM-RESULT \$?"
poweroff -f
EOF
chmod +x "$rootfs/init"

(cd "$rootfs" && find . | cpio -o -H newc --quiet) >"$work/initrd.cpio"
log "initramfs $(du -h "$work/initrd.cpio" | cut -f1), booting"

start=$(date +%s.%N)
timeout "$VM_TIMEOUT" qemu-system-x86_64 \
  -accel tcg -cpu max -smp "$VM_SMP" -m 1024 \
  -nographic -no-reboot -nic none \
  -kernel "$kernel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 panic=-1 quiet rdinit=/init" | tee "$work/console.log" || true
end=$(date +%s.%N)
log "VM ran $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')s"

rc=$(sed -n 's/.*IRONLB-VM-RESULT \([0-9]*\).*/\1/p' "$work/console.log" | tail -n1)
if [ -z "$rc" ]; then
  log "no result on the console: the VM did not finish"
  exit 1
fi
# A VM that could not load IPVS, or tests that skipped, prove nothing
# whatever their status says.
if failed=$(grep -a 'IRONLB-VM-MODPROBE-FAILED' "$work/console.log"); then
  log "modules did not load in the VM:${failed#*IRONLB-VM-MODPROBE-FAILED}"
  exit 1
fi
if skipped=$(grep -a -- '--- SKIP' "$work/console.log"); then
  log "tests skipped inside the VM, where everything must run:"
  echo "$skipped" >&2
  exit 1
fi
if [ -n "$BENCH" ]; then
  proof='^Benchmark[^ ]*IPVS'
else
  proof='--- PASS: TestIPVS'
fi
if ! grep -aq -e "$proof" "$work/console.log"; then
  log "no line matching '$proof' on the console: no IPVS test ran"
  exit 1
fi
exit "$rc"
