#!/bin/bash
# header-rewrite: drain a node before its server is deleted (its `drain` command's delete): the node
# is out of DNS by then. Port 25 closes, the queue is delivered for at most BOUND seconds, and only
# an empty queue (or the FORCE file) lets the server go; otherwise the removal stops with the queue
# listed and the ways forward. Queue files are counted on disk: postqueue fails while Postfix is stopped.
# Facts: NODE, BOUND (drainSeconds), FORCE.
set -uo pipefail
SPOOL=/var/spool/postfix
ARCHIVE=/tmp/header-rewrite-queue.tgz
queued() {
  find "$SPOOL"/{maildrop,incoming,active,deferred,hold} -type f 2>/dev/null | wc -l
}
# 1. No new mail: port 25's service goes from the live master.cf (loopback pass 2, pickup and
#    delivery keep running). A later deploy to this node renders it back.
if [ -n "$(postconf -M smtp/inet 2>/dev/null)" ]; then
  postconf -M# smtp/inet && postfix reload >/dev/null 2>&1
  echo "$NODE: port 25 closed, no new mail is accepted"
fi
# 2. Deliver the queue, retrying every 10 s, for at most BOUND seconds.
started=$SECONDS
while :; do
  n=$(queued)
  if [ "$n" -eq 0 ]; then
    echo "$NODE: drained in $((SECONDS - started)) s, the queue is empty"
    exit 0
  fi
  if [ -e "$FORCE" ]; then
    echo "$NODE: FORCED by $FORCE: $n queued message(s) go with the server:"
    postqueue -p 2>&1 | head -n 60
    exit 0
  fi
  if [ $((SECONDS - started)) -ge "$BOUND" ]; then
    {
      echo "header-rewrite: $NODE still holds $n queued message(s) after $BOUND s: its removal stops here, the server stays."
      postqueue -p 2>&1 | head -n 60
      # Postfix's own way to move a queue (postsuper -r: every message back to maildrop, which the
      # other node's pickup re-queues), from Wietse Venema's migration procedure.
      cat <<HOW
To go on, either
  - fix what defers them (npm run status names the reason) and run pulumi up again: the drain resumes;
  - or move them to another node, which delivers them (they are already rewritten and checked):
      on $NODE:  sudo postfix stop && sudo postsuper -r ALL && sudo tar -C $SPOOL -czf $ARCHIVE maildrop && sudo find $SPOOL/maildrop -type f -delete
      copy $ARCHIVE to the other node, and there:  sudo tar -C $SPOOL -xzf $ARCHIVE && sudo postkick public pickup W
    then run pulumi up again: the queue here is empty;
  - or let them go with the server: sudo touch $FORCE on $NODE, and run pulumi up again.
HOW
    } >&2
    exit 1
  fi
  left=$((BOUND - SECONDS + started))
  echo "$NODE: $n message(s) queued, $left s left"
  postqueue -f >/dev/null 2>&1 || true
  sleep $((left < 10 ? (left < 1 ? 1 : left) : 10))
done
