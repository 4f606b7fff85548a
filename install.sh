#!/bin/sh
# rk3s installer: installs the rk3s binary, the kubectl symlink, a systemd unit (or an openrc
# script), its env file, rk3s-killall.sh and an uninstall script. Safe to run again: a second run
# with the same release changes nothing; one with a newer release replaces the binary and restarts
# the service, and running pods keep running (KillMode=process; the agent re-adopts them).
#
#   curl -sfL https://github.com/rk3s/rk3s/releases/latest/download/install.sh | sh -
#   curl -sfL .../install.sh | RK3S_URL=https://SERVER:6443 RK3S_TOKEN=TOKEN sh -
#   curl -sfL .../install.sh | sh -s - server --disable servicelb --node-label role=edge
#
# Environment:
#   INSTALL_RK3S_VERSION        release to install, e.g. v0.1.0 (default: the latest release)
#   INSTALL_RK3S_EXEC           command and flags for the service: "server ...", "agent ..." or just flags;
#                               with only flags it is `agent` when RK3S_URL is set, else `server`.
#                               Arguments given to the script are appended.
#   INSTALL_RK3S_DOWNLOAD_URL   base URL holding <version>/rk3s-<arch> and <version>/sha256sum-<arch>.txt,
#                               arch amd64 or arm64 (default https://github.com/rk3s/rk3s/releases/download);
#                               packaging/build-release.sh writes that layout
#   INSTALL_RK3S_BINARY         install this local binary instead of downloading (airgap)
#   INSTALL_RK3S_SKIP_DOWNLOAD  true: keep the binary already in INSTALL_RK3S_BIN_DIR
#   INSTALL_RK3S_BIN_DIR        where to put the binary and scripts (default /usr/local/bin)
#   INSTALL_RK3S_SYSTEMD_DIR    where to put the unit (default /etc/systemd/system)
#   INSTALL_RK3S_INIT           systemd or openrc (default: the one this host runs; systemd under a ROOT)
#   INSTALL_RK3S_SKIP_ENABLE    true: do not enable the service
#   INSTALL_RK3S_SKIP_START     true: do not start (or restart) the service
#   INSTALL_RK3S_FORCE_RESTART  true: restart the service even when nothing changed
#   INSTALL_RK3S_SYMLINK        skip: never create the kubectl symlink; force: always create it
#   INSTALL_RK3S_SKIP_RUNTIME   true: do not install containerd and runc when they are missing
#   INSTALL_RK3S_ROOT           install below this scratch directory (tests, inspection): never call
#                               systemctl or a package manager; the killall and uninstall scripts act on
#                               that root's paths; kernel checks read ROOT/proc and ROOT/sys when those
#                               exist, and are skipped otherwise
#   RK3S_URL, RK3S_TOKEN, ...   every RK3S_* and CONTAINERD_* variable (and HTTP(S)_PROXY/NO_PROXY) is
#                               written to the service's env file (mode 0600), where `rk3s` reads it
set -e
set -o noglob

info() { echo "[INFO]  $*"; }
warn() { echo "[WARN]  $*" >&2; }
fatal() {
    echo "[ERROR] $*" >&2
    exit 1
}

ROOT=${INSTALL_RK3S_ROOT:-}
GITHUB_URL=https://github.com/rk3s/rk3s
DOWNLOAD_URL=${INSTALL_RK3S_DOWNLOAD_URL:-$GITHUB_URL/releases/download}
BIN_DIR=${INSTALL_RK3S_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_RK3S_SYSTEMD_DIR:-/etc/systemd/system}
DATA_DIR=${RK3S_DATA_DIR:-/var/lib/rk3s}
CONFIG_DIR=/etc/rk3s
RUN_DIR=${RK3S_RUN_DIR:-/run/rk3s}
CGROUP_FIX="append 'cgroup_memory=1 cgroup_enable=memory' to the single line of /boot/firmware/cmdline.txt (/boot/cmdline.txt on older Raspberry Pi OS) and reboot"

