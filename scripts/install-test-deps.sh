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
# tests/rt.py: a Request Tracker 5 of the tests' own (standalone server, SQLite). Installed
# apart from the rest (about 200 packages): its failure must not cost the others.
rt=()
{ [ -x /usr/sbin/rt-setup-database-5 ] && [ -d /usr/share/request-tracker5/lib ] \
    && perl -MDBD::SQLite -MPlack::Handler::Starlet -e1 >/dev/null 2>&1; } \
    || rt=(request-tracker5 rt5-db-sqlite rt5-standalone)
[ ${#need[@]} -eq 0 ] && [ ${#rt[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: missing ${need[*]} ${rt[*]} (not root or no apt); the tests that need them will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg of this machine instead of failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=300)
apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || true
if [ ${#need[@]} -gt 0 ]; then
    echo "test-deps: installing ${need[*]}"
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || echo "test-deps: apt-get install ${need[*]} failed; the tests that need them will skip"
fi
if [ ${#rt[@]} -gt 0 ]; then
    echo "test-deps: installing ${rt[*]}"
    # The tests run RT on a site config and SQLite file of their own (tests/rt.py): the
    # package must not create a database (dbconfig-common) nor install cron jobs.
    printf '%s\n' \
        'request-tracker5 request-tracker5/dbconfig-install boolean false' \
        'request-tracker5 request-tracker5/install-cronjobs boolean false' \
        | debconf-set-selections
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${rt[@]}" >/dev/null 2>&1 \
        || echo "test-deps: apt-get install ${rt[*]} failed; tests/test_rt_server.py will skip"
fi
exit 0
