#!/usr/bin/env bash
# Throwaway single-node Slurm cluster for hpcmarker's integration tests.
#
#   bash scripts/slurm-test-cluster.sh up|down|status|env|clean
#
#   up      install Debian 12 packages if missing (slurm-wlm 22.05, slurmdbd,
#           munge, mariadb-server), write the config, (re)start munged,
#           mariadbd, slurmdbd, slurmctld and slurmd, register the cluster in
#           accounting, wait until the node is idle and sacct answers, then
#           print `export SLURM_CONF=...` on stdout.  Idempotent: healthy
#           daemons are kept, dead or unresponsive ones are restarted, and all
#           Slurm daemons are restarted when the generated config changed.
#   down    cancel all jobs, stop the daemons (pid files in the folder).
#   status  show each daemon and `sinfo`; exit 0 only when the cluster works.
#   env     print `export SLURM_CONF=<folder>/slurm.conf`, for
#           eval "$(bash scripts/slurm-test-cluster.sh env)"
#   clean   `down`, then delete the folder (state, logs, accounting database).
#
# Must run as root.  Needs no systemd: daemons are started directly.  All
# config, state, logs, pid files, the munge key/socket and a private MariaDB
# data directory live in $HPCMARKER_SLURM_DIR (default /var/tmp/hpcmarker-slurm);
# /etc/slurm and the system munge/mariadb instances are not touched.
#
# Cluster shape: node `hostname -s` (NodeAddr 127.0.0.1) with CPUs=8 (more than
# the real cores, via SlurmdParameters=config_overrides) and Gres=gpu:4 backed
# by fake character devices /dev/hpcmarker-fakegpu0..3 (copies of /dev/null,
# major 1 minor 3); each --gres=gpu:1 job gets its own CUDA_VISIBLE_DEVICES.
# Partitions `gpu` (default), `debug`, `scavenger` (preemptible) and `urgent` (preempts scavenger)
# share the node; no time limits.
# Accounting through slurmdbd + MariaDB so `sacct -j ID` works for finished
# jobs (slurmdbd has no -f option: it reads dirname($SLURM_CONF)/slurmdbd.conf).
#
# Environment overrides: HPCMARKER_SLURM_DIR, HPCMARKER_SLURM_TIMEOUT (seconds
# per waiting step, default 90), HPCMARKER_SLURM_CPUS (default 8),
# HPCMARKER_SLURM_PROCTRACK (default proctrack/cgroup if the cgroup v1 freezer
# is writable, else proctrack/pgid), HPCMARKER_SLURM_DB_PORT (3307),
# HPCMARKER_SLURM_CTLD_PORT (6817), HPCMARKER_SLURM_SLURMD_PORT (6818),
# HPCMARKER_SLURM_DBD_PORT (6819).
#
# More clusters on the one machine: HPCMARKER_SLURM_INSTANCE=K (default 1) gives instance K its own
# folder (/var/tmp/hpcmarker-slurm-K), ports (each default + 10*(K-1); the database's + K-1), cluster name
# (hpcmarker-K) and job ids (from (K-1)*1000000+1, so no two jobs share a cgroup or a log name), with the
# same node name, fake GPUs and shape.  Each is a whole cluster (its own munged, MariaDB, slurmdbd, slurmctld,
# slurmd): a node failure or a full node on one never touches another.  CI runs the Slurm tests on two
# (scripts/test.sh --split, HPCMARKER_SLURM_CONFS).
set -euo pipefail

INSTANCE="${HPCMARKER_SLURM_INSTANCE:-1}"
[[ "$INSTANCE" =~ ^[1-9]$ ]] || { echo "HPCMARKER_SLURM_INSTANCE=$INSTANCE: a number from 1 to 9" >&2; exit 2; }
SHIFT=$((INSTANCE - 1))
if ((SHIFT)); then
    DEFAULT_DIR="/var/tmp/hpcmarker-slurm-$INSTANCE"
    CLUSTER="hpcmarker-$INSTANCE"
else
    DEFAULT_DIR=/var/tmp/hpcmarker-slurm
    CLUSTER=hpcmarker
