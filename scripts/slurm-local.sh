#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster (with accounting) on this machine.
#
#   scripts/slurm-local.sh up       install packages if missing, start everything
#   scripts/slurm-local.sh down     stop the daemons this script started
#   scripts/slurm-local.sh status   show daemon state and sinfo (exit 0 iff all up)
#   scripts/slurm-local.sh env      print `export SLURM_CONF=...` and how to sweep on it
#
# Usage from a shell:   eval "$(scripts/slurm-local.sh env)"; sbatch --wrap hostname
# ptexp sweeps on it:   ptexp-train -m ... hydra/launcher=slurm_local  (no GPU, 1 CPU, 2 GB per job)
#
# Target: Debian 12 (SLURM 22.05), run as root, no systemd needed.  Every piece
# of state (configs, munge key/socket, MariaDB datadir, spool, logs, pid files)
# lives under ${PTEXP_SLURM_DIR:-/tmp/ptexp-slurm}.  Nothing under /etc is
# written; clients find the cluster through SLURM_CONF.
#
# Optional environment:
#   PTEXP_SLURM_DIR      state folder                   (default /tmp/ptexp-slurm)
#   PTEXP_SLURM_DB_PORT  MariaDB TCP port on 127.0.0.1  (default 6820)
#   PTEXP_SLURM_TIMEOUT  seconds to wait for the node   (default 60)
set -euo pipefail

STATE_DIR="$(realpath -m "${PTEXP_SLURM_DIR:-/tmp/ptexp-slurm}")"
DB_PORT="${PTEXP_SLURM_DB_PORT:-6820}"
UP_TIMEOUT="${PTEXP_SLURM_TIMEOUT:-60}"
CLUSTER=ptexp
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
# Stop order; start order is the reverse.
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

ETC="$STATE_DIR/etc"
RUN="$STATE_DIR/run"
LOG="$STATE_DIR/log"
SPOOL="$STATE_DIR/spool"
MUNGE_DIR="$STATE_DIR/munge"
MYSQL_DIR="$STATE_DIR/mysql"
SLURM_CONF_FILE="$ETC/slurm.conf"
SLURMDBD_CONF_FILE="$ETC/slurmdbd.conf"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
MYSQL_SOCKET="$MYSQL_DIR/mysqld.sock"
# Every daemon is started with this in its environment; `down` only signals
# processes that carry it, so unrelated processes are never touched.
MARKER="PTEXP_SLURM_INSTANCE=$STATE_DIR"

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
  [[ "$(id -u)" == 0 ]] || die "'$1' must run as root"
}

pid_file() {
  case "$1" in
    munged) echo "$MUNGE_DIR/munged.pid" ;;
    mariadbd) echo "$MYSQL_DIR/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
  esac
}

log_file() {
  case "$1" in
    munged) echo "$MUNGE_DIR/munged.log" ;;
    mariadbd) echo "$MYSQL_DIR/mariadbd.log" ;;
    *) echo "$LOG/$1.log" ;;
  esac
}

# True if $2 is a live process named $1 that this script started (marker).
is_ours() {
  local name="$1" pid="$2" comm
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/comm" ]] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ "$comm" == "$name"* ]] || return 1
  # A zombie (exited, not yet reaped) counts as stopped.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  # Only root can read a daemon's environment; 'status' as another user
  # trusts the pid file and the process name.
  [[ "$(id -u)" == 0 ]] || return 0
  { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "$MARKER"
}

# Prints the pid of daemon $1 if it is running (per its pid file), else fails.
daemon_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -s "$f" && -r "$f" ]] || return 1
  pid="$(tr -dc '0-9' <"$f")"
  is_ours "$1" "$pid" || return 1
  echo "$pid"
}

