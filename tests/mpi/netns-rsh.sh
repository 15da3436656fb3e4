#!/bin/sh
# netns-rsh.sh [options] HOST COMMAND...: the "ssh" mpirun launches remote daemons with
# (--mca plm_rsh_agent), for the two-host test on one machine: HOST is an address of one of
# the test's network namespaces (FPP_NETNS_MAP="addr=ns addr=ns"); the command runs inside
# that namespace, under a hostname of its own (so Open MPI sees two nodes), through sh -c as
# ssh would run it.
while [ $# -gt 0 ]; do
  case $1 in
    -*) shift ;;
    *) break ;;
  esac
done
host=$1
shift
ns=
for pair in $FPP_NETNS_MAP; do
  [ "${pair%%=*}" = "$host" ] && ns=${pair#*=}
done
[ -n "$ns" ] || { echo "netns-rsh: unknown host $host" >&2; exit 255; }
exec ip netns exec "$ns" unshare --uts sh -c "hostname fpp-$ns; $*"
