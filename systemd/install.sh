#!/usr/bin/env bash
# Install (or upgrade) an availmon agent or collector on a Debian host, as root:
#
#   ./install.sh agent     --wheel availmon-X-py3-none-any.whl --config estate.toml --site SITE
#   ./install.sh collector --wheel availmon-X-py3-none-any.whl --config estate.toml
#
# What it does, each step safe to repeat (an upgrade is the same command with a newer wheel):
#   - a system user and group `availmon` (no login shell, home /var/lib/availmon);
#   - a virtualenv in /opt/availmon with the wheel and its dependencies (pip, from PyPI or
#     from the index pip is configured to use);
#   - /etc/availmon/ (root:availmon 0750) holding availmon.toml (copied once: a config that
#     is already there is kept and checked, never overwritten) and secrets/ (0750), whose
#     files are set to root:availmon 0640;
#   - for an agent, /etc/availmon/agent.env with AVAILMON_SITE;
#   - the README and docs in /opt/availmon/doc/ (the units' Documentation=);
#   - the systemd unit in /etc/systemd/system/, enabled (and started with --start).
# The installed config is validated with the installed `availmon config check` before the
# unit is enabled, so a bad config stops the install with its errors, not the service later.
#
# --root DIR installs into DIR as if it were / (a throwaway root for tests and image
# builds): nothing outside DIR is touched and nothing is started.
set -euo pipefail

usage() {
  echo "usage: $0 agent|collector --wheel FILE [--config FILE] [--site SITE] [--root DIR]" \
    "[--python PYTHON] [--start] [--no-enable]" >&2
  exit 2
}

role=${1:-}
[[ $role == agent || $role == collector ]] || usage
shift
wheel="" config="" site="" root="" python=python3 start=0 enable=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --wheel) wheel=${2:?}; shift 2 ;;
    --config) config=${2:?}; shift 2 ;;
    --site) site=${2:?}; shift 2 ;;
    --root) root=$(realpath -m "${2:?}"); shift 2 ;;
    --python) python=${2:?}; shift 2 ;;
    --start) start=1; shift ;;
    --no-enable) enable=0; shift ;;
    *) usage ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
unit="availmon-$role.service"
[[ -n $wheel && -f $wheel ]] || { echo "install.sh: --wheel FILE is required and must exist" >&2; exit 2; }
[[ -f $here/$unit ]] || { echo "install.sh: $here/$unit is missing (run from the unpacked dist)" >&2; exit 2; }
if [[ $role == agent && -z $site ]]; then
  echo "install.sh: an agent needs --site SITE (its site id in the estate config)" >&2
  exit 2
fi
if [[ -z $root && $(id -u) -ne 0 ]]; then
  echo "install.sh: run as root (or with --root DIR for a throwaway root)" >&2
  exit 2
fi

say() { printf 'install.sh: %s\n' "$*"; }
opt=$root/opt/availmon
etc=$root/etc/availmon

# 1. The user. --prefix edits DIR/etc/{passwd,group,shadow} without a chroot.
prefix=()
[[ -n $root ]] && prefix=(--prefix "$root")
if ! grep -q '^availmon:' "$root/etc/passwd" 2>/dev/null; then
  say "creating system user availmon"
  useradd "${prefix[@]}" --system --user-group --home-dir /var/lib/availmon --no-create-home \
    --shell /usr/sbin/nologin --comment "availmon monitoring" availmon
fi
uid=$(awk -F: '$1 == "availmon" {print $3}' "$root/etc/passwd")
gid=$(awk -F: '$1 == "availmon" {print $3}' "$root/etc/group")

# 2. The virtualenv and the wheel (an upgrade replaces the package in place).
if [[ ! -x $opt/bin/python ]]; then
  say "creating virtualenv $opt"
  "$python" -m venv "$opt"
fi
say "installing $(basename "$wheel") into $opt"
"$opt/bin/pip" install --quiet --disable-pip-version-check --upgrade "$wheel"

# The documentation the units point at: the bundle's doc/ (make dist), or the checkout's.
if [[ -f $here/doc/README.md ]]; then
  docs=$here/doc
elif [[ -f $here/../README.md && -d $here/../docs ]]; then
  docs=$(cd "$here/.." && pwd)
else
  docs=""
fi
if [[ -n $docs ]]; then
  install -d -m 0755 "$opt/doc" "$opt/doc/docs"
  install -m 0644 "$docs/README.md" "$opt/doc/README.md"
  install -m 0644 "$docs"/docs/*.md "$opt/doc/docs/"
else
  say "no README.md beside install.sh: the units' Documentation= will point at nothing"
fi

# 3. Configuration and secrets: root owns them, the service's group reads them.
install -d -m 0750 -o 0 -g "$gid" "$etc" "$etc/secrets"
if [[ ! -f $etc/availmon.toml ]]; then
  if [[ -n $config ]]; then
    install -m 0640 -o 0 -g "$gid" "$config" "$etc/availmon.toml"
    say "installed $config as /etc/availmon/availmon.toml"
  else
    say "no --config given: put the estate config in /etc/availmon/availmon.toml"
  fi
else
  say "keeping the existing /etc/availmon/availmon.toml"
fi
find "$etc/secrets" -type f -exec chown "0:$gid" {} + -exec chmod 0640 {} +
if [[ $role == agent ]]; then
  printf 'AVAILMON_SITE=%s\n' "$site" > "$etc/agent.env"
  chown "0:$gid" "$etc/agent.env"
  chmod 0640 "$etc/agent.env"
fi
install -d -m 0750 -o "$uid" -g "$gid" "$root/var/lib/availmon"

# 4. Check the config with what was just installed, before anything starts it.
if [[ -f $etc/availmon.toml ]]; then
  check=("$opt/bin/availmon" config check "$etc/availmon.toml")
  [[ $role == agent ]] && check+=(--site "$site")
  "${check[@]}" || { echo "install.sh: fix the config above, then run this again" >&2; exit 2; }
fi

# 5. The unit.
install -d "$root/etc/systemd/system"
install -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
if [[ $enable -eq 1 ]]; then
  if [[ -n $root ]]; then
    systemctl --root="$root" enable "$unit"
  else
    systemctl daemon-reload
    systemctl enable "$unit"
    [[ $start -eq 1 ]] && systemctl restart "$unit"
  fi
fi
say "done: $role installed in ${root:-/}; logs with: journalctl -u $unit"