is_up() { daemon_pid "$1" >/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s.
wait_for() {
  local secs="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

fail_with_log() {
  local daemon="$1" msg="$2" f
  f="$(log_file "$daemon")"
  log "ERROR: $msg"
  for f in "$f" "${f%.log}.stdout"; do
    if [[ -s "$f" ]]; then
      log "last lines of $f:"
      tail -n 25 "$f" >&2 || true
    fi
  done
  exit 1
}

slurm_env() { env SLURM_CONF="$SLURM_CONF_FILE" "$@"; }

# ---------------------------------------------------------------- packages --
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing missing packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$STATE_DIR/apt.log" 2>&1 ||
    { tail -n 30 "$STATE_DIR/apt.log" >&2; die "apt-get install failed (log: $STATE_DIR/apt.log)"; }
}

# ------------------------------------------------------------------ config --
write_if_changed() { # write_if_changed FILE MODE  (content on stdin)
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 0
  fi
  mv -f "$tmp" "$file"
  if is_up slurmctld || is_up slurmd || is_up slurmdbd; then
    log "WARNING: $file changed while daemons run; run 'down' then 'up' to apply it"
  fi
}

make_dirs() {
  mkdir -p "$STATE_DIR"
  chmod 755 "$STATE_DIR"
  mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/slurmd" "$MUNGE_DIR" "$MYSQL_DIR"
  chmod 755 "$ETC" "$RUN" "$LOG" "$MUNGE_DIR"
  chmod 700 "$SPOOL/ctld" "$SPOOL/slurmd"
  chown munge:munge "$MUNGE_DIR"
  chown mysql:mysql "$MYSQL_DIR"
  chmod 755 "$MYSQL_DIR"
  # munge and mysql must reach their folders; e.g. a state dir under /root fails.
  runuser -u munge -- test -x "$MUNGE_DIR" ||
    die "user munge cannot reach $MUNGE_DIR; pick a PTEXP_SLURM_DIR all users can traverse"
  runuser -u mysql -- test -x "$MYSQL_DIR" ||
    die "user mysql cannot reach $MYSQL_DIR; pick a PTEXP_SLURM_DIR all users can traverse"
  # Unix socket paths are limited to 107 bytes.
  ((${#MUNGE_SOCKET} < 100 && ${#MYSQL_SOCKET} < 100)) || die "PTEXP_SLURM_DIR path is too long"
}

write_configs() {
  local host cpus mem_kb real_mem db_pass
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  real_mem=$((mem_kb * 8 / 10 / 1024))

  if [[ ! -s "$ETC/db.pass" ]]; then
    (umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$ETC/db.pass")
  fi
  db_pass="$(cat "$ETC/db.pass")"

  write_if_changed "$SLURM_CONF_FILE" 644 <<EOF
# Generated by scripts/slurm-local.sh; regenerated on every 'up'.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); keep it short so 'scontrol requeue' restarts jobs quickly.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
# Re-scan pending jobs often (defaults 60 s / 30 s): requeued jobs restart fast.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# With munge auth this names the munge socket used to talk to slurmdbd
# (otherwise sacct/sacctmgr/slurmctld use /run/munge/munge.socket.2).
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
JobRequeue=1
KillWait=5
MinJobAge=10
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
OverTimeLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF

  # slurmdbd refuses a slurmdbd.conf that is not 600 and owned by SlurmUser.
  write_if_changed "$SLURMDBD_CONF_FILE" 600 <<EOF
# Generated by scripts/slurm-local.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
  chown root:root "$SLURMDBD_CONF_FILE"
}

# ----------------------------------------------------------------- daemons --
munge_works() {
  munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null
}

start_munged() {
  local key="$MUNGE_DIR/munge.key"
  if [[ ! -s "$key" ]]; then
    log "generating munge key $key"
    (umask 077 && dd if=/dev/urandom of="$key" bs=1024 count=1 status=none)
  fi
  chown munge:munge "$key"
  chmod 600 "$key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  env "$MARKER" runuser -u munge -- /usr/sbin/munged \
    --socket="$MUNGE_SOCKET" --key-file="$key" --pid-file="$(pid_file munged)" \
    --log-file="$(log_file munged)" --seed-file="$MUNGE_DIR/munged.seed" \
    </dev/null >>"$MUNGE_DIR/munged.stdout" 2>&1 ||
    fail_with_log munged "munged failed to start"
  wait_for 20 munged munge_works || fail_with_log munged "munged does not answer"
}

# shellcheck disable=SC2120  # called with arguments through wait_for
mysql_cli() {
  mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCKET" -u root "$@"
}

start_mariadbd() {
  local data="$MYSQL_DIR/data"
  if [[ ! -d "$data/mysql" ]]; then
    log "initialising MariaDB datadir $data"
    rm -rf "$data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$data" \
      --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
      >>"$(log_file mariadbd)" 2>&1 ||
      fail_with_log mariadbd "mariadb-install-db failed"
  fi
  rm -f "$MYSQL_SOCKET"
  # mariadbd does not daemonize; detach it completely.  It drops to --user.
  # UMASK is MariaDB's file-creation mode (default 0660): a world-readable
  # pid file lets non-root users run 'status'; the datadir itself stays 0700.
  env "$MARKER" UMASK=0644 setsid /usr/sbin/mariadbd --no-defaults --user=mysql \
    --datadir="$data" --socket="$MYSQL_SOCKET" --pid-file="$(pid_file mariadbd)" \
    --log-error="$(log_file mariadbd)" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --skip-name-resolve --innodb-lock-wait-timeout=900 \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=32M --skip-log-bin \
    </dev/null >>"$(log_file mariadbd)" 2>&1 &
  wait_for 60 mariadbd mysql_cli -e 'SELECT 1' || fail_with_log mariadbd "mariadbd does not answer"
  wait_for 10 "mariadbd pid file" is_up mariadbd || fail_with_log mariadbd "mariadbd pid file missing"
}

setup_database() {
  local pass
  pass="$(cat "$ETC/db.pass")"
  # shellcheck disable=SC2119
  mysql_cli <<EOF || fail_with_log mariadbd "creating slurm_acct_db failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm_daemon() { # start_slurm_daemon NAME [ARGS...]  (they daemonize)
  local name="$1"
  shift
  env "$MARKER" SLURM_CONF="$SLURM_CONF_FILE" "/usr/sbin/$name" "$@" \
    </dev/null >>"$LOG/$name.stdout" 2>&1 ||
    fail_with_log "$name" "$name failed to start"
  wait_for 20 "$name pid file" is_up "$name" ||
    fail_with_log "$name" "$name did not stay up"
}

dbd_answers() { slurm_env sacctmgr -n -P show cluster format=cluster; }

ensure_cluster() {
  if ! slurm_env sacctmgr -n -P show cluster format=cluster | grep -qxF "$CLUSTER"; then
    log "registering cluster '$CLUSTER' in slurmdbd"
    slurm_env sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
      fail_with_log slurmdbd "sacctmgr add cluster failed"
  fi
}

node_idle() {
  local state
  state="$(slurm_env sinfo -h -N -n "$(hostname -s)" -o '%T' | head -n 1)"
  # A suffix such as '*' (not responding) or '~' (powered off) is not ready.
  [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]]
}

start_one() { # start_one NAME: start unless already running
  local name="$1"
  if is_up "$name"; then
    log "$name already running (pid $(daemon_pid "$name"))"
    return 0
  fi
  rm -f "$(pid_file "$name")"
  log "starting $name"
  case "$name" in
    munged) start_munged ;;
    mariadbd) start_mariadbd ;;
    slurmdbd) start_slurm_daemon slurmdbd ;;
    slurmctld) start_slurm_daemon slurmctld ;;
    slurmd) start_slurm_daemon slurmd ;;
  esac
}

