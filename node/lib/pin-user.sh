# shellcheck shell=bash
# header-rewrite: the tenant-pinning milter's own system user and group, PIN_USER (not nobody, which
# other daemons share): it reads the pin secret (group) and owns the milter's socket directory.
pin_user() {
  id -u "$PIN_USER" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PIN_USER"
}
