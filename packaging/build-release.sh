#!/usr/bin/env bash
# Builds the rk3s release binaries and lays out one release directory, the way
# install.sh downloads it: <out>/rk3s-<arch>, <out>/sha256sum-<arch>.txt and
# <out>/install.sh (arch is amd64 or arm64, as k3s names them). Serve the parent
# of <out> over HTTP and point INSTALL_RK3S_DOWNLOAD_URL at it, with
# INSTALL_RK3S_VERSION=<basename of out>.
#
#   packaging/build-release.sh                       # arm64 and amd64 into dist/v<version>
#   packaging/build-release.sh --arch arm64          # only the Raspberry Pi build
#   packaging/build-release.sh --out /srv/rk3s/v0.1.0 --arch amd64
#   packaging/build-release.sh --binary target/debug/rk3s --arch amd64 --out DIR   # lay out only (tests)
#   packaging/build-release.sh --report-map MAP      # what costs most, from a linker map
#   packaging/build-release.sh --smoke dist/v0.1.0/rk3s-arm64   # --version and a server under qemu (root)
#
# Cross-building arm64 on Debian x86 (12 or newer) needs, once:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install -y rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
#       qemu-user-static protobuf-compiler
# The arm64 build uses Debian's toolchain (/usr/bin/cargo, /usr/bin/rustc), which has the
# arm64 standard library; rustup cannot add targets on machines without network access.
#
# arm64 links glibc dynamically (aarch64-unknown-linux-gnu), not musl: every OS that runs
# on a Raspberry Pi 3/4/5 in 64-bit mode (Raspberry Pi OS, Debian, Ubuntu, Fedora, Arch,
# DietPi) is glibc-based; Debian ships no musl Rust standard library to cross-build with;
# and musl's allocator is markedly slower under tokio's many threads. The binary needs
# only libc, libm and libgcc_s, from glibc 2.34+ as built on Debian 12 (printed below): Raspberry
# Pi OS 12 (bookworm), Ubuntu 22.04+; Pi OS 11 (glibc 2.31) needs a build on Debian 11.
#
# Environment:
#   RK3S_RELEASE_TARGET_DIR   cargo target directory base (default /var/cache/rk3s-release);
#                             each arch builds in <base>-<arch>
#   RK3S_RELEASE_NICE         nice level of the build (default 19: the build is long and CPU-bound)
#   RK3S_RELEASE_MAP=1        also write a linker map and print what costs most in the binary
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
out=""
arches=""
binary=""
report_only=""
smoke_only=""

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --arch) arches="$arches $2"; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --report-map) report_only=$2; shift 2 ;;
        --smoke) smoke_only=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage 2 ;;
    esac
done
arches=${arches:-arm64 amd64}

out=${out:-$repo/dist/v$version}

if [ -n "$binary" ]; then
    set -- $arches
    [ $# -eq 1 ] || { echo "error: --binary needs exactly one --arch" >&2; exit 2; }
    [ -f "$binary" ] || { echo "error: --binary $binary is not a file" >&2; exit 2; }
fi

base=${RK3S_RELEASE_TARGET_DIR:-/var/cache/rk3s-release}
nice_level=${RK3S_RELEASE_NICE:-19}

triple_of() {
    case "$1" in
        arm64) echo aarch64-unknown-linux-gnu ;;
        amd64) echo x86_64-unknown-linux-gnu ;;
        *) echo "error: unsupported arch '$1' (arm64 or amd64)" >&2; exit 2 ;;
    esac
}

# Builds the release binary of one arch and prints its path.
build() { # ARCH
    local arch=$1 triple target_dir map
    triple=$(triple_of "$arch")
    target_dir=$base-$arch
    map=$target_dir/rk3s-$arch.map
    local -a envs=(CARGO_TARGET_DIR="$target_dir")
    local cargo=cargo
    if [ "$arch" = arm64 ]; then
        [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] ||
            { echo "error: Debian's rustc-web/cargo-web are missing: see the top of $0" >&2; exit 1; }
        [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] ||
            { echo "error: the arm64 Rust std is missing: apt-get install libstd-rust-web-dev:arm64" >&2; exit 1; }
        command -v aarch64-linux-gnu-gcc >/dev/null ||
            { echo "error: apt-get install gcc-aarch64-linux-gnu" >&2; exit 1; }
        cargo=/usr/bin/cargo
        envs+=(RUSTC=/usr/bin/rustc
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
            CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
            AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar)
    fi
    if [ "${RK3S_RELEASE_MAP:-}" = 1 ]; then
        local var
        var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
        envs+=("$var=-C link-arg=-Wl,-Map=$map")
    fi
    echo "building rk3s $version for $arch ($triple) in $target_dir" >&2
    (cd "$repo" && env "${envs[@]}" nice -n "$nice_level" \
        "$cargo" build --release --locked --target "$triple" --bin rk3s >&2)
    echo "$target_dir/$triple/release/rk3s"
}

