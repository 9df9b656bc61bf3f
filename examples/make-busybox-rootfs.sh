#!/usr/bin/env bash
# Makes a tiny rootfs from Debian's static busybox: enough to try repeatr.
#   examples/make-busybox-rootfs.sh DIR          -> a directory rootfs
#   examples/make-busybox-rootfs.sh DIR.tar      -> the same as a tar
set -euo pipefail
out=${1:?usage: $0 DIR|FILE.tar}
bb=$(command -v busybox || true)
if [ -z "$bb" ] || ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
  bb=/bin/busybox
  [ -x "$bb" ] || { echo "busybox-static is missing: apt-get install -y busybox-static" >&2; exit 1; }
fi
build_dir() {
  local d=$1
  mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root"
  chmod 1777 "$d/tmp"
  cp "$bb" "$d/bin/busybox"
  for applet in $("$d/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$d/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$d/etc/group"
}
case "$out" in
  *.tar)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    build_dir "$tmp/root"
    tar -C "$tmp/root" -cf "$out" .
    ;;
  *) build_dir "$out" ;;
esac
echo "$out"
