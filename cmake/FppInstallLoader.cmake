# FppInstallLoader.cmake: run at `cmake --install` time (install(SCRIPT)), after libfpp is
# installed: makes the library findable by the dynamic loader without a step left to the user.
#   - libdir on the loader's search path (/usr/local/lib on Debian, say), installing as root into
#     the real root (no DESTDIR): runs ldconfig, so that programs linked with -lfpp start at once
#     (without it: "libfpp.so.0: cannot open shared object file" until someone runs ldconfig);
#   - on the search path but not root, or into a DESTDIR (a package's staging area): says what
#     remains (ldconfig, or the package's own trigger);
#   - elsewhere: programs built with `pkg-config fpp` carry a run path to it (fpp.pc), and
#     CMake's fpp::fpp gives programs in their build tree one; says so.
# FPP_LIBDIR_REL: the libdir as configured (relative to the prefix, or absolute).
if(IS_ABSOLUTE "${FPP_LIBDIR_REL}")
  set(_libdir "${FPP_LIBDIR_REL}")
else()
  set(_libdir "${CMAKE_INSTALL_PREFIX}/${FPP_LIBDIR_REL}")
endif()
get_filename_component(_libdir "${_libdir}" REALPATH)

# The directories the loader searches: what `ldconfig -v -N -X` lists (it reads the
# configuration, changes nothing).
find_program(_ldconfig ldconfig PATHS /sbin /usr/sbin NO_DEFAULT_PATH)
if(NOT _ldconfig)
  find_program(_ldconfig ldconfig)
endif()
set(_searched FALSE)
if(_ldconfig)
  execute_process(COMMAND "${_ldconfig}" -v -N -X OUTPUT_VARIABLE _out ERROR_QUIET)
  string(REGEX MATCHALL "(^|\n)/[^:\n]*:" _dirs "${_out}")
  foreach(_d ${_dirs})
    string(REGEX REPLACE "^\n?(/[^:]*):$" "\\1" _d "${_d}")
    get_filename_component(_d "${_d}" REALPATH)
    if(_d STREQUAL _libdir)
      set(_searched TRUE)
    endif()
  endforeach()
endif()

execute_process(COMMAND id -u OUTPUT_VARIABLE _uid OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(_searched AND "$ENV{DESTDIR}" STREQUAL "" AND _uid STREQUAL "0")
  execute_process(COMMAND "${_ldconfig}" RESULT_VARIABLE _rc)
  if(_rc EQUAL 0)
    message(STATUS "fpp: ran ldconfig: programs find libfpp in ${_libdir} at once")
  else()
    message(WARNING "fpp: ldconfig failed (${_rc}): run it before starting programs linked with -lfpp")
  endif()
elseif(_searched AND NOT "$ENV{DESTDIR}" STREQUAL "")
  message(STATUS "fpp: installed into DESTDIR: the package must run ldconfig when it is installed")
elseif(_searched)
  message(STATUS "fpp: ${_libdir} is on the loader's search path, but its cache is root's to refresh: "
                 "run `sudo ldconfig` before starting programs linked with -lfpp")
else()
  message(STATUS "fpp: ${_libdir} is not on the loader's search path: programs built with "
                 "`pkg-config fpp` find libfpp there by their run path; others need -Wl,-rpath,${_libdir} "
                 "or LD_LIBRARY_PATH")
endif()
