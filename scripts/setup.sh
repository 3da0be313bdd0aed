#!/bin/bash
# Install what the project needs on Debian 12 (run as root): compilers,
# OpenSSL headers, sshd and iproute2 for the namespace test bed, mandoc for
# the man pages, iperf3 for the benchmark's baseline, shellcheck for the CI
# scripts, clang's runtime libraries for the libFuzzer targets (tests/fuzz);
# then the Python package with its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "setup.sh: run as root (the test bed needs namespaces and userfaultfd)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s build-essential libssl-dev openssh-server iproute2 mandoc clang-19 libclang-rt-19-dev \
    iperf3 shellcheck >/dev/null 2>&1; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends build-essential libssl-dev \
	    openssh-server openssh-client iproute2 mandoc clang-19 libclang-rt-19-dev \
	    iperf3 procps util-linux shellcheck >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