# --- which command the service runs ---
setup_command() {
    case "$1" in
        server | agent)
            KIND=$1
            shift
            ;;
        "" | -*)
            if [ -n "${RK3S_URL:-}" ]; then KIND=agent; else KIND=server; fi
            ;;
        *) fatal "unknown command '$1': the first word of INSTALL_RK3S_EXEC must be server or agent" ;;
    esac
    if [ -n "${RK3S_URL:-}" ]; then
        case "$RK3S_URL" in
            https://*) ;;
            *) fatal "RK3S_URL must start with https:// (got '$RK3S_URL')" ;;
        esac
        if [ "$KIND" = agent ] && [ -z "${RK3S_TOKEN:-}" ] && [ -z "${RK3S_TOKEN_FILE:-}" ]; then
            fatal "RK3S_URL is set, so this installs an agent: set RK3S_TOKEN (on the server: /var/lib/rk3s/server/token)"
        fi
    fi
    if [ "$KIND" = server ]; then SERVICE=rk3s; else SERVICE=rk3s-agent; fi
    # Does this node run pods (and so need cgroups, containerd and runc)?
    RUNS_PODS=true
    EXTERNAL_RUNTIME=${RK3S_CONTAINER_RUNTIME_ENDPOINT:-}
    EXEC_ARGS=""
    for arg in "$@"; do
        case "$arg" in
            --disable-agent | --disable-agent=true) RUNS_PODS=false ;;
            --container-runtime-endpoint=*) EXTERNAL_RUNTIME=${arg#*=} ;;
        esac
        # ExecStart items, quoted for systemd: backslash and ' escaped, % and $ doubled.
        quoted=$(printf '%s' "$arg" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/%/%%/g' -e 's/\$/$$/g')
        EXEC_ARGS="$EXEC_ARGS '$quoted'"
    done
    case "${RK3S_DISABLE_AGENT:-}" in true | 1) RUNS_PODS=false ;; esac
    # The previous word of `--container-runtime-endpoint SOCKET`.
    prev=""
    for arg in "$@"; do
        [ "$prev" != --container-runtime-endpoint ] || EXTERNAL_RUNTIME=$arg
        prev=$arg
    done
    UNINSTALL=$ROOT$BIN_DIR/$SERVICE-uninstall.sh
    KILLALL=$ROOT$BIN_DIR/rk3s-killall.sh
}

# --- privileges and the init system ---
setup_privileges() {
    SUDO=""
    # The scripts install.sh writes re-run themselves as root, except below a scratch root.
    SUDO_LINE='[ "$(id -u)" -eq 0 ] || exec sudo "$0" "$@"'
    [ -z "$ROOT" ] || SUDO_LINE=""
    if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fatal "run this as root (sudo was not found)"
        SUDO=sudo
    fi
}

setup_init() {
    case "${INSTALL_RK3S_INIT:-}" in
        systemd | openrc) INIT=$INSTALL_RK3S_INIT ;;
        "")
            if [ -n "$ROOT" ]; then
                INIT=systemd
            elif [ -x /sbin/openrc-run ] || command -v openrc-run >/dev/null 2>&1; then
                INIT=openrc
            elif [ -d /run/systemd/system ] || command -v systemctl >/dev/null 2>&1; then
                INIT=systemd
            else
                fatal "neither systemd (systemctl) nor openrc (openrc-run) was found: rk3s installs as a service of one of them; on another init system run '$BIN_DIR/rk3s $KIND' from it yourself"
            fi
            ;;
        *) fatal "INSTALL_RK3S_INIT must be systemd or openrc (got '$INSTALL_RK3S_INIT')" ;;
    esac
    # Only a host that runs this init system gets its services enabled and started.
    CALL_INIT=false
    if [ -z "$ROOT" ]; then
        if [ "$INIT" = systemd ] && [ -d /run/systemd/system ]; then
            CALL_INIT=true
        elif [ "$INIT" = openrc ] && command -v rc-update >/dev/null 2>&1; then
            CALL_INIT=true
        fi
    fi
    if [ "$INIT" = systemd ]; then
        SERVICE_FILE=$ROOT$SYSTEMD_DIR/$SERVICE.service
        ENV_FILE=$ROOT$SYSTEMD_DIR/$SERVICE.service.env
    else
        SERVICE_FILE=$ROOT/etc/init.d/$SERVICE
        ENV_FILE=$ROOT$CONFIG_DIR/$SERVICE.env
    fi
}