# Prints the crates that take most of the binary's code and data, from a linker map (GNU ld's or
# lld's): input sections of a function-sections build are named .text.<symbol> (or .rodata.,
# .data.rel.ro.); a symbol counts for the crate its mangled path starts with, so generic code
# counts for the crate that defines the generic item, as cargo-bloat counts it.
report_map() { # MAP
    local map=$1
    [ -f "$map" ] || { echo "no linker map at $map" >&2; return 0; }
    echo "largest crates in the binary (input sections in the linker map $map):"
    awk '
        function hex(s,   i, v) {
            v = 0; s = tolower(s); sub(/^0x/, "", s)
            for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return v
        }
        # The crate a (legacy-mangled) symbol belongs to; C symbols by their prefix.
        function crate(sym,   n, rest) {
            if (match(sym, /^_ZN[0-9]+/)) {
                n = substr(sym, 4, RLENGTH - 3) + 0
                rest = substr(sym, RLENGTH + 1, n)
                if (substr(rest, 1, 5) == "_$LT$") rest = substr(rest, 6)
                if (substr(rest, 1, 4) == "$LT$") rest = substr(rest, 5)
                sub(/(\.\.|\$).*/, "", rest)
                return rest == "" ? "(generic impls)" : rest
            }
            if (sym ~ /^_R/) {
                # v0 mangling: the first crate root, C s<disambiguator>_ <len><name>.
                if (match(sym, /Cs[0-9A-Za-z]*_[0-9]+/)) {
                    rest = substr(sym, RSTART, RLENGTH); sub(/^Cs[0-9A-Za-z]*_/, "", rest)
                    return substr(sym, RSTART + RLENGTH, rest + 0)
                }
                return "(v0-mangled)"
            }
            if (sym ~ /^sqlite3/) return "sqlite3 (C, rusqlite bundled)"
            if (sym ~ /^(ring_core|GFp|aes_|gcm_|ecp_|x25519|chacha)/) return "ring (C/asm)"
            if (sym ~ /^\.L|^anon\.|^cst|^str\./ || sym == "") return "(unnamed constants)"
            return "(other C: libc glue, compiler-rt)"
        }
        function add(sec, size,   sym) {
            sym = sec; sub(/^\.(text|rodata|data\.rel\.ro)\./, "", sym)
            sub(/^(unlikely|hot|startup|exit)\./, "", sym)
            c = crate(sym); sum[c] += size; total += size
        }
        # lld: VMA LMA Size Align file:(.text.symbol)
        NF == 5 && match($5, /:\(\.(text|rodata|data\.rel\.ro)\.[^)]*\)$/) {
            add(substr($5, RSTART + 2, RLENGTH - 3), hex($3)); next
        }
        # GNU ld: .text.symbol 0xADDR 0xSIZE file (the name alone on its line when long)
        /^ \.(text|rodata|data\.rel\.ro)\./ {
            if (NF >= 3 && $2 ~ /^0x/) { add($1, hex($3)); pending = ""; next }
            pending = $1; next
        }
        pending != "" && $1 ~ /^0x/ && NF >= 2 { add(pending, hex($2)); pending = ""; next }
        { pending = "" }
        END {
            for (c in sum) printf "%10.1f KiB  %s\n", sum[c] / 1024, c
            printf "%10.1f KiB  (all named input sections)\n", total / 1024
        }' "$map" | sort -rn | head -n 20
}