cmd_up() {
  need_root up
  mkdir -p "$STATE_DIR"
  ensure_packages
  make_dirs
  write_configs
  start_one munged
  start_one mariadbd
  setup_database
  start_one slurmdbd
  wait_for 30 "slurmdbd to answer" dbd_answers || fail_with_log slurmdbd "slurmdbd does not answer"
  ensure_cluster
  start_one slurmctld
  wait_for 30 "slurmctld to answer" slurm_env scontrol ping ||
    fail_with_log slurmctld "slurmctld does not answer"
  start_one slurmd
  if ! wait_for "$UP_TIMEOUT" "node $(hostname -s) to be idle" node_idle; then
    slurm_env sinfo -N -l >&2 || true
    fail_with_log slurmd "node did not become idle"
  fi
  slurm_env sinfo
  log "cluster '$CLUSTER' is up; use: eval \"\$($0 env)\""
  log "then sweep on it with: ptexp-train -m <overrides> hydra/launcher=slurm_local"
}

# ------------------------------------------------------------------- down --
# Pids of processes carrying our marker whose comm starts with $1.
marked_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    comm="$(cat "/proc/$p/comm" 2>/dev/null)" || continue
    [[ "$comm" == "$1"* ]] || continue
    is_ours "$1" "$p" && echo "$p"
  done
  return 0
}

descendants() { # all descendant pids of $1
  local child
  # shellcheck disable=SC2013  # the children files hold space-separated pids
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop_pid() { # stop_pid NAME PID
  local name="$1" pid="$2" deadline
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + 30))
  while is_ours "$name" "$pid"; do
    if ((SECONDS >= deadline)); then
      log "WARNING: $name (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
}

cancel_jobs() {
  local jobs
  jobs="$(slurm_env squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')" || return 0
  [[ -n "${jobs// /}" ]] || return 0
  log "cancelling jobs: $jobs"
  # shellcheck disable=SC2086
  slurm_env scancel $jobs 2>/dev/null || true
  # shellcheck disable=SC2016  # expanded by the inner bash
  wait_for 20 "jobs to finish" \
    slurm_env bash -c '[[ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ]]' || true
}

cmd_down() {
  need_root down
  local name pid p
  if is_up slurmctld; then
    cancel_jobs
  fi
  for name in "${DAEMONS[@]}"; do
    if pid="$(daemon_pid "$name")"; then
      stop_pid "$name" "$pid"
    else
      log "$name not running"
    fi
    rm -f "$(pid_file "$name")"
  done
  # Job steps outlive slurmd; kill those of this cluster (and their children).
  for pid in $(marked_pids slurmstepd); do
    log "killing leftover slurmstepd $pid and its children"
    for p in $(descendants "$pid") "$pid"; do
      kill -KILL "$p" 2>/dev/null || true
    done
  done
  rm -f "$MUNGE_SOCKET" "$MYSQL_SOCKET"
  log "down"
}

# ----------------------------------------------------------------- status --
cmd_status() {
  local name pid rc=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid="$(daemon_pid "$name")"; then
      printf '%-10s up (pid %s)\n' "$name" "$pid"
    else
      printf '%-10s down\n' "$name"
      rc=1
    fi
  done
  if is_up slurmctld; then
    echo
    slurm_env sinfo || rc=1
  fi
  return "$rc"
}

cmd_env() {
  printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
  # Comments: harmless under eval, and what to type next when printed.
  echo "# This node has no GPU: sweep on it with ptexp's slurm_local launcher preset, e.g."
  echo "#   ptexp-train -m +sweep=tokens_x_hidden hydra/launcher=slurm_local"
}

usage() {
  echo "usage: $0 up|down|status|env" >&2
  exit 2
}

[[ $# == 1 ]] || usage
case "$1" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
