#!/usr/bin/env bash
# A real Slurm (Debian's slurm-wlm) on this one machine for the tests: NNODES slurmd daemons, each in its own
# UTS namespace so `hostname` is its node name, with node names on loopback addresses in /etc/hosts.
#   tests/helpers/slurm_local.sh up|down       (root; installs slurm-wlm and munge with apt-get when missing)
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-/tmp/scaledown-slurm}
NNODES=${NNODES:-2}
CPUS=${CPUS_PER_NODE:-4}
CONF=$DIR/slurm.conf
TAG="# scaledown-slurm-test"

install_slurm() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
}

start_munge() {
  [ -s /etc/munge/munge.key ] || mungekey -c -k /etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 40); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.25; done
  fi
}

up() {
  [ -f "$DIR/slurmctld.pid" ] && down
  install_slurm
  start_munge
  mkdir -p "$DIR"/{state,spool,log}
  sed -i "/$TAG\$/d" /etc/hosts
  for i in $(seq 1 "$NNODES"); do echo "127.0.0.$((10 + i)) node$i $TAG" >> /etc/hosts; done
  cat > "$CONF" <<CONF
ClusterName=scaledowntest
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6917}
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits a credential lifetime before it may start again (120 s by default).
AuthInfo=cred_expire=20
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=4
KillWait=5
NodeName=node[1-$NNODES] NodeHostname=node[1-$NNODES] Port=[17101-$((17100 + NNODES))] CPUs=$CPUS RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  for i in $(seq 1 "$NNODES"); do mkdir -p "$DIR/spool/node$i"; done
  slurmctld -f "$CONF"
  for i in $(seq 1 "$NNODES"); do
    unshare --uts sh -c "hostname node$i; exec slurmd -f '$CONF' -N node$i"
  done
  for _ in $(seq 1 120); do
    idle=$(SLURM_CONF=$CONF sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | grep -c ' idle$' || true)
    [ "$idle" = "$NNODES" ] && { echo "SLURM_CONF=$CONF"; return 0; }
    sleep 0.5
  done
  echo "slurm nodes did not become idle" >&2
  SLURM_CONF=$CONF sinfo -N -R >&2 || true
  return 1
}

down() {
  if [ -f "$CONF" ]; then SLURM_CONF=$CONF scancel --quiet --user=root 2>/dev/null || true; fi
  for f in "$DIR"/slurmd-*.pid "$DIR"/slurmctld.pid; do
    if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  sleep 1
  sed -i "/$TAG\$/d" /etc/hosts
  rm -rf "$DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
