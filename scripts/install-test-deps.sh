#!/usr/bin/env bash
# Installs the Debian tools the test-suite talks to, when they are missing and we are
# root with apt. Never fails the build: a test whose tool is absent skips with a reason.
set -u
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# tests/test_deb.py: build the Debian package (dh-virtualenv) and check it with lintian.
command -v dpkg-buildpackage >/dev/null 2>&1 || need+=(dpkg-dev)
command -v dh >/dev/null 2>&1 || need+=(debhelper)
command -v dh_virtualenv >/dev/null 2>&1 || need+=(dh-virtualenv)
command -v help2man >/dev/null 2>&1 || need+=(help2man)
command -v lintian >/dev/null 2>&1 || need+=(lintian)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: missing ${need[*]} (not root or no apt); the tests that need them will skip"
    exit 0
fi
echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg of this machine instead of failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=300)
apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || true
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "test-deps: apt-get install ${need[*]} failed; the tests that need them will skip"
exit 0