setup_arch() {
    case $(uname -m) in
        amd64 | x86_64) ARCH=amd64 ;;
        arm64 | aarch64) ARCH=arm64 ;;
        armv6* | armv7* | armhf | arm)
            fatal "unsupported architecture $(uname -m): rk3s is built for amd64 and arm64; on a Raspberry Pi 3, 4 or 5 install the 64-bit Raspberry Pi OS (the Pi Zero and Pi 1 cannot run it)"
            ;;
        *) fatal "unsupported architecture $(uname -m): rk3s is built for amd64 and arm64" ;;
    esac
}

# A node that runs pods needs the memory cgroup; Raspberry Pi OS turns it off by default.
check_cgroups() {
    [ "$RUNS_PODS" = true ] || return 0
    if [ -f "$ROOT/sys/fs/cgroup/cgroup.controllers" ]; then
        grep -qw memory "$ROOT/sys/fs/cgroup/cgroup.controllers" && return 0
    elif [ -f "$ROOT/proc/cgroups" ]; then
        awk '$1 == "memory" && $4 == 1 { found = 1 } END { exit !found }' "$ROOT/proc/cgroups" && return 0
    elif [ -n "$ROOT" ]; then
        return 0 # an image built for another machine: its kernel is checked when it runs
    else
        fatal "this kernel has no cgroups (neither /sys/fs/cgroup/cgroup.controllers nor /proc/cgroups): rk3s needs the cpu and memory cgroups to run pods"
    fi
    fatal "failed to find the memory cgroup, which rk3s needs to run pods: $CGROUP_FIX (or install with --disable-agent for a server without pods)"
}

# containerd and runc run the pods; rk3s starts its own containerd from them.
check_runtime() {
    [ "$RUNS_PODS" = true ] && [ -z "$EXTERNAL_RUNTIME" ] && [ -z "$ROOT" ] || return 0
    missing=""
    command -v containerd >/dev/null 2>&1 || missing="$missing containerd"
    command -v runc >/dev/null 2>&1 || missing="$missing runc"
    [ -n "$missing" ] || return 0
    how=""
    if command -v apt-get >/dev/null 2>&1; then
        how="apt-get install -y containerd runc"
    elif command -v dnf >/dev/null 2>&1; then
        how="dnf install -y containerd runc"
    elif command -v apk >/dev/null 2>&1; then
        how="apk add containerd runc"
    elif command -v pacman >/dev/null 2>&1; then
        how="pacman -S --noconfirm containerd runc"
    elif command -v zypper >/dev/null 2>&1; then
        how="zypper --non-interactive install containerd runc"
    fi
    if [ "${INSTALL_RK3S_SKIP_RUNTIME:-}" = true ] || [ -z "$how" ]; then
        msg="rk3s needs$missing to run pods:"
        [ -n "$how" ] && msg="$msg install them with '$how'" ||
            msg="$msg install them with this OS's package manager (or put the static binaries from the containerd and runc releases on PATH)"
        [ "${INSTALL_RK3S_SKIP_RUNTIME:-}" = true ] && warn "$msg" && return 0
        fatal "$msg"
    fi
    info "Installing$missing with '$how'"
    # rk3s starts containerd itself, with its own config: the OS's containerd service stays off.
    if [ "${how%% *}" = apt-get ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containerd runc ||
            fatal "failed to install containerd and runc: run '$how' yourself and try again"
    else
        # shellcheck disable=SC2086 # $how is a command line.
        set -- $how
        $SUDO "$@" || fatal "failed to install containerd and runc: run '$how' yourself and try again"
    fi
    if [ "$INIT" = systemd ] && [ "$CALL_INIT" = true ]; then
        $SUDO systemctl disable --now containerd.service >/dev/null 2>&1 || true
    fi
}

download() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1" || fatal "failed to download $1"
    elif command -v wget >/dev/null 2>&1; then
        wget -qO "$2" "$1" || fatal "failed to download $1"
    else
        fatal "neither curl nor wget was found"
    fi
}

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{print $1}'
    else
        shasum -a 256 "$1" | awk '{print $1}'
    fi
}