# Runs an arm64 (or native) binary: `--version`, then `rk3s server --disable-agent` in a network
# namespace of its own (loopback only), until `kubectl get namespaces` answers. Needs root,
# kubectl, and qemu-user-static for a foreign binary.
smoke() { # BINARY
    local bin run ns dir start i
    smoke_pid=""
    bin=$(readlink -f "$1")
    run=""
    if file -b "$bin" | grep -q aarch64 && [ "$(uname -m)" != aarch64 ]; then
        # No -L: with the cross sysroot the binary hangs at its first thread (see the docs).
        run=$(command -v qemu-aarch64-static || command -v qemu-aarch64) ||
            { echo "error: apt-get install qemu-user-static" >&2; exit 1; }
    fi
    echo "smoke: $run $bin --version"
    $run "$bin" --version
    ns=rk3s-smoke-$$
    dir=$(mktemp -d -t rk3s-smoke.XXXXXXXX)
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # shellcheck disable=SC2064 # expand now: the names are fixed.
    trap "[ -z \"\$smoke_pid\" ] || kill -KILL \$smoke_pid 2>/dev/null; wait 2>/dev/null; ip netns del $ns; rm -rf $dir" EXIT
    start=$(date +%s)
    RK3S_CONFIG_FILE=/dev/null nsenter --net="/var/run/netns/$ns" $run "$bin" server --disable-agent \
        --data-dir "$dir/data" --write-kubeconfig "$dir/rk3s.yaml" >"$dir/server.log" 2>&1 &
    smoke_pid=$!
    for i in $(seq 1 600); do
        if [ -f "$dir/rk3s.yaml" ] &&
            nsenter --net="/var/run/netns/$ns" kubectl --kubeconfig "$dir/rk3s.yaml" get namespaces \
                >"$dir/ns.txt" 2>/dev/null; then
            echo "smoke: kubectl get namespaces answered after $(($(date +%s) - start)) s:"
            cat "$dir/ns.txt"
            ps -o rss=,vsz= -p "$smoke_pid" | awk -v e="${run:+ (under qemu)}" '{printf "smoke: server RSS%s %d MiB\n", e, $1 / 1024}'
            return 0
        fi
        kill -0 "$smoke_pid" 2>/dev/null || break
        sleep 1
    done
    echo "error: the server did not serve kubectl get namespaces; its log:" >&2
    tail -n 40 "$dir/server.log" >&2
    exit 1
}

lay_out() { # ARCH BINARY
    local arch=$1 bin=$2 triple strip_tool=strip
    triple=$(triple_of "$arch")
    mkdir -p "$out"
    cp "$bin" "$out/rk3s-$arch.tmp"
    [ "$arch" = arm64 ] && strip_tool=aarch64-linux-gnu-strip
    if [ -z "$binary" ] && command -v "$strip_tool" >/dev/null 2>&1; then
        "$strip_tool" "$out/rk3s-$arch.tmp"
    fi
    chmod 0755 "$out/rk3s-$arch.tmp"
    mv -f "$out/rk3s-$arch.tmp" "$out/rk3s-$arch"
    (cd "$out" && sha256sum "rk3s-$arch" >"sha256sum-$arch.txt")
    cp "$repo/install.sh" "$out/install.sh"
    chmod 0755 "$out/install.sh"
    local size
    size=$(stat -c %s "$out/rk3s-$arch")
    awk -v a="$arch" -v s="$size" -v t="$triple" \
        'BEGIN { printf "rk3s-%s: %d bytes (%.1f MiB, %.1f MB) stripped, for %s\n", a, s, s / 1048576, s / 1e6, t }' 
    if [ -z "$binary" ]; then
        # The newest glibc symbol version the binary needs: the oldest OS it runs on.
        local objdump=objdump
        [ "$arch" = arm64 ] && objdump=aarch64-linux-gnu-objdump
        if command -v "$objdump" >/dev/null 2>&1; then
            echo "rk3s-$arch needs $("$objdump" -T "$out/rk3s-$arch" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)" \
                "and $("$objdump" -p "$out/rk3s-$arch" | awk '/NEEDED/ {printf "%s ", $2}')"
        fi
        [ "${RK3S_RELEASE_MAP:-}" != 1 ] || report_map "$base-$arch/rk3s-$arch.map"
    fi
}

if [ -n "$smoke_only" ]; then
    smoke "$smoke_only"
    exit 0
fi
if [ -n "$report_only" ]; then
    report_map "$report_only"
    exit 0
fi
for arch in $arches; do
    triple_of "$arch" >/dev/null
    if [ -n "$binary" ]; then
        lay_out "$arch" "$binary"
    else
        lay_out "$arch" "$(build "$arch")"
    fi
done
echo "release layout in $out:"
ls -l "$out"
