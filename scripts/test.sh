#!/usr/bin/env bash
# Set up and run pcapclass's tests on a fresh machine: the tools the tests check against
# (tshark, tcpdump, dumpcap, ip, tcpreplay, chromium; Debian packages), the package with its test extras,
# then ruff, mypy (strict) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
# live capture tests: dumpcap (with tshark), network namespaces and veth pairs, replay for the benchmark
command -v dumpcap >/dev/null 2>&1 || need+=(wireshark-common)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tcpreplay >/dev/null 2>&1 || need+=(tcpreplay)
# the HTML report is checked in a real browser
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# the compiled kernels (Cython, built by pip) need a C compiler and Python's headers
command -v cc >/dev/null 2>&1 || need+=(gcc)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need+=(python3-dev)
if ((${#need[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing ${need[*]} (Debian packages)" >&2
    $SUDO apt-get update -qq
    # tshark's debconf question (may non-root users capture?) must not wait for an answer
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m pip install -q -e '.[test]'
# the code stays as clean as the tests are green: lint and strict typing first
python3 -m ruff check pcapclass tests scripts
python3 -m mypy pcapclass
exec python3 -m pytest "$@"