fi
DIR="${HPCMARKER_SLURM_DIR:-$DEFAULT_DIR}"
DIR="$(realpath -m -- "$DIR")"
TIMEOUT="${HPCMARKER_SLURM_TIMEOUT:-90}"
NCPUS="${HPCMARKER_SLURM_CPUS:-8}"
NGPUS=4
DB_PORT="${HPCMARKER_SLURM_DB_PORT:-$((3307 + SHIFT))}"
CTLD_PORT="${HPCMARKER_SLURM_CTLD_PORT:-$((6817 + 10 * SHIFT))}"
SLURMD_PORT="${HPCMARKER_SLURM_SLURMD_PORT:-$((6818 + 10 * SHIFT))}"
DBD_PORT="${HPCMARKER_SLURM_DBD_PORT:-$((6819 + 10 * SHIFT))}"
FIRST_JOB_ID=$((SHIFT * 1000000 + 1))
PROCTRACK="${HPCMARKER_SLURM_PROCTRACK:-}" # default: see choose_proctrack
DB_NAME=slurm_acct_db
DB_USER=slurm
GPU_DEV_PREFIX=/dev/hpcmarker-fakegpu
NODE="$(hostname -s)"

RUN="$DIR/run"
LOGDIR="$DIR/log"
MUNGE_SOCKET="$RUN/munge.socket"
DB_SOCKET="$RUN/mysqld.sock"
DATADIR="$DIR/mysql"

export SLURM_CONF="$DIR/slurm.conf"
# Never let a caller's settings redirect our clients elsewhere.
unset SLURM_CLUSTERS SQUEUE_FORMAT SINFO_FORMAT SACCT_FORMAT 2>/dev/null || true

# Daemons: name -> executable.  Order matters for start (and reversed for stop).
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf '[slurm-test-cluster] %s\n' "$*" >&2; }