# --- the binary ---
obtain_binary() {
    TMP_DIR=$(mktemp -d -t rk3s-install.XXXXXXXX)
    trap 'rm -rf "$TMP_DIR"' EXIT
    BINARY=""
    if [ -n "${INSTALL_RK3S_BINARY:-}" ]; then
        [ -f "$INSTALL_RK3S_BINARY" ] || fatal "INSTALL_RK3S_BINARY=$INSTALL_RK3S_BINARY is not a file"
        info "Using local binary $INSTALL_RK3S_BINARY"
        BINARY=$INSTALL_RK3S_BINARY
        return
    fi
    if [ "${INSTALL_RK3S_SKIP_DOWNLOAD:-}" = true ]; then
        [ -x "$ROOT$BIN_DIR/rk3s" ] || fatal "INSTALL_RK3S_SKIP_DOWNLOAD=true, but $BIN_DIR/rk3s is missing"
        info "Skipping the download: keeping $BIN_DIR/rk3s"
        return
    fi
    VERSION=${INSTALL_RK3S_VERSION:-}
    if [ -z "$VERSION" ]; then
        [ -z "${INSTALL_RK3S_DOWNLOAD_URL:-}" ] || fatal "set INSTALL_RK3S_VERSION when INSTALL_RK3S_DOWNLOAD_URL is set"
        VERSION=$(curl -w '%{url_effective}' -L -s -S -o /dev/null "$GITHUB_URL/releases/latest" | sed -e 's|.*/||')
        [ -n "$VERSION" ] && [ "$VERSION" != latest ] || fatal "failed to find the latest release at $GITHUB_URL/releases/latest"
    fi
    info "Downloading rk3s $VERSION for $ARCH"
    download "$DOWNLOAD_URL/$VERSION/sha256sum-$ARCH.txt" "$TMP_DIR/sha256sum.txt"
    expected=$(sed -n -e "s/^\([0-9a-f]\{64\}\)[ *]*rk3s-$ARCH\$/\1/p" "$TMP_DIR/sha256sum.txt")
    [ -n "$expected" ] || fatal "no checksum for rk3s-$ARCH in $DOWNLOAD_URL/$VERSION/sha256sum-$ARCH.txt"
    if [ -f "$ROOT$BIN_DIR/rk3s" ] && [ "$(sha256 "$ROOT$BIN_DIR/rk3s")" = "$expected" ]; then
        info "rk3s $VERSION is already installed"
        return
    fi
    download "$DOWNLOAD_URL/$VERSION/rk3s-$ARCH" "$TMP_DIR/rk3s"
    actual=$(sha256 "$TMP_DIR/rk3s")
    [ "$actual" = "$expected" ] || fatal "checksum mismatch for rk3s-$ARCH: expected $expected, got $actual; nothing was installed"
    BINARY=$TMP_DIR/rk3s
}

CHANGED=false

