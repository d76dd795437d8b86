#!/usr/bin/env bash
# Build the Vessel guest kernel from Debian's linux-source-6.12, or return the
# cached build.
#
#   kernel-config/build.sh            # prints the path of vmlinux as the last line
#
# The cache key is a hash of the source package version, this script, every
# fragment and every patch. A hit returns at once. Builds share one source tree
# per (source version, patch set), so changing only a fragment rebuilds
# incrementally. Everything but the final path goes to stderr.
#
# Environment:
#   VESSEL_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/vessel)
#   VESSEL_KERNEL_JOBS  make -j value (default: nproc)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pkg=linux-source-6.12
tarball=/usr/src/linux-source-6.12.tar.xz
cache_root=${VESSEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vessel}
cache=$cache_root/kernel
jobs=${VESSEL_KERNEL_JOBS:-$(nproc)}

log() { printf 'kernel-config: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) ||
  die "$pkg is not installed (apt-get install $pkg)"
[[ -r $tarball ]] || die "$tarball is missing; reinstall $pkg"

shopt -s nullglob
fragments=("$here"/fragments/*.config)
patches=("$here"/patches/*.patch)
((${#fragments[@]})) || die "no fragments in $here/fragments"

hash_of() { sha256sum | cut -c1-16; }
patch_key=$( { echo "$srcver"; for p in "${patches[@]}"; do echo "== ${p##*/}"; cat "$p"; done; } | hash_of)
key=$( { echo "$patch_key"; cat "$here/build.sh";
         for f in "${fragments[@]}"; do echo "== ${f##*/}"; cat "$f"; done; } | hash_of)
out=$cache/$key

if [[ -f $out/.complete ]]; then
  log "cached: $out"
  echo "$out/vmlinux"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
log "waiting for the build lock" ; flock 9
if [[ -f $out/.complete ]]; then   # another process built it while we waited
  echo "$out/vmlinux"
  exit 0
fi

start=$(date +%s)
tree=$cache/tree-$patch_key
if [[ ! -f $tree/.prepared ]]; then
  log "extracting $pkg $srcver into $tree"
  rm -rf "$tree"
  mkdir -p "$tree"
  tar -xf "$tarball" -C "$tree" --strip-components=1
  for p in "${patches[@]}"; do
    log "applying ${p##*/}"
    patch -d "$tree" -p1 --forward --quiet < "$p" >&2 || die "patch ${p##*/} does not apply to $srcver"
  done
  touch "$tree/.prepared"
fi

# Fragments carry one comment per option; Kconfig wants only the assignments.
grep -h -E '^CONFIG_[A-Za-z0-9_]+=' "${fragments[@]}" > "$tree/vessel.config"
log "configuring (allnoconfig + fragments)"
make -C "$tree" -s KCONFIG_ALLCONFIG=vessel.config allnoconfig >&2

# Kconfig drops an option silently when a dependency is missing: refuse that.
bad=0
while IFS='=' read -r sym want; do
  if [[ $want == n ]]; then
    grep -q -E "^$sym=" "$tree/.config" && { log "$sym wanted n, but is set"; bad=1; }
  else
    grep -q -x "$sym=$want" "$tree/.config" || {
      got=$(grep -E "^$sym=|^# $sym is not set" "$tree/.config" || echo "absent")
      log "$sym wanted $want, got: $got"; bad=1; }
  fi
done < "$tree/vessel.config"
((bad == 0)) || die "the fragments ask for options Kconfig did not grant (see above)"

log "building vmlinux and bzImage with -j$jobs"
make -C "$tree" -s -j"$jobs" vmlinux bzImage >&2

tmp=$out.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$tree/vmlinux" "$tree/arch/x86/boot/bzImage" "$tree/.config" "$tmp/"
echo "$srcver" > "$tmp/source-version"
rm -rf "$out"
mv "$tmp" "$out"
touch "$out/.complete"
log "built in $(( $(date +%s) - start )) s: $(du -h "$out/vmlinux" | cut -f1) vmlinux, $(du -h "$out/bzImage" | cut -f1) bzImage"
echo "$out/vmlinux"
