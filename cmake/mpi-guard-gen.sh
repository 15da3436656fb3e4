#!/bin/sh
# mpi-guard-gen.sh IN.i OUT.c: writes libfpp_mpi's guard (lib/mpi/guard.c explains it) from
# IN.i, <mpi.h> as the C preprocessor gave it for this build (cmake/FppMpi.cmake runs both at
# build time, so the list always matches the MPI compiled against; nothing is copied from
# mpi.h into the tree). For every prototype "int MPI_Xxx(params)" it writes
#
#     int MPI_Xxx(params) { FPP__MPI_GUARD("MPI_Xxx"); return PMPI_Xxx(names); }
#
# except the local queries listed in LOCAL below (they touch no connection, so a task may call
# them) and variadic ones (MPI_Pcontrol: nothing to guard). Fails (exit 1, a message) when a
# prototype cannot be read or when fewer than 200 functions were found: a header this script
# does not understand must stop the build, never yield a guard with holes.
set -eu
in=$1
out=$2
tmp=$out.tmp
# Local queries: answered from the process's own memory (ranks, sizes, versions, error
# strings, thread level). Everything else (point-to-point, collectives, one-sided, probes,
# communicator, group, window and file management, attributes, MPI_Init, MPI_Finalize,
# MPI_Abort...) is refused in a pool process.
LOCAL="MPI_Initialized MPI_Finalized MPI_Comm_rank MPI_Comm_size MPI_Comm_remote_size \
MPI_Comm_test_inter MPI_Get_processor_name MPI_Get_version MPI_Get_library_version \
MPI_Error_string MPI_Error_class MPI_Query_thread MPI_Is_thread_main"

awk -v local="$LOCAL" -v src="$in" '
BEGIN { n = split(local, l, /[ \t]+/); for (i = 1; i <= n; i++) if (l[i] != "") allow[l[i]] = 1 }
/^#/ { next }                      # line markers
{ text = text " " $0 }
END {
    nd = split(text, decl, ";")
    count = 0
    print "/* Generated at build time by cmake/mpi-guard-gen.sh from <mpi.h> (" src "): do not edit."
    print " * One definition per MPI function but the local queries: refused in a pool process, else"
    print " * PMPI_. See lib/mpi/guard.c. */"
    print "#include \"mpi/mpi_int.h\""
    print ""
    print "#pragma GCC diagnostic ignored \"-Wdeprecated-declarations\""
    print ""
    for (d = 1; d <= nd; d++) {
        s = decl[d]
        gsub(/[ \t\r\n]+/, " ", s)
        # "int MPI_Name(" with int a word of its own (not MPI_Fint, not MPI_Aint).
        if (!match(s, /(^|[^A-Za-z0-9_])int MPI_[A-Za-z0-9_]+ ?\(/))
            continue
        head = substr(s, RSTART, RLENGTH)
        sub(/^[^i]*int /, "", head)
        sub(/ ?\($/, "", head)
        name = head
        rest = substr(s, RSTART + RLENGTH)
        close_at = index(rest, ")")
        if (close_at == 0) { print "mpi-guard-gen: no ) after " name > "/dev/stderr"; exit 1 }
        params = substr(rest, 1, close_at - 1)
        if (name in allow || name in done || params ~ /\.\.\./)
            continue
        done[name] = 1
        gsub(/^ +| +$/, "", params)
        args = ""
        if (params != "void" && params != "") {
            np = split(params, p, ",")
            for (i = 1; i <= np; i++) {
                q = p[i]
                gsub(/\[[^]]*\]/, "", q)       # int ranges[][3] -> int ranges
                gsub(/^ +| +$/, "", q)
                if (!match(q, /[A-Za-z_][A-Za-z0-9_]*$/)) {
                    print "mpi-guard-gen: " name ": no parameter name in \"" p[i] "\"" > "/dev/stderr"; exit 1
                }
                id = substr(q, RSTART, RLENGTH)
                if (q == id || id ~ /^(int|char|void|long|short|double|float|signed|unsigned)$/) {
                    print "mpi-guard-gen: " name ": no parameter name in \"" p[i] "\"" > "/dev/stderr"; exit 1
                }
                args = args (i > 1 ? ", " : "") id
            }
        }
        printf "__attribute__((visibility(\"default\"))) int %s(%s)\n{\n    FPP__MPI_GUARD(\"%s\");\n    return P%s(%s);\n}\n\n", name, params, name, name, args
        count++
    }
    printf "const unsigned fpp__mpi_guarded_count = %d;\n", count
    if (count < 200) { print "mpi-guard-gen: only " count " MPI functions found in " src > "/dev/stderr"; exit 1 }
}' "$in" > "$tmp"
mv "$tmp" "$out"