# Puts FILE (a temporary file) at DEST with MODE, only when its content differs; notes a change.
place() { # FILE DEST MODE
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        $SUDO chmod "$3" "$2"
        return 1
    fi
    $SUDO mkdir -p "$(dirname "$2")"
    # Created private, then given its mode: the env file holds the join token.
    (umask 077 && $SUDO cp "$1" "$2.new")
    $SUDO chmod "$3" "$2.new"
    $SUDO mv -f "$2.new" "$2" # atomic: a running rk3s keeps its old inode
    CHANGED=true
}

install_binary() {
    if [ -n "$BINARY" ] && place "$BINARY" "$ROOT$BIN_DIR/rk3s" 0755; then
        info "Installed $BIN_DIR/rk3s"
    fi
    # `kubectl` → rk3s, which runs the real kubectl with the rk3s kubeconfig, only where none exists.
    case "${INSTALL_RK3S_SYMLINK:-}" in
        skip) return ;;
        force) ;;
        *)
            if [ -L "$ROOT$BIN_DIR/kubectl" ] && [ "$(readlink "$ROOT$BIN_DIR/kubectl")" = rk3s ]; then
                return
            fi
            if [ -e "$ROOT$BIN_DIR/kubectl" ] || { [ -z "$ROOT" ] && command -v kubectl >/dev/null 2>&1; }; then
                info "Skipping the kubectl symlink: kubectl already exists"
                return
            fi
            ;;
    esac
    $SUDO ln -sfn rk3s "$ROOT$BIN_DIR/kubectl"
    info "Created the symlink $BIN_DIR/kubectl -> rk3s"
}

write_env_file() {
    # systemd and openrc's sh both read double-quoted values with \ escapes for \ " ` $.
    env | grep -E '^(RK3S_|CONTAINERD_)[A-Z0-9_]*=|^(HTTP_PROXY|HTTPS_PROXY|NO_PROXY)=' | LC_ALL=C sort |
        sed -e 's/[\\"`$]/\\&/g' -e 's/^\([^=]*\)=\(.*\)$/\1="\2"/' >"$TMP_DIR/env" || true
    if place "$TMP_DIR/env" "$ENV_FILE" 0600; then info "Wrote ${ENV_FILE#"$ROOT"}"; fi
}

write_systemd_unit() {
    cat >"$TMP_DIR/unit" <<EOF
[Unit]
Description=Lightweight Kubernetes (rk3s $KIND)
Documentation=https://github.com/rk3s/rk3s
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-$SYSTEMD_DIR/$SERVICE.service.env
# Stop only rk3s itself: containers keep running across restarts and upgrades.
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN_DIR/rk3s $KIND$EXEC_ARGS
EOF
}

write_openrc_script() {
    cat >"$TMP_DIR/unit" <<EOF
#!/sbin/openrc-run
# rk3s $KIND, supervised: restarted 5 s after it exits; stopping it leaves the pods running.

depend() {
    after network-online
    want cgroups
}

start_pre() {
    modprobe br_netfilter 2>/dev/null || true
    modprobe overlay 2>/dev/null || true
}

supervisor=supervise-daemon
name=$SERVICE
command="$BIN_DIR/rk3s"
command_args="$KIND$EXEC_ARGS"
output_log=/var/log/$SERVICE.log
error_log=/var/log/$SERVICE.log
pidfile="/var/run/$SERVICE.pid"
respawn_delay=5
respawn_max=0

set -o allexport
if [ -f /etc/environment ]; then . /etc/environment; fi
if [ -f $CONFIG_DIR/$SERVICE.env ]; then . $CONFIG_DIR/$SERVICE.env; fi
set +o allexport
EOF
}

write_service() {
    if [ "$INIT" = systemd ]; then
        write_systemd_unit
        mode=0644
    else
        # openrc's command_args are sh words: single quotes as written above, no systemd escapes.
        EXEC_ARGS=$(printf '%s' "$EXEC_ARGS" | sed -e 's/%%/%/g' -e 's/\$\$/$/g')
        write_openrc_script
        mode=0755
    fi
    if place "$TMP_DIR/unit" "$SERVICE_FILE" $mode; then info "Wrote ${SERVICE_FILE#"$ROOT"}"; fi
}

