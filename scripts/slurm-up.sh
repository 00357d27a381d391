#!/usr/bin/env bash
# Starts a one-node SLURM cluster on this host, without systemd, for the batch-system tests
# (scripts/test.sh calls it; tests/tests/slurm.rs runs srun and sbatch against it).
#
#   scripts/slurm-up.sh          start it (installing the Debian packages when missing)
#   scripts/slurm-up.sh --check  only say whether it is up (exit 1 if not); never install
#   scripts/slurm-up.sh --down   stop the daemons this script started
#
# Idempotent: when munged, slurmctld and slurmd answer and the node takes jobs it returns in
# well under a second. Otherwise, as root:
#   - installs slurmctld slurmd slurm-client munge (apt-get update first) when missing; the
#     pmix plugin (mpi_pmix.so, in slurm-wlm-basic-plugins) and libpmix2 come with them and
#     with OpenMPI;
#   - starts munged as the munge user (/run/munge made first, owned by munge);
#   - writes /etc/slurm/slurm.conf for one node (refusing to replace a slurm.conf that this
#     script did not write): proctrack/linuxproc, task/none, MpiDefault=pmix, and CPUs=8 with
#     SlurmdParameters=config_overrides, so that 4 ranks fit on a 2-core machine;
#   - starts slurmctld and slurmd directly, and waits until the node is idle.
# Says exactly what is missing when it cannot do this (not root, no apt-get, a daemon that
# does not start: the last lines of its log).
set -euo pipefail

mode=up
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --down) mode=down ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "slurm-up: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

conf=/etc/slurm/slurm.conf
marker="# Written by spillway scripts/slurm-up.sh"
logdir=/var/log/slurm
node=$(hostname -s)
cpus=8

die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# The node is up and takes jobs: munge answers, slurmctld answers, the node is idle/mixed/allocated.
is_up() {
    have sinfo && have munge || return 1
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || return 1
    local state
    state=$(timeout 5 sinfo -h -n "$node" -o %t 2>/dev/null | head -n1) || return 1
    [[ $state == idle* || $state == mix* || $state == alloc* ]]
}

# pid of a running daemon named NAME (an exact process name, never a pattern).
pid_of() { pgrep -x "$1" 2>/dev/null | head -n1; }

stop_daemons() {
    local name pid
    for name in slurmd slurmctld munged; do
        if pid=$(pid_of "$name") && [[ -n $pid ]]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
}

case $mode in
    check) if is_up; then echo "slurm-up: up (node $node)"; exit 0; else echo "slurm-up: not up"; exit 1; fi ;;
    down) [[ $(id -u) -eq 0 ]] || die "--down needs root"; stop_daemons; echo "slurm-up: stopped"; exit 0 ;;
esac

new_conf=$(cat <<EOF
$marker
# One node, no systemd, no cgroups: for Spillway's tests.
ClusterName=spillway
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)

if is_up && [[ -e $conf && $(cat "$conf") == "$new_conf" ]]; then
    echo "slurm-up: already up (node $node, $(sinfo -h -n "$node" -o '%c CPUs, state %t'))"
    exit 0
fi

# --- packages
missing=()
have slurmctld || missing+=(slurmctld)
have slurmd || missing+=(slurmd)
have srun && have sbatch && have scancel || missing+=(slurm-client)
have munged || missing+=(munge)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]] || ! have apt-get; then
        die "missing ${missing[*]}, and cannot install here (need root and apt-get; uid $(id -u)).
slurm-up: install them with:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    echo "slurm-up: installing ${missing[*]}"
    log=$(mktemp -t slurm-up.XXXXXX.log)
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get -o DPkg::Lock::Timeout=300 update -q &&
           apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
         } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get failed (its output is above)"
    fi
    rm -f "$log"
fi
[[ $(id -u) -eq 0 ]] || die "the daemons are not running, and starting them needs root (uid $(id -u))"
plugin_dir=$(dirname "$(find /usr/lib -name 'mpi_pmix.so' -path '*slurm*' 2>/dev/null | head -n1)" 2>/dev/null || true)
[[ -n $plugin_dir && -e $plugin_dir/mpi_pmix.so ]] ||
    die "slurm's pmix plugin (mpi_pmix.so) is missing: install slurm-wlm-basic-plugins"
ls /usr/lib/*/libpmix.so.2* >/dev/null 2>&1 || die "libpmix is missing: install libpmix2"

# --- munge
[[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (reinstall munge, or run mungekey as munge)"
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ -z $(pid_of munged) ]]; then
        runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    fi
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null | unmunge >/dev/null || die "munge does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf
if [[ -e $conf ]] && ! head -n1 "$conf" | grep -qxF "$marker"; then
    die "$conf exists and was not written by this script: not replacing it (move it away to use this one)"
fi
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$logdir"
if [[ ! -e $conf ]] || [[ $(cat "$conf") != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$conf"
    # A changed configuration needs the daemons restarted.
    for name in slurmd slurmctld; do
        if pid=$(pid_of "$name") && [[ -n $pid ]]; then
            kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
fi

# --- daemons
tail_log() { echo "slurm-up: last lines of $1:" >&2; tail -n 15 "$1" >&2 2>/dev/null || true; }
if [[ -z $(pid_of slurmctld) ]]; then
    slurmctld || { tail_log "$logdir/slurmctld.log"; die "slurmctld did not start"; }
fi
for _ in $(seq 100); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
timeout 5 scontrol ping | grep -q UP || { tail_log "$logdir/slurmctld.log"; die "slurmctld does not answer"; }
if [[ -z $(pid_of slurmd) ]]; then
    slurmd || { tail_log "$logdir/slurmd.log"; die "slurmd did not start"; }
fi
for i in $(seq 150); do
    is_up && break
    # A node that went down (a restart of slurmd) comes back once told to.
    if (( i % 20 == 0 )); then scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true; fi
    sleep 0.2
done
if ! is_up; then
    tail_log "$logdir/slurmd.log"
    die "node $node is not idle: $(sinfo -h -n "$node" -o '%t %E' 2>&1)"
fi
echo "slurm-up: up (node $node, $cpus CPUs, MpiDefault=pmix)"
