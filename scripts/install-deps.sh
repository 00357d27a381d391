#!/usr/bin/env bash
# Make sure this machine has the system tools Spillway's full test suite needs.
#
#   scripts/install-deps.sh           check; install what is missing (root + apt)
#   scripts/install-deps.sh --bench   also hyperfine (benchmarks only)
#   scripts/install-deps.sh --check   check only; never install (exit 1 if missing)
#
# Idempotent: when everything is present it runs no apt command at all.
# Needs (Debian 12 package names):
#   mpirun            openmpi-bin
#   mpicc + mpi.h     libopenmpi-dev   (rsmpi's build-probe-mpi runs `mpicc -show`)
#   libclang          libclang-dev     (bindgen in mpi-sys dlopens libclang.so)
#   pkg-config        pkg-config
#   cc                gcc              (mpicc wraps it; cc crate builds mpi-sys' shim)
#   g++               g++              (capi's C++ test program)
#   gfortran          gfortran         (capi's Fortran test program)
#   valgrind          valgrind         (capi's memcheck test)
#   make              make             (capi's Makefile example)
#   chromium          chromium         (tests/report.rs loads --report pages headless)
#   hyperfine         hyperfine        (--bench only)
set -euo pipefail

want_bench=0
check_only=0
for arg in "$@"; do
    case "$arg" in
        --bench) want_bench=1 ;;
        --check) check_only=1 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

missing_pkgs=()
missing_names=" "
only_names=""   # when set (re-check after install), print only these names

# report NAME PACKAGE OK? DETAIL
report() {
    local name=$1 pkg=$2 ok=$3 detail=$4
    [[ $ok == 1 ]] || missing_names+="$name "
    if [[ -n $only_names && $only_names != *" $name "* ]]; then
        [[ $ok == 1 ]] && return 0
    fi
    if [[ $ok == 1 ]]; then
        printf 'install-deps: %-11s ok       %s\n' "$name" "$detail"
    else
        printf 'install-deps: %-11s MISSING  (package %s)\n' "$name" "$pkg"
        # de-duplicate (mpicc and mpi.h share a package)
        local p
        for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
            [[ $p == "$pkg" ]] && return 0
        done
        missing_pkgs+=("$pkg")
    fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# Finds a libclang shared object the way clang-sys (bindgen "runtime") does:
# $LIBCLANG_PATH, `llvm-config --libdir`, then the usual system dirs.
find_libclang() {
    local dirs=() d f
    [[ -n ${LIBCLANG_PATH:-} ]] && dirs+=("$LIBCLANG_PATH")
    if have llvm-config; then dirs+=("$(llvm-config --libdir 2>/dev/null || true)"); fi
    dirs+=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu
           /usr/lib64 /usr/lib /usr/local/lib)
    for d in "${dirs[@]}"; do
        [[ -d $d ]] || continue
        for f in "$d"/libclang.so "$d"/libclang-[0-9]*.so "$d"/libclang.so.[0-9]* \
                 "$d"/libclang-[0-9]*.so.[0-9]*; do
            [[ -e $f ]] && { echo "$f"; return 0; }
        done
    done
    return 1
}

# bindgen parses mpi.h with libclang, which needs clang's own builtin headers (stddef.h ...).
find_clang_builtin_headers() {
    local f
    for f in /usr/lib/llvm-*/lib/clang/*/include/stddef.h /usr/lib/clang/*/include/stddef.h \
             /usr/local/lib/clang/*/include/stddef.h; do
        [[ -e $f ]] && { dirname "$f"; return 0; }
    done
    return 1
}

check_all() {
    missing_pkgs=()
    missing_names=" "
    local p hdr

    if have mpirun; then
        report mpirun openmpi-bin 1 "$(mpirun --version 2>/dev/null | head -n1 || true)"
    else
        report mpirun openmpi-bin 0 ""
    fi

    if have mpicc && mpicc -show >/dev/null 2>&1; then
        report mpicc libopenmpi-dev 1 "$(command -v mpicc)"
    else
        report mpicc libopenmpi-dev 0 ""
    fi

    hdr=""
    if have mpicc; then
        for p in $(mpicc --showme:incdirs 2>/dev/null || true); do
            [[ -e $p/mpi.h ]] && { hdr=$p/mpi.h; break; }
        done
    fi
    if [[ -n $hdr ]]; then report mpi.h libopenmpi-dev 1 "$hdr"; else report mpi.h libopenmpi-dev 0 ""; fi

    if p=$(find_libclang) && hdr=$(find_clang_builtin_headers); then
        report libclang libclang-dev 1 "$p"
    else
        report libclang libclang-dev 0 ""
    fi

    if have pkg-config; then report pkg-config pkg-config 1 "$(command -v pkg-config)"
    else report pkg-config pkg-config 0 ""; fi

    if have cc; then report cc gcc 1 "$(command -v cc)"
    else report cc gcc 0 ""; fi

    if have g++; then report g++ g++ 1 "$(command -v g++)"
    else report g++ g++ 0 ""; fi

    if have gfortran; then report gfortran gfortran 1 "$(command -v gfortran)"
    else report gfortran gfortran 0 ""; fi

    if have valgrind; then report valgrind valgrind 1 "$(command -v valgrind)"
    else report valgrind valgrind 0 ""; fi

    if have make; then report make make 1 "$(command -v make)"
    else report make make 0 ""; fi

    if have chromium; then report chromium chromium 1 "$(command -v chromium)"
    else report chromium chromium 0 ""; fi

    if [[ $want_bench == 1 ]]; then
        if have hyperfine; then report hyperfine hyperfine 1 "$(hyperfine --version 2>/dev/null || true)"
        else report hyperfine hyperfine 0 ""; fi
    fi
}

check_all
if [[ ${#missing_pkgs[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $check_only == 1 ]]; then
    echo "install-deps: missing: ${missing_pkgs[*]} (--check: not installing)" >&2
    exit 1
fi

if [[ $(id -u) -ne 0 ]] || ! have apt-get; then
    {
        echo "install-deps: ERROR: missing system packages and cannot install them here"
        echo "install-deps: (need root and apt-get; running as uid $(id -u))."
        echo "install-deps: install them with:"
        echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
    } >&2
    exit 1
fi

log=$(mktemp -t install-deps.XXXXXX.log)
trap 'rm -f "$log"' EXIT
echo "install-deps: installing: ${missing_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_update() {  # retried: a mirror hiccup should not fail a CI run
    local try
    for try in 1 2 3; do
        apt-get -o DPkg::Lock::Timeout=300 update -q && return 0
        echo "install-deps: apt-get update failed (try $try/3)"
        sleep $((try * 5))
    done
    return 1
}
if ! { apt_update &&
       apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing_pkgs[@]}"
     } >"$log" 2>&1; then
    echo "install-deps: ERROR: apt-get failed; its output:" >&2
    cat "$log" >&2
    exit 1
fi

# Re-check (printing only what was missing): anything still missing is a real error.
only_names=$missing_names
check_all
if [[ ${#missing_pkgs[@]} -ne 0 ]]; then
    echo "install-deps: ERROR: still missing after install: ${missing_pkgs[*]}" >&2
    exit 1
fi
echo "install-deps: done"