# rk3s-killall.sh: stops rk3s and everything it started, and removes what it made on the host.
# The header holds this install's paths; the body is the same for every install.
write_killall() {
    if [ -z "$ROOT" ]; then all_netns=true stop_services=true; else all_netns=false stop_services=false; fi
    cat >"$TMP_DIR/killall" <<EOF
#!/bin/sh
# Stops rk3s, its containerd and every pod container, unmounts what rk3s mounted and deletes the
# interfaces, nftables tables and network namespaces rk3s made. Touches nothing else: the host's
# own containerd, interfaces, tables and namespaces stay. Written by install.sh.
$SUDO_LINE

BIN="$ROOT$BIN_DIR/rk3s"
DATA_DIR="$ROOT$DATA_DIR"
RUN_DIR="$ROOT$RUN_DIR"
# Stop the rk3s services first (not for an install below INSTALL_RK3S_ROOT).
STOP_SERVICES=$stop_services
SYSTEMD_DIR="$SYSTEMD_DIR"
# The sockets of the containerds whose shims (and so containers) belong to rk3s.
CONTAINERD_SOCKETS="$ROOT$RUN_DIR/containerd/containerd.sock ${EXTERNAL_RUNTIME#unix://}"
# Pod network namespaces are bound at NETNS_DIR/rk3s-<pod uid>, and pod cgroups live under
# <hierarchy>/rk3s/pods/<pod uid>. WHOLE_HOST=false removes only those of the pods in DATA_DIR
# (an install below INSTALL_RK3S_ROOT shares /var/run/netns and the cgroups with the host).
NETNS_DIR=/var/run/netns
WHOLE_HOST=$all_netns
EOF
    cat >>"$TMP_DIR/killall" <<'EOF'
# The links rk3s makes: the pod bridge (and the veths attached to it), the VXLAN device, and the
# dummy link that carries the cluster DNS address on each node.
BRIDGE=cni0
DNS_LINK=rk3s-dns
LINKS="$BRIDGE flannel.1 $DNS_LINK"
NFT_TABLES="rk3s rk3s-proxy"

# PIDs of the processes whose command line contains $1 (and $2).
pids_with() {
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        case "$cmd" in *"$1"*) ;; *) continue ;; esac
        case "$cmd" in *"${2:-}"*) echo "${p#/proc/}" ;; esac
    done
}
# PIDs of the processes running this install's rk3s binary (also an upgraded-away one).
rk3s_pids() {
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        if [ "$exe" = "$BIN" ] || [ "$exe" = "$BIN (deleted)" ]; then echo "${p#/proc/}"; fi
    done
}
# Every descendant of the PIDs given.
descendants() {
    table=$(for p in /proc/[0-9]*; do
        read -r stat 2>/dev/null <"$p/stat" || continue
        # shellcheck disable=SC2086 # fields after "(comm) ": state ppid ...
        set -- ${stat##*) }
        echo "${p#/proc/} $2"
    done)
    found=" $* "
    grew=true
    while [ "$grew" = true ]; do
        grew=false
        for pid in $(echo "$table" | while read -r pid ppid; do
            case "$found" in *" $ppid "*) case "$found" in *" $pid "*) ;; *) echo "$pid" ;; esac ;; esac
        done); do
            found="$found$pid "
            grew=true
        done
    done
    for pid in $found; do
        case " $* " in *" $pid "*) ;; *) echo "$pid" ;; esac
    done
}
# TERM, then KILL what is left after $1 seconds, of the processes `$2` lists.
stop() {
    pids=$($2)
    [ -n "$pids" ] || return 0
    echo "+ stopping $2:" $pids
    kill -TERM $pids 2>/dev/null
    i=0
    while [ $i -lt "$1" ] && [ -n "$($2)" ]; do
        sleep 1
        i=$((i + 1))
    done
    pids=$($2)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
}
shim_pids() {
    for sock in $CONTAINERD_SOCKETS; do pids_with containerd-shim "-address $sock "; done
}
own_containerd_pids() { pids_with containerd "--config $DATA_DIR/agent/containerd/config.toml"; }
pod_netns() {
    if [ "$WHOLE_HOST" = true ]; then
        ls -d "$NETNS_DIR"/rk3s-* 2>/dev/null
    else
        for pod in "$DATA_DIR"/agent/pods/*; do
            [ -e "$NETNS_DIR/rk3s-${pod##*/}" ] && echo "$NETNS_DIR/rk3s-${pod##*/}"
        done
    fi
}

