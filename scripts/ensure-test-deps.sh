#!/usr/bin/env bash
# Make sure an OpenSSH server binary exists for the test suite's sshd fixture.
# Installs Debian's openssh-server when missing and we are root; otherwise says what to do.
set -euo pipefail
for p in /usr/sbin/sshd /usr/local/sbin/sshd "$(command -v sshd 2>/dev/null || true)"; do
  if [ -n "$p" ] && [ -x "$p" ]; then echo "sshd: $p"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sshd: not found; installing openssh-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
  [ -x /usr/sbin/sshd ] && { echo "sshd: /usr/sbin/sshd"; exit 0; }
  echo "sshd: apt-get ran but /usr/sbin/sshd is still missing" >&2
fi
msg="sshd: no OpenSSH server binary; install it (apt-get install openssh-server, brew install openssh)"
if [ "${TETHER_REQUIRE_SSHD:-0}" = 1 ]; then
  echo "$msg -- TETHER_REQUIRE_SSHD=1, so the SSH tests will fail" >&2
else
  echo "$msg -- the SSH tests will be skipped" >&2
fi
exit 0
