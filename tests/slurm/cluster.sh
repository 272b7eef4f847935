#!/usr/bin/env bash
# A private single-node SLURM cluster for nlbench's SLURM tests: up | down | status | env.
#
#   tests/slurm/cluster.sh install   # Debian packages (root): slurmctld slurmd slurm-client munge slurmdbd mariadb
#   tests/slurm/cluster.sh up        # start munged, mariadbd, slurmdbd, slurmctld, slurmd (idempotent)
#   eval "$(tests/slurm/cluster.sh env)"   # SLURM_CONF for sbatch/squeue/sacct and the tests
#   tests/slurm/cluster.sh down      # stop the daemons by their recorded PIDs
#
# Everything lives under one root folder ($NLBENCH_SLURM_ROOT, default /tmp/nlbench-slurm):
# configuration, keys, state, spool, database and logs. The daemons run as root (no systemd),
# listen on loopback ports of their own (26817-26819, MariaDB 26306) and know the node by its
# loopback address. Accounting (slurmdbd + MariaDB) is on because submitit needs `sacct` to see
# a job the scheduler killed (without it a cancelled job stays UNKNOWN and `result()` waits
# forever).
set -euo pipefail

ROOT="${NLBENCH_SLURM_ROOT:-/tmp/nlbench-slurm}"
CTLD_PORT="${NLBENCH_SLURM_PORT:-26817}"
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT="${NLBENCH_SLURM_DB_PORT:-26306}"
NODE="$(hostname -s)"
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

pid_of() { cat "$ROOT/run/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local seconds="$1" what="$2"; shift 2
    for _ in $(seq $((seconds * 4))); do
        if timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s; see the logs in $ROOT/log"
}

install() {
    [ "$(id -u)" = 0 ] || die "installing the packages needs root"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

node_binds_loopback() {  # slurmd binds to what the host name resolves to: only where that is loopback
    getent hosts "$NODE" | grep -qE '^(127\.|::1)'
}

write_config() {
    local cpus mem
    cpus="$(nproc)"
    mem="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))"
    mkdir -p "$ROOT"/{etc,run,log,state,spool,munge,db}
    chmod 700 "$ROOT/munge"
    chmod 755 "$ROOT" "$ROOT/run"
    cat > "$ROOT/etc/slurm.conf" <<EOF
ClusterName=nlbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job waits this long before it starts again (SLURM: 120 s).
AuthInfo=socket=$ROOT/run/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/%n
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# slurmdbd clients find munged through the "password" (its socket).
AccountingStoragePass=$ROOT/run/munge.socket
JobCompType=jobcomp/none
MpiDefault=none
# Bind the daemons to their own address (loopback here), not to all interfaces.
CommunicationParameters=$(node_binds_loopback && echo "NoInAddrAny,")NoCtldInAddrAny
ReturnToService=2
# Quick turnaround for tests: a killed job is gone in seconds, not minutes.
KillWait=5
MinJobAge=300
InactiveLimit=0
SchedulerParameters=sched_interval=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$ROOT/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
# cred_expire: a requeued job waits this long before it starts again (SLURM: 120 s).
AuthInfo=socket=$ROOT/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$ROOT/run/slurmdbd.pid
LogFile=$ROOT/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=nlbench
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ROOT/etc/slurmdbd.conf"
    echo "# no cgroups here: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none" > "$ROOT/etc/cgroup.conf"
}

start_munge() {
    alive munged && return 0
    [ -f "$ROOT/munge/munge.key" ] || dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$ROOT/munge/munge.key"
    munged --force --key-file="$ROOT/munge/munge.key" --socket="$ROOT/run/munge.socket" \
        --pid-file="$ROOT/run/munged.pid" --log-file="$ROOT/log/munged.log" --seed-file="$ROOT/munge/seed"
    wait_for 10 munged test -S "$ROOT/run/munge.socket"
}

start_mariadb() {
    alive mariadbd && return 0
    local sock="$ROOT/db/mysqld.sock"
    if [ ! -d "$ROOT/db/data/mysql" ]; then
        mariadb-install-db --user=root --datadir="$ROOT/db/data" --auth-root-authentication-method=socket \
            --skip-test-db >"$ROOT/log/mariadb-install.log" 2>&1
    fi
    mariadbd --user=root --datadir="$ROOT/db/data" --socket="$sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$ROOT/run/mariadbd.pid" --log-error="$ROOT/log/mariadbd.log" --skip-name-resolve \
        --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --socket="$sock" -e "SELECT 1"
    mariadb --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'nlbench';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurm() {
    export SLURM_CONF="$ROOT/etc/slurm.conf"
    if ! alive slurmdbd; then
        slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
        wait_for 30 slurmdbd sacctmgr -i list cluster
    fi
    sacctmgr -i list cluster format=cluster -n | grep -qw nlbench || sacctmgr -i add cluster nlbench >/dev/null
    if ! alive slurmctld; then
        slurmctld -f "$SLURM_CONF"
        wait_for 30 slurmctld scontrol ping
    fi
    if ! alive slurmd; then
        slurmd -f "$SLURM_CONF"
    fi
    wait_for 60 "the node $NODE" sh -c "sinfo -h -N -o '%t' | grep -qE '^(idle|mix|alloc)'"
    # A node that was down (a previous cluster killed hard) comes back.
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
}

up() {
    [ "$(id -u)" = 0 ] || die "the local cluster runs its daemons as root"
    for command in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$command" >/dev/null || die "$command is missing: run '$0 install' (Debian: $PACKAGES)"
    done
    write_config
    start_munge
    start_mariadb
    start_slurm
    say "up: SLURM_CONF=$ROOT/etc/slurm.conf ($(sinfo -h -o '%D node, %c CPUs, %m MB'))"
}

down() {
    local daemon pid
    for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
        pid="$(pid_of "$daemon")"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$ROOT/run/$daemon.pid"
    done
    say "down"
}

status() {
    local daemon
    for daemon in $DAEMONS; do
        if alive "$daemon"; then echo "$daemon running (pid $(pid_of "$daemon"))"; else echo "$daemon stopped"; fi
    done
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$ROOT/etc/slurm.conf" ;;
    purge) down; rm -rf "$ROOT"; say "removed $ROOT" ;;
    *) echo "usage: $0 install|up|down|status|env|purge" >&2; exit 2 ;;
esac
