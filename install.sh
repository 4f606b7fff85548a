#!/bin/sh
# rk3s installer: installs the rk3s binary, a systemd unit and an uninstall script.
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
#   INSTALL_RK3S_BIN_DIR        where to put the binary (default /usr/local/bin)
#   INSTALL_RK3S_SYSTEMD_DIR    where to put the unit (default /etc/systemd/system)
#   INSTALL_RK3S_BINARY         install this local binary instead of downloading (airgap)
#   INSTALL_RK3S_DOWNLOAD_URL   base URL holding <version>/rk3s-<arch> and <version>/sha256sum-<arch>.txt
#                               (default https://github.com/rk3s/rk3s/releases/download)
#   INSTALL_RK3S_SKIP_ENABLE    true: do not enable the service
#   INSTALL_RK3S_SKIP_START     true: do not start (or restart) the service
#   INSTALL_RK3S_SYMLINK        skip: never create the kubectl symlink; force: always create it
#   INSTALL_RK3S_ROOT           install below this directory and never call systemctl (tests, image builds)
#   RK3S_URL, RK3S_TOKEN, ...   every RK3S_* variable (and HTTP(S)_PROXY/NO_PROXY) is written to the
#                               service's env file (mode 0600), where `rk3s` reads it at start
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
    # ExecStart items, quoted for systemd: backslash and ' escaped, % and $ doubled.
    EXEC_ARGS=""
    for arg in "$@"; do
        quoted=$(printf '%s' "$arg" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/%/%%/g' -e 's/\$/$$/g')
        EXEC_ARGS="$EXEC_ARGS '$quoted'"
    done
    UNIT_FILE=$ROOT$SYSTEMD_DIR/$SERVICE.service
    ENV_FILE=$ROOT$SYSTEMD_DIR/$SERVICE.service.env
    UNINSTALL=$ROOT$BIN_DIR/$SERVICE-uninstall.sh
}

# --- privileges and the init system ---
setup_privileges() {
    SUDO=""
    if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fatal "run this as root (sudo was not found)"
        SUDO=sudo
    fi
    USE_SYSTEMCTL=false
    if [ -z "$ROOT" ]; then
        if command -v systemctl >/dev/null 2>&1; then
            USE_SYSTEMCTL=true
        elif [ "${INSTALL_RK3S_SKIP_ENABLE:-}" != true ] || [ "${INSTALL_RK3S_SKIP_START:-}" != true ]; then
            fatal "systemd (systemctl) was not found; rk3s runs as a systemd service"
        fi
    fi
}

setup_arch() {
    case $(uname -m) in
        amd64 | x86_64) ARCH=amd64 ;;
        arm64 | aarch64) ARCH=arm64 ;;
        *) fatal "unsupported architecture $(uname -m): rk3s is built for amd64 and arm64 (on a Raspberry Pi, install the 64-bit OS)" ;;
    esac
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
    if [ -n "${INSTALL_RK3S_BINARY:-}" ]; then
        [ -f "$INSTALL_RK3S_BINARY" ] || fatal "INSTALL_RK3S_BINARY=$INSTALL_RK3S_BINARY is not a file"
        info "Using local binary $INSTALL_RK3S_BINARY"
        BINARY=$INSTALL_RK3S_BINARY
        return
    fi
    setup_arch
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
        BINARY=""
        return
    fi
    download "$DOWNLOAD_URL/$VERSION/rk3s-$ARCH" "$TMP_DIR/rk3s"
    actual=$(sha256 "$TMP_DIR/rk3s")
    [ "$actual" = "$expected" ] || fatal "checksum mismatch for rk3s-$ARCH: expected $expected, got $actual"
    BINARY=$TMP_DIR/rk3s
}

install_binary() {
    $SUDO mkdir -p "$ROOT$BIN_DIR"
    if [ -n "$BINARY" ]; then
        $SUDO cp "$BINARY" "$ROOT$BIN_DIR/rk3s.new"
        $SUDO chmod 0755 "$ROOT$BIN_DIR/rk3s.new"
        $SUDO mv -f "$ROOT$BIN_DIR/rk3s.new" "$ROOT$BIN_DIR/rk3s"
        info "Installed $BIN_DIR/rk3s"
    fi
    # `kubectl` → rk3s, which runs the real kubectl with the rk3s kubeconfig, only where none exists.
    case "${INSTALL_RK3S_SYMLINK:-}" in
        skip) return ;;
        force) ;;
        *)
            if [ -e "$ROOT$BIN_DIR/kubectl" ] || { [ -z "$ROOT" ] && command -v kubectl >/dev/null 2>&1; }; then
                info "Skipping the kubectl symlink: kubectl already exists"
                return
            fi
            ;;
    esac
    $SUDO ln -sf rk3s "$ROOT$BIN_DIR/kubectl"
    info "Created the symlink $BIN_DIR/kubectl -> rk3s"
}

