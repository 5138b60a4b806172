#!/usr/bin/env bash
# What the tests talk to, made ready by `make test` (and so by CI): Redis and PostgreSQL on
# 127.0.0.1 are started when they are installed but stopped, and one line names whatever is
# still missing (its tests skip, and fail under CI=true). Chromium is looked for, not installed:
# .ci/run installs Debian's package; locally, `apt-get install chromium`. The S3 server of the
# storage tests needs nothing here: the tests start moto's server mode (a dev dependency)
# themselves, or use the MinIO that TEST_S3_URL and TEST_S3_ENDPOINT_URL name.
set -uo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  for _ in $(seq 1 50); do answers "$1" && return 0; sleep 0.2; done
  return 1
}

missing=()

if ! answers 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/redis-batchgen-tests.log >/dev/null
    wait_for 6379 && echo "started Redis on 127.0.0.1:6379"
  fi
  answers 6379 || missing+=("Redis on 127.0.0.1:6379 (apt-get install redis-server)")
fi

if [ -z "${TEST_DATABASE_URL:-}" ] && ! answers 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version="$(ls /etc/postgresql | head -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1
    wait_for 5432 && echo "started PostgreSQL $version on 127.0.0.1:5432"
  fi
  answers 5432 || missing+=("PostgreSQL on 127.0.0.1:5432 (apt-get install postgresql)")
fi

if ! [ -x /usr/bin/chromium ]; then
  missing+=("Chromium at /usr/bin/chromium (apt-get install chromium)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  joined="$(printf '%s; ' "${missing[@]}")"
  echo "make test: missing ${joined%; }: their tests skip (and fail under CI=true)."
fi
exit 0
