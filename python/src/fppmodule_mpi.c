/* fppmodule_mpi.c: fpp._fpp_mpi, fppmodule.c built with FPP_PYMPI (the Manager's kind "mpi" and
 * python3 -m fpp.mpi's functions on libfpp_mpi). A file of its own so that its object never
 * shares a name with fpp._fpp's. */
#define FPP_PYMPI 1
#include "fppmodule.c"
