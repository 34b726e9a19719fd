# shellcheck shell=bash
# header-rewrite: how a step installs a file it carries (the composed step holds the content as a
# here-document). Prepended to the steps that ship files.

# ship TARGET MODE < content: installs TARGET unless it already holds exactly this; SHIPPED=yes
# when it was replaced. Python is installed only if it parses. Status 1 (TARGET untouched) otherwise.
ship() {
  local target=$1 mode=$2 new
  # A temporary name of its own: nodes that share /usr (containers) may deploy at the same time.
  new=$(mktemp "$target.XXXXXX") || return 1
  cat >"$new"
  if [[ $target == *.py ]] && ! /usr/bin/python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$new"; then
    echo "header-rewrite: $(basename "$target") does not parse" >&2
    rm -f "$new"
    return 1
  fi
  if cmp -s "$new" "$target"; then
    rm -f "$new"
  else
    # shellcheck disable=SC2034 # the step that ships reads it
    chmod "$mode" "$new" && mv -f "$new" "$target" && SHIPPED=yes
  fi
}
