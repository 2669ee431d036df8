#!/usr/bin/env bash
# The Debian package as an admin uses it, in a scratch root (dpkg --root: the host's own dpkg
# database and /usr are never touched): install, the files and the conffile where they belong,
# the postinst only checks and prints, a container runs through containerd with the installed
# shim, an admin's edit of the conffile survives a reinstall, remove keeps the conffile, purge
# leaves nothing. usage: scripts/package-test.sh [PACKAGE.deb]   (default: build it)
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO_ROOT"
deb=${1:-$(scripts/package.sh | tail -n 1)}
[ -f "$deb" ] || { echo "package-test: no package at $deb" >&2; exit 1; }
PKG=containerd-shim-pvelxc
R=$(mktemp -d /tmp/pkgroot-XXXXXX)
trap 'rm -rf "$R"' EXIT
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
say() { echo "package-test: $*"; }

# A scratch root dpkg can work in: its database starts as a copy of the host's (so Depends on
# containerd and crun are met), and a busybox for the maintainer scripts, which run chrooted.
mkdir -p "$R"/var/lib/dpkg/{info,updates,triggers} "$R"/{bin,sbin,usr/bin,usr/sbin,tmp,etc}
cp /var/lib/dpkg/status "$R/var/lib/dpkg/status"
touch "$R/var/lib/dpkg/available"
cp /bin/busybox "$R/bin/busybox"
for a in sh rm cat echo ls mkdir; do ln -s busybox "$R/bin/$a"; done
DPKG=(dpkg --root="$R" --force-script-chrootless)
# dpkg looks for its helper programs on PATH; --force-script-chrootless runs the maintainer
# scripts with DPKG_ROOT set instead of chrooting (what dpkg offers for such scratch roots).

out=$("${DPKG[@]}" -i "$deb" 2>&1) || fail "dpkg -i: $out"
echo "$out" | sed 's/^/  | /'
grep -q "what this host can run" <<<"$out" || fail "postinst did not run its check"
grep -q '^Status: install ok installed' <<<"$("${DPKG[@]}" -s "$PKG")" || fail "not installed"
for f in usr/bin/containerd-shim-pvelxc-v2 usr/bin/pvelxc-init usr/bin/pvelxc-agent usr/sbin/pvelxc-fetch-kernel; do
    [ -x "$R/$f" ] || fail "$f missing or not executable"
done
for f in usr/bin/pvelxc-init usr/bin/pvelxc-agent; do
    grep -q 'statically linked\|static-pie' <<<"$(file -L "$R/$f")" || fail "$f is not static"
done
cmp -s config/config.toml "$R/etc/pvelxc/config.toml" || fail "/etc/pvelxc/config.toml differs from config/config.toml"
grep -q '^Conffiles:' <<<"$("${DPKG[@]}" -s "$PKG")" || fail "no conffile recorded"
[ -f "$R/usr/share/doc/$PKG/README.md" ] || fail "README not installed"
grep -q 'Version:' <<<"$("$R/usr/bin/containerd-shim-pvelxc-v2" --version)" || fail "--version"
deps=$(dpkg-deb -f "$deb" Depends)
case $deps in *lxc* | *qemu*) fail "the package depends on lxc or qemu: $deps" ;; esac
say "installed: $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version), Depends: $deps"

# The installed shim runs a container through a private containerd (the harness puts the
# shim's directory first on containerd's PATH).
PVELXC_SHIM_DIR=$R/usr/bin cargo test --release --test crun_ctr -- --exact run_rootfs_stdout_stderr_exit_code \
    2>&1 | tee "$R/tmp/run.log" | grep -E '^test |test result' || true
grep -q 'test result: ok. 1 passed' "$R/tmp/run.log" || fail "a container run with the installed shim failed (log above)"

# An admin's edit of the conffile survives a reinstall.
echo '# edited by the admin' >>"$R/etc/pvelxc/config.toml"
out=$("${DPKG[@]}" --force-confold -i "$deb" 2>&1) || fail "reinstall: $out"
grep -q 'edited by the admin' "$R/etc/pvelxc/config.toml" || fail "reinstall lost the admin's config"

# remove: the binaries go, the conffile stays; purge: nothing stays.
"${DPKG[@]}" -r "$PKG" >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e "$R/usr/bin/containerd-shim-pvelxc-v2" ] || fail "remove left the shim"
[ -f "$R/etc/pvelxc/config.toml" ] || fail "remove dropped the conffile"
grep -q '^Status: deinstall ok config-files' <<<"$("${DPKG[@]}" -s "$PKG")" || fail "status after remove"
"${DPKG[@]}" -P "$PKG" >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e "$R/etc/pvelxc" ] || fail "purge left /etc/pvelxc"
left=$(find "$R" -path "$R/var/lib/dpkg" -prune -o -path '*pvelxc*' -print | head -n 5)
[ -z "$left" ] || fail "purge left files: $left"
! "${DPKG[@]}" -s "$PKG" >/dev/null 2>&1 || fail "dpkg still knows the package after purge"
say "ok (install, files, static helpers, conffile, postinst check, a container run, reinstall keeps the admin's config, remove, purge)"
