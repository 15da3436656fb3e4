#!/bin/sh
# netns.sh BINARY ARGS...: runs BINARY under mpirun across two "hosts" on this machine: two
# network namespaces joined by a veth pair, mpirun in the first (rank 0 there), the other ranks
# (FPP_NETNS_NP ranks in all, default 3) in the second, launched through netns-rsh.sh as ssh
# would launch them. FPP_NETNS_MPIRUN_ARGS: more options for mpirun. Open MPI may use
# only TCP over the veth pair (btl tcp,self), so every task and result really crosses TCP.
# Needs root and iproute2; exits 77 (ctest: skipped) with a message where namespaces cannot
# be made. Everything it makes is removed on exit.
set -u
here=$(cd "$(dirname "$0")" && pwd)
id=$$
a=fppA$id
b=fppB$id
net=10.231.$((id % 200)).
cleanup() {
  ip netns del "$a" 2>/dev/null
  ip netns del "$b" 2>/dev/null
  rm -f "$hostfile"
}
hostfile=$(mktemp)
trap cleanup EXIT INT TERM
skip() { echo "SKIPPED: $1 (the two-host test needs root, iproute2 and network namespaces)"; exit 77; }
command -v ip >/dev/null 2>&1 || skip "no ip command"
command -v unshare >/dev/null 2>&1 || skip "no unshare command"
ip netns add "$a" 2>/dev/null || skip "cannot create a network namespace"
ip netns add "$b" || skip "cannot create a second network namespace"
ip link add "va$id" type veth peer name "vb$id" || skip "cannot create a veth pair"
ip link set "va$id" netns "$a" && ip link set "vb$id" netns "$b" || skip "cannot move the veth ends"
ip -n "$a" addr add "${net}1/24" dev "va$id"
ip -n "$b" addr add "${net}2/24" dev "vb$id"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "va$id" up
ip -n "$b" link set "vb$id" up

np=${FPP_NETNS_NP:-3}
na=${FPP_NETNS_A:-1}
printf '%s slots=%d\n%s slots=%d\n' "${net}1" "$na" "${net}2" $((np - na)) >"$hostfile"
# Variables the ranks in the other namespace need too (rank 0 inherits everything).
fwd="-x FPP_NETNS_MAP"
for v in MPI_MANY FPP_MPI_CHUNK ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS OMPI_MCA_mca_base_component_disable_dlclose; do
  eval "[ -n \"\${$v:-}\" ]" && fwd="$fwd -x $v"
done
export FPP_NETNS_MAP="${net}1=$a ${net}2=$b"
echo "two hosts: ${net}1 (namespace $a: mpirun, ranks 0..$((na - 1))) and ${net}2 (namespace $b: ranks $na..$((np - 1))), TCP only"
ip netns exec "$a" env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  mpirun --hostfile "$hostfile" -n "$np" \
  --mca plm_rsh_agent "$here/netns-rsh.sh" \
  --mca btl tcp,self --mca btl_tcp_if_include "${net}0/24" --mca oob_tcp_if_include "${net}0/24" \
  --mca pml ob1 ${FPP_NETNS_MPIRUN_ARGS:-} \
  $fwd \
  "$@"