write_env_file() {
    $SUDO mkdir -p "$ROOT$SYSTEMD_DIR"
    (umask 077 && $SUDO touch "$ENV_FILE")
    $SUDO chmod 0600 "$ENV_FILE"
    # systemd reads double-quoted values with \ escapes for \ " ` $.
    env | grep -E '^(RK3S_|CONTAINERD_)[A-Z0-9_]*=|^(HTTP_PROXY|HTTPS_PROXY|NO_PROXY)=' |
        sed -e 's/[\\"`$]/\\&/g' -e 's/^\([^=]*\)=\(.*\)$/\1="\2"/' |
        $SUDO tee "$ENV_FILE" >/dev/null
    info "Wrote $SYSTEMD_DIR/$SERVICE.service.env"
}

write_unit() {
    $SUDO tee "$UNIT_FILE" >/dev/null <<EOF
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
    $SUDO chmod 0644 "$UNIT_FILE"
    info "Wrote $SYSTEMD_DIR/$SERVICE.service"
}

write_uninstall() {
    $SUDO tee "$UNINSTALL" >/dev/null <<EOF
#!/bin/sh
# Removes the $SERVICE service; the binary and cluster state go with the last rk3s service.
set -x
[ "$USE_SYSTEMCTL" = false ] || [ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"
if [ "$USE_SYSTEMCTL" = true ]; then
    systemctl stop $SERVICE.service
    systemctl disable $SERVICE.service
fi
rm -f "$UNIT_FILE" "$ENV_FILE"
[ "$USE_SYSTEMCTL" = false ] || systemctl daemon-reload
for unit in "$ROOT$SYSTEMD_DIR"/rk3s*.service; do
    [ -e "\$unit" ] && exit 0
done
if [ -L "$ROOT$BIN_DIR/kubectl" ] && [ "\$(readlink "$ROOT$BIN_DIR/kubectl")" = rk3s ]; then
    rm -f "$ROOT$BIN_DIR/kubectl"
fi
# The service proxy's rules (the proxy leaves them in place when it stops).
[ -n "$ROOT" ] || ! command -v nft >/dev/null || nft delete table ip rk3s-proxy 2>/dev/null || true
rm -rf "$ROOT/etc/rk3s" "$ROOT$DATA_DIR" "$ROOT/run/rk3s"
rm -f "$ROOT$BIN_DIR/rk3s" "\$0"
EOF
    $SUDO chmod 0755 "$UNINSTALL"
    info "Wrote $BIN_DIR/$SERVICE-uninstall.sh"
}

start_service() {
    if [ "$USE_SYSTEMCTL" != true ]; then
        info "Not calling systemctl (INSTALL_RK3S_ROOT is set or systemd is absent)"
        return
    fi
    $SUDO systemctl daemon-reload
    if [ "${INSTALL_RK3S_SKIP_ENABLE:-}" != true ]; then
        $SUDO systemctl enable "$SERVICE.service" >/dev/null
    fi
    [ "${INSTALL_RK3S_SKIP_START:-}" != true ] || return 0
    if [ ! -f /sys/fs/cgroup/cgroup.controllers ] && ! grep -qs '^memory[[:space:]].*1$' /proc/cgroups; then
        warn "Failed to find the memory cgroup: append 'cgroup_memory=1 cgroup_enable=memory' to /boot/firmware/cmdline.txt (older: /boot/cmdline.txt) on a Raspberry Pi and reboot"
    elif [ -f /sys/fs/cgroup/cgroup.controllers ] && ! grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
        warn "Failed to find the memory cgroup: append 'cgroup_memory=1 cgroup_enable=memory' to /boot/firmware/cmdline.txt (older: /boot/cmdline.txt) on a Raspberry Pi and reboot"
    fi
    info "Starting $SERVICE"
    $SUDO systemctl restart "$SERVICE.service"
}

# shellcheck disable=SC2086 # INSTALL_RK3S_EXEC is split into words on purpose.
{
    setup_command ${INSTALL_RK3S_EXEC:-} "$@"
    setup_privileges
    obtain_binary
    install_binary
    write_env_file
    write_unit
    write_uninstall
    start_service
}
