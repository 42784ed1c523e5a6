#!/bin/sh
# Unpacks the development zoo (data/zoo/zoo-dev.tar.xz: 22 ONNX CNNs, about 850 MB unpacked) into DEST
# (default: target/zoo-dev under the repository root).
#
# Idempotent, and safe when several processes run it at once (test binaries do): it unpacks into a fresh
# folder beside DEST and renames that into place, so DEST is either absent or complete. A stamp in DEST
# (the archive's SHA-256) tells a complete unpack of this archive from an older or partial one.
# Usage: scripts/unpack-zoo.sh [DEST]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
archive="$root/data/zoo/zoo-dev.tar.xz"
dest=${1:-$root/target/zoo-dev}
stamp=$(sha256sum "$archive" | cut -d' ' -f1)
ready() { [ "$(cat "$dest/.unpacked" 2>/dev/null)" = "$stamp" ]; }
if ready; then exit 0; fi

parent=$(dirname "$dest")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.zoo-dev.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xJf "$archive" -C "$tmp" --strip-components=1
echo "$stamp" >"$tmp/.unpacked"
chmod 755 "$tmp"

if [ -e "$dest" ] && ! ready; then
  # An unpack of another archive, or one cut short before stamps existed: move it aside, then delete it.
  old=$(mktemp -d "$parent/.zoo-dev-old.XXXXXX")
  mv -T "$dest" "$old/zoo" 2>/dev/null || true
  rm -rf "$old"
fi
# rename(2) fails on a non-empty DEST: another process got there first, which is as good.
if mv -T "$tmp" "$dest" 2>/dev/null; then
  echo "unpacked $(ls "$dest"/*.onnx | wc -l) models into $dest"
elif ! ready; then
  echo "unpack-zoo: cannot move the unpacked zoo into $dest" >&2
  exit 1
fi
