#!/usr/bin/env bash
# Install the systems the benchmarks compare Spillway with (the "peers"):
#
#   MR-MPI            libmrmpi-dev (apt) + mpicxx (libopenmpi-dev, openmpi-bin)
#   Polars, DuckDB    PyPI, into the venv bench/.venv (python3 -m venv)
#   GNU sort, tr, uniq coreutils (always there on Debian)
#
#   scripts/install-peers.sh           check; install what is missing
#   scripts/install-peers.sh --check   check only (exit 1 if something is missing)
#
# Idempotent: with everything present it runs no apt-get and no pip. apt-get needs root
# (it runs `apt-get update` first); without root it prints the command to run instead.
# The benchmarks skip a peer that is missing, with a note, so this is optional.
set -euo pipefail

check_only=0
for arg in "$@"; do
    case "$arg" in
        --check) check_only=1 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-peers: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/bench/.venv
python=${PYTHON:-python3}

have() { command -v "$1" >/dev/null 2>&1; }
mrmpi_ok() { [[ -e /usr/include/mrmpi/mapreduce.h ]] &&
             compgen -G '/usr/lib/*/libMapReduceMPI.so' >/dev/null && have mpicxx; }
py_ok() { [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import polars, duckdb' >/dev/null 2>&1; }

missing=0
if mrmpi_ok; then echo "install-peers: mrmpi      ok"; else echo "install-peers: mrmpi      MISSING"; missing=1; fi
if py_ok; then echo "install-peers: polars     ok  ($("$venv/bin/python" -c 'import polars; print(polars.__version__)'))"
               echo "install-peers: duckdb     ok  ($("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)'))"
else echo "install-peers: polars+duckdb MISSING (venv $venv)"; missing=1; fi
have sort && have tr && have uniq || { echo "install-peers: coreutils MISSING" >&2; missing=1; }
[[ $missing == 0 ]] && exit 0
if [[ $check_only == 1 ]]; then exit 1; fi

if ! mrmpi_ok; then
    pkgs=(libmrmpi-dev libopenmpi-dev openmpi-bin g++)
    if [[ $(id -u) -ne 0 ]] || ! have apt-get; then
        echo "install-peers: MR-MPI needs root and apt-get; run:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
    else
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
        mrmpi_ok && echo "install-peers: mrmpi      installed" || { echo "install-peers: ERROR: MR-MPI still missing" >&2; exit 1; }
    fi
fi

if ! py_ok; then
    [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check polars duckdb
    py_ok && echo "install-peers: polars+duckdb installed in $venv" ||
        { echo "install-peers: ERROR: polars/duckdb still missing" >&2; exit 1; }
fi