# The cgroup trees to remove (rmdir removes only cgroups without processes).
pod_cgroups() {
    for hier in /sys/fs/cgroup /sys/fs/cgroup/*; do
        [ -d "$hier/rk3s" ] || continue
        if [ "$WHOLE_HOST" = true ]; then
            echo "$hier/rk3s"
        else
            for pod in "$DATA_DIR"/agent/pods/*; do
                [ -d "$hier/rk3s/pods/${pod##*/}" ] && echo "$hier/rk3s/pods/${pod##*/}"
            done
        fi
    done
}
# Waits up to 5 s for the PIDs given to be gone (a zombie counts as gone).
wait_gone() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=""
        for pid in "$@"; do
            read -r stat 2>/dev/null <"/proc/$pid/stat" || continue
            set -- ${stat##*) }
            [ "$1" = Z ] || left="$left $pid"
        done
        [ -n "$left" ] || return 0
        set -- $left
        sleep 0.5
    done
}

# Services first, so nothing restarts what is stopped below.
if [ "$STOP_SERVICES" = true ]; then
    if [ -d /run/systemd/system ]; then
        for unit in "$SYSTEMD_DIR"/rk3s*.service; do
            [ -e "$unit" ] && systemctl stop "${unit##*/}"
        done
    fi
    for script in /etc/init.d/rk3s*; do
        [ -x "$script" ] && "$script" stop
    done
fi

# rk3s itself; then every container (the shims of rk3s's containerd and everything under them,
# killed at once so none is left to reap); then rk3s's own containerd.
stop 10 rk3s_pids
shims=$(shim_pids)
if [ -n "$shims" ]; then
    containers=$(descendants $shims)
    echo "+ killing the shims" $shims "and the containers" $containers
    kill -KILL $shims $containers 2>/dev/null
    wait_gone $shims $containers
fi
stop 5 own_containerd_pids

# Mounts below the data and run dirs (volumes, container root filesystems), deepest first,
# then the pods' network namespaces.
netns=$(pod_netns)
mounts=$(awk -v d="$DATA_DIR/" -v r="$RUN_DIR/" '
    index($5 "/", d) == 1 || index($5 "/", r) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
for m in $mounts $netns; do
    echo "+ umount $m"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
for f in $netns; do rm -f "$f"; done
for cg in $(pod_cgroups); do
    echo "+ rmdir $cg (and the cgroups below it)"
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# Interfaces and tables, in this network namespace.
if command -v ip >/dev/null 2>&1; then
    for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        echo "+ ip link delete $veth"
        ip link delete "$veth"
    done
    for link in $LINKS; do
        if ip link show "$link" >/dev/null 2>&1; then
            echo "+ ip link delete $link"
            ip link delete "$link"
        fi
    done
fi
if command -v nft >/dev/null 2>&1; then
    for table in $NFT_TABLES; do
        if nft list table ip "$table" >/dev/null 2>&1; then
            echo "+ nft delete table ip $table"
            nft delete table ip "$table"
        fi
    done
fi
rm -rf "$RUN_DIR"
exit 0
EOF
    if place "$TMP_DIR/killall" "$KILLALL" 0755; then info "Wrote $BIN_DIR/rk3s-killall.sh"; fi
}

