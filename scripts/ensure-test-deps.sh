#!/usr/bin/env bash
# System packages the test suite uses as real parts:
#   - an OpenSSH server (the sshd fixture: the head node over SSH)
#   - headless Chromium (opens the HTML report and screenshots it)
#   - tmux (the smoke test that runs `tether watch` in a real terminal and reads its screen)
# Installs Debian's packages when missing and we are root; otherwise says what to do.
set -euo pipefail

have_sshd() {
  for p in /usr/sbin/sshd /usr/local/sbin/sshd "$(command -v sshd 2>/dev/null || true)"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  return 1
}
have_chromium() { command -v chromium || command -v chromium-browser || command -v google-chrome; }

missing=()
have_sshd >/dev/null || missing+=(openssh-server openssh-client)
have_chromium >/dev/null || missing+=(chromium)
command -v tmux >/dev/null || missing+=(tmux)

if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test deps: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if p=$(have_sshd); then echo "sshd: $p"; else
  msg="sshd: no OpenSSH server binary; install it (apt-get install openssh-server, brew install openssh)"
  if [ "${TETHER_REQUIRE_SSHD:-0}" = 1 ]; then
    echo "$msg -- TETHER_REQUIRE_SSHD=1, so the SSH tests will fail" >&2
  else
    echo "$msg -- the SSH tests will be skipped" >&2
  fi
fi
if p=$(have_chromium); then echo "chromium: $p"; else
  echo "chromium: not found (apt-get install chromium); the HTML report screenshot test will fail" >&2
fi
if p=$(command -v tmux); then echo "tmux: $p"; else
  echo "tmux: not found (apt-get install tmux, brew install tmux); the tether watch smoke test will fail" >&2
fi
exit 0