dump_logs() {
    local f
    for f in "$LOGDIR"/*.log; do
        [[ -s "$f" ]] || continue
        printf '\n----- last 25 lines of %s -----\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

die() {
    log "ERROR: $*"
    dump_logs
    exit 1
}

need_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (daemons run as root, devices are created with mknod)"
}

# ---------------------------------------------------------------- processes --

# PIDs of our instance of daemon $1: the pid file's pid if it is alive and
# really that executable, plus any process of that executable whose command
# line or environment mentions our folder (covers lost pid files).
daemon_pids() {
    local name="$1" exe pid p
    # Debian installs /usr/sbin/slurmctld etc. as alternatives symlinks to *-wlm.
    exe="$(readlink -f "/usr/sbin/$name")"
    local -A seen=()
    if [[ -r "$RUN/$name.pid" ]]; then
        pid="$(tr -dc "0-9" 2>/dev/null <"$RUN/$name.pid" || true)"
        if [[ -n "$pid" && "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$exe" ]]; then
            seen[$pid]=1
        fi
    fi
    for p in /proc/[0-9]*; do
        [[ "$(readlink "$p/exe" 2>/dev/null || true)" == "$exe" ]] || continue
        if grep -qazF -- "$DIR/" "$p/cmdline" 2>/dev/null ||
            grep -qazxF -- "SLURM_CONF=$SLURM_CONF" "$p/environ" 2>/dev/null; then
            seen[${p#/proc/}]=1
        fi
    done
    # Report only the top of each process tree (slurmctld forks slurmscriptd).
    local ppid
    for pid in "${!seen[@]}"; do
        ppid="$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
        [[ -n "$ppid" && -n "${seen[$ppid]:-}" ]] && continue
        echo "$pid"
    done
    return 0
}

is_running() { [[ -n "$(daemon_pids "$1")" ]]; }

stop_daemon() {
    local name="$1" pids i
    pids="$(daemon_pids "$name")"
    if [[ -z "$pids" ]]; then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    log "stopping $name (pid $(echo $pids))"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        is_running "$name" || break
        sleep 0.1
    done
    pids="$(daemon_pids "$name")"
    if [[ -n "$pids" ]]; then
        log "$name did not stop after 15 s, sending SIGKILL"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$RUN/$name.pid"
}

# Start a command detached from us: new session, stdio to the log file, and
# the lock fd (9) closed so a daemon never holds our lock or a caller's pipe.
spawn() {
    local logfile="$1"
    shift
    setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    disown $! 2>/dev/null || true
}

# Fail fast (instead of timing out) when another process already listens.
port_free() {
    local port="$1" what="$2"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port ($what) is already in use by another process (another cluster? see HPCMARKER_SLURM_*_PORT)"
    fi
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND (a health-check
# function that bounds its own run time) until it succeeds.
wait_for() {
    local desc="$1" secs="$2" deadline
    shift 2
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    die "timed out after ${secs}s waiting for $desc"
}

# ----------------------------------------------------------------- install --

install_packages() {
    local missing=() b
    for b in slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr munged munge mariadbd mariadb-install-db mariadb-admin mariadb; do
        command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] || missing+=("$b")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
    log "installing packages (missing: ${missing[*]})"
    local created_policy=0
    # Keep the packages' init scripts from starting daemons with default config.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -q &&
            timeout 900 apt-get install -y -q --no-install-recommends \
                -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confold \
                slurm-wlm slurmdbd munge mariadb-server mariadb-client
    } >>"$LOGDIR/apt.log" 2>&1 || rc=$?
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    if ((rc != 0)); then
        tail -n 30 "$LOGDIR/apt.log" >&2 || true
        die "package installation failed (rc=$rc), see $LOGDIR/apt.log"
    fi
    for b in slurmctld slurmd slurmdbd munged mariadbd; do
        [[ -x "/usr/sbin/$b" ]] || die "/usr/sbin/$b missing after installation"
    done
    log "packages installed: $(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo '?') (slurm)"
}

# ------------------------------------------------------------------ config --

CHANGED_SLURM=0
CHANGED_DBD=0

# put_file DEST MODE KIND < content: write only when different; record change.
put_file() {
    local dest="$1" mode="$2" kind="$3" tmp
    tmp="$(mktemp "$dest.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
        return 0
    fi
    mv -f "$tmp" "$dest"
    case "$kind" in
        slurm) CHANGED_SLURM=1 ;;
        dbd) CHANGED_DBD=1 ;;
    esac
}

make_dirs() {
    mkdir -p "$DIR" "$RUN" "$LOGDIR" "$DIR/state" "$DIR/spool" "$DIR/munge"
    chmod 755 "$DIR" "$RUN" "$LOGDIR"
    chmod 700 "$DIR/munge"
    # munged refuses a socket dir writable by others (e.g. a 1777 parent is OK,
    # a 0777 one is not); keep our own dirs 755.
}

# Process tracking (what scancel kills).  proctrack/cgroup (cgroup v1 freezer)
# when /sys/fs/cgroup/freezer is a writable v1 hierarchy: nothing escapes, and
# a cancelled job is gone in ~1-3 s.  Otherwise proctrack/pgid: no leaks
# either, but it waits for zombies to be reaped, ~3-7 s here.
# (proctrack/linuxproc leaked a `sleep` in ~1 of 10 "cancel right after the
# task started" rounds, so it is not the default.)
choose_proctrack() {
    [[ -n "$PROCTRACK" ]] && return 0
    local probe=/sys/fs/cgroup/freezer/hpcmarker-probe-$$
    if [[ "$(stat -f -c %T /sys/fs/cgroup/freezer 2>/dev/null || true)" == cgroupfs ]] &&
        mkdir "$probe" 2>/dev/null; then
        rmdir "$probe" 2>/dev/null || true
        PROCTRACK=proctrack/cgroup
    else
        PROCTRACK=proctrack/pgid
    fi
}

make_gpu_devices() {
    local i dev
    for ((i = 0; i < NGPUS; i++)); do
        dev="$GPU_DEV_PREFIX$i"
        if [[ -e "$dev" && ! -c "$dev" ]]; then
            rm -f "$dev"
        fi
        if [[ -c "$dev" && "$(stat -c '%t:%T' "$dev")" != "1:3" ]]; then
            rm -f "$dev"
        fi
        [[ -c "$dev" ]] || mknod -m 0666 "$dev" c 1 3 || die "mknod $dev failed"
    done
}

write_config() {
    local mem_kb real_mem dbpass
    mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    # A bit below the machine's memory (90 %, in MB).
    real_mem=$((mem_kb / 1024 * 9 / 10))

    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$DIR/munge/munge.key"

    if [[ ! -s "$DIR/db.password" ]]; then
        (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$DIR/db.password")
    fi
    chmod 600 "$DIR/db.password"
    dbpass="$(cat "$DIR/db.password")"

    put_file "$DIR/slurm.conf" 644 slurm <<EOF
# Generated by scripts/slurm-test-cluster.sh -- do not edit (rewritten by 'up').
ClusterName=$CLUSTER
FirstJobId=$FIRST_JOB_ID
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a job credential's lifetime, and so how long a requeued job waits before it may start again
# (cred_expire + 1 s; 121 s by default). 30 s, as Slurm's own test suite uses: the fault suite's node failure
# waits for it (tests/slurm/test_fault_suite.py).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
MailProg=/bin/true

# No cgroups: plain process tracking, no task binding.
ProctrackType=$PROCTRACK
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none

# Scheduling: fast for tests.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2,sched_min_interval=100000,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SlurmctldParameters=preempt_send_user_signal
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=120
InactiveLimit=0
MinJobAge=30
KillWait=5
UnkillableStepTimeout=30
MessageTimeout=10
Waittime=0

# Accounting (sacct) through slurmdbd + MariaDB.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# For connections to slurmdbd the munge socket is taken from here, not AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu

GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$NCPUS RealMemory=$real_mem Gres=gpu:$NGPUS State=UNKNOWN
# Preemption (issue 21): a job in \`urgent\` requeues jobs in \`scavenger\` that hold what it needs;
# they get their --signal at once (SlurmctldParameters=preempt_send_user_signal) and GraceTime seconds to drain. Jobs in \`gpu\`
# and \`debug\` are never preempted.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=debug Nodes=$NODE Default=NO MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=scavenger Nodes=$NODE Default=NO MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=urgent Nodes=$NODE Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF

    put_file "$DIR/gres.conf" 644 slurm <<EOF
# Generated by scripts/slurm-test-cluster.sh: $NGPUS fake GPUs (character devices, = /dev/null).
NodeName=$NODE AutoDetect=off Name=gpu File=${GPU_DEV_PREFIX}[0-$((NGPUS - 1))]
EOF

    # Only read with ProctrackType=proctrack/cgroup (cgroup v1 freezer).
    put_file "$DIR/cgroup.conf" 644 slurm <<EOF
# Generated by scripts/slurm-test-cluster.sh
CgroupPlugin=autodetect
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
ConstrainDevices=no
EOF

    # Empty plugstack.conf: keeps /etc/slurm/plugstack.conf.d out of the picture.
    put_file "$DIR/plugstack.conf" 644 slurm </dev/null

    put_file "$DIR/slurmdbd.conf" 600 dbd <<EOF
# Generated by scripts/slurm-test-cluster.sh -- slurmdbd reads it from dirname(\$SLURM_CONF).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOGDIR/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$dbpass
StorageLoc=$DB_NAME
EOF
}

# ----------------------------------------------------------------- daemons --

# Health checks (each bounded by `timeout`, quiet; exit 0 when healthy).
munge_ok() { timeout 10 munge -S "$MUNGE_SOCKET" -n </dev/null 2>/dev/null | timeout 10 unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
db_ok() { timeout 10 mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1; }
dbd_ok() { timeout 10 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
ctld_ok() { timeout 10 scontrol ping 2>/dev/null | grep 'is UP' >/dev/null; }
slurmd_ok() { timeout 10 scontrol show slurmd 2>/dev/null | grep . >/dev/null; }

start_munged() {
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    spawn "$LOGDIR/munged.out" /usr/sbin/munged --force \
        --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOGDIR/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    wait_for "munged" "$TIMEOUT" munge_ok
}

start_mariadbd() {
    port_free "$DB_PORT" mariadbd
    if [[ ! -f "$DATADIR/.hpcmarker-initialized" ]]; then
        log "initialising MariaDB data directory $DATADIR"
        rm -rf "$DATADIR"
        mkdir -p "$DATADIR"
        mariadb-install-db --no-defaults --user=root --datadir="$DATADIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            >>"$LOGDIR/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed, see $LOGDIR/mariadb-install.log"
        touch "$DATADIR/.hpcmarker-initialized"
    fi
    rm -f "$DB_SOCKET"
    spawn "$LOGDIR/mariadb.log" /usr/sbin/mariadbd --no-defaults --user=root \
        --datadir="$DATADIR" --socket="$DB_SOCKET" --pid-file="$RUN/mariadbd.pid" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$LOGDIR/mariadb.log" \
        --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
        --innodb-flush-log-at-trx-commit=2 --max-connections=100
    wait_for "mariadbd" "$TIMEOUT" db_ok
}

setup_database() {
    local dbpass
    dbpass="$(cat "$DIR/db.password")"
    timeout 30 mariadb --no-defaults --socket="$DB_SOCKET" -u root <<EOF >>"$LOGDIR/mariadb-setup.log" 2>&1 ||
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$dbpass';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$dbpass';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$dbpass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$dbpass';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
        die "creating the accounting database/user failed, see $LOGDIR/mariadb-setup.log"
}

start_slurmdbd() {
    port_free "$DBD_PORT" slurmdbd
    spawn "$LOGDIR/slurmdbd.out" /usr/sbin/slurmdbd
    wait_for "slurmdbd (sacctmgr show cluster)" "$TIMEOUT" dbd_ok
}

register_cluster() {
    if ! timeout 10 sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then
        log "registering cluster '$CLUSTER' in accounting"
        timeout 30 sacctmgr -i add cluster "$CLUSTER" >>"$LOGDIR/sacctmgr.log" 2>&1 ||
            die "sacctmgr add cluster failed, see $LOGDIR/sacctmgr.log"
    fi
}

start_slurmctld() {
    port_free "$CTLD_PORT" slurmctld
    spawn "$LOGDIR/slurmctld.out" /usr/sbin/slurmctld -f "$SLURM_CONF"
    wait_for "slurmctld (scontrol ping)" "$TIMEOUT" ctld_ok
}

start_slurmd() {
    port_free "$SLURMD_PORT" slurmd
    mkdir -p "$DIR/spool/slurmd-$NODE"
    spawn "$LOGDIR/slurmd.out" /usr/sbin/slurmd -f "$SLURM_CONF"
    wait_for "slurmd (scontrol show slurmd)" "$TIMEOUT" slurmd_ok
}

# ensure NAME HEALTHCHECK FORCE_RESTART
ensure() {
    local name="$1" check="$2" force="$3"
    if is_running "$name"; then
        if ((force)); then
            log "$name: configuration changed, restarting"
            stop_daemon "$name"
        elif ! "$check"; then
            log "$name: running but not answering, restarting"
            stop_daemon "$name"
        else
            log "$name: already running (pid $(daemon_pids "$name" | paste -sd' '))"
            return 0
        fi
    else
        rm -f "$RUN/$name.pid"
    fi
    log "$name: starting"
    "start_$name"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

wait_node_idle() {
    local deadline=$((SECONDS + TIMEOUT)) st="" resumed=0
    while ((SECONDS < deadline)); do
        st="$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)"
        case "$st" in
            idle | mixed | allocated | completing) return 0 ;;
            *drain* | down | fail* | *inval*)
                if ((resumed < 3)); then
                    log "node $NODE is '$st', resuming it"
                    timeout 10 scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        sleep 0.5
    done
    timeout 10 scontrol show node "$NODE" >&2 || true
    die "timed out after ${TIMEOUT}s waiting for node $NODE to become idle (state: '${st:-unknown}')"
}

ctld_registered_in_dbd() {
    timeout 10 sacctmgr -n -P show cluster "$CLUSTER" format=controlhost 2>/dev/null | grep '[0-9]' >/dev/null
}

sacct_ok() { timeout 10 sacct -n -X -P -o JobID -S now-1hours >/dev/null 2>&1; }

# ---------------------------------------------------------------- commands --

cmd_up() {
    need_root
    local t0=$SECONDS
    make_dirs
    exec 9>"$DIR/.lock"
    flock -w $((TIMEOUT * 6)) 9 || die "another '$0 up/down' holds $DIR/.lock"
    install_packages
    make_gpu_devices
    choose_proctrack
    write_config
    ensure munged munge_ok 0
    ensure mariadbd db_ok 0
    setup_database
    ensure slurmdbd dbd_ok "$CHANGED_DBD"
    register_cluster
    ensure slurmctld ctld_ok "$CHANGED_SLURM"
    ensure slurmd slurmd_ok "$CHANGED_SLURM"
    wait_node_idle
    wait_for "slurmctld to register with slurmdbd" "$TIMEOUT" ctld_registered_in_dbd
    wait_for "sacct" "$TIMEOUT" sacct_ok
    log "cluster '$CLUSTER' is up in $((SECONDS - t0))s (node $NODE: $(node_state), $PROCTRACK); logs in $LOGDIR"
    echo "export SLURM_CONF=$SLURM_CONF"
}

cmd_down() {
    need_root
    [[ -d "$DIR" ]] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    exec 9>"$DIR/.lock"
    flock -w $((TIMEOUT * 6)) 9 || die "another '$0 up/down' holds $DIR/.lock"
    if is_running slurmctld && ctld_ok; then
        if [[ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]]; then
            log "cancelling all jobs"
            timeout 10 scancel --user=root >/dev/null 2>&1 || true
            local t
            for ((t = 0; t < 40; t++)); do
                [[ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
    fi
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    # Job steps left behind by slurmd (their environment names our SLURM_CONF),
    # with all their descendants (the jobs' processes).
    local p stepd left=()
    stepd="$(readlink -f /usr/sbin/slurmstepd)"
    for p in /proc/[0-9]*; do
        [[ "$(readlink "$p/exe" 2>/dev/null || true)" == "$stepd" ]] || continue
        grep -qazxF -- "SLURM_CONF=$SLURM_CONF" "$p/environ" 2>/dev/null || continue
        left+=("${p#/proc/}")
    done
    if ((${#left[@]})); then
        local all=("${left[@]}") frontier=("${left[@]}") next c
        while ((${#frontier[@]})); do
            next=()
            for p in "${frontier[@]}"; do
                for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
                    next+=("$c")
                done
            done
            all+=("${next[@]}")
            frontier=("${next[@]}")
        done
        log "killing leftover job steps and their processes: ${all[*]}"
        kill -KILL "${all[@]}" 2>/dev/null || true
    fi
    log "stopped"
}

cmd_status() {
    local ok=0 name pids
    for name in "${DAEMONS[@]}"; do
        pids="$(daemon_pids "$name" | paste -sd' ')"
        if [[ -n "$pids" ]]; then
            printf '%-10s up   (pid %s)\n' "$name" "$pids"
        else
            printf '%-10s DOWN\n' "$name"
            ok=1
        fi
    done
    if ! timeout 10 sinfo; then
        ok=1
    fi
    local st
    st="$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)"
    case "$st" in
        idle | mixed | allocated | completing) ;;
        *) echo "node $NODE state: '${st:-unknown}' (not usable)"; ok=1 ;;
    esac
    if sacct_ok; then
        echo "sacct: OK"
    else
        echo "sacct: FAILING"
        ok=1
    fi
    echo "SLURM_CONF=$SLURM_CONF"
    return $ok
}

cmd_env() { echo "export SLURM_CONF=$SLURM_CONF"; }

cmd_clean() {
    cmd_down
    exec 9>&-
    log "removing $DIR"
    rm -rf -- "$DIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    *)
        echo "usage: $0 up|down|status|env|clean" >&2
        exit 2
        ;;
esac