write_uninstall() {
    cat >"$TMP_DIR/uninstall" <<EOF
#!/bin/sh
# Removes the $SERVICE service; the binary, killall, the kubectl symlink and the cluster state
# ($CONFIG_DIR, $DATA_DIR) go with the last rk3s service. Written by install.sh.
$SUDO_LINE
# Empty for the real root; below a scratch root the init system is never asked.
SCRATCH_ROOT="$ROOT"
INIT=$INIT
set -x
"$KILLALL"
# The init system is asked only on the real root, and only when it runs.
if [ -z "\$SCRATCH_ROOT" ] && [ "\$INIT" = systemd ] && [ -d /run/systemd/system ]; then
    systemctl disable $SERVICE.service
elif [ -z "\$SCRATCH_ROOT" ] && [ "\$INIT" = openrc ] && command -v rc-update >/dev/null; then
    rc-update delete $SERVICE default
fi
rm -f "$SERVICE_FILE" "$ENV_FILE"
if [ -z "\$SCRATCH_ROOT" ] && [ "\$INIT" = systemd ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
{ set +x; } 2>/dev/null
set +o noglob
for other in "$ROOT$SYSTEMD_DIR"/rk3s*.service "$ROOT"/etc/init.d/rk3s*; do
    [ -e "\$other" ] && echo "keeping rk3s and its data: \$other remains" && rm -f "\$0" && exit 0
done
set -x
if [ -L "$ROOT$BIN_DIR/kubectl" ] && [ "\$(readlink "$ROOT$BIN_DIR/kubectl")" = rk3s ]; then
    rm -f "$ROOT$BIN_DIR/kubectl"
fi
# killall unmounted everything below these first.
rm -rf "$ROOT$CONFIG_DIR" "$ROOT$DATA_DIR" "$ROOT$RUN_DIR"
rm -f "$ROOT$BIN_DIR/rk3s" "$KILLALL" "\$0"
EOF
    if place "$TMP_DIR/uninstall" "$UNINSTALL" 0755; then info "Wrote $BIN_DIR/$SERVICE-uninstall.sh"; fi
}

start_service() {
    if [ "$CALL_INIT" != true ]; then
        info "Not enabling or starting $SERVICE: INSTALL_RK3S_ROOT is set or $INIT is not running here"
        return
    fi
    if [ "$INIT" = systemd ]; then
        $SUDO systemctl daemon-reload
        [ "${INSTALL_RK3S_SKIP_ENABLE:-}" = true ] || $SUDO systemctl enable "$SERVICE.service" >/dev/null
    else
        [ "${INSTALL_RK3S_SKIP_ENABLE:-}" = true ] || $SUDO rc-update add "$SERVICE" default >/dev/null
    fi
    [ "${INSTALL_RK3S_SKIP_START:-}" != true ] || return 0
    # A restart stops only rk3s (KillMode=process): pods keep running and the new rk3s adopts them.
    if [ "$CHANGED" = true ] || [ "${INSTALL_RK3S_FORCE_RESTART:-}" = true ]; then
        info "Starting (or restarting) $SERVICE"
        if [ "$INIT" = systemd ]; then $SUDO systemctl restart "$SERVICE.service"; else $SUDO rc-service "$SERVICE" restart; fi
    else
        info "Nothing changed: making sure $SERVICE runs"
        if [ "$INIT" = systemd ]; then $SUDO systemctl start "$SERVICE.service"; else $SUDO rc-service "$SERVICE" start; fi
    fi
}

# Everything that can refuse runs before the first file is written.
# shellcheck disable=SC2086 # INSTALL_RK3S_EXEC is split into words on purpose.
{
    setup_command ${INSTALL_RK3S_EXEC:-} "$@"
    setup_privileges
    setup_init
    setup_arch
    check_cgroups
    obtain_binary
    check_runtime
    install_binary
    write_env_file
    write_service
    write_killall
    write_uninstall
    start_service
}
