# FppMpi.cmake: libfpp_mpi, the MPI executor (issue 11), with its example, tests and bench.
# Included from the top-level CMakeLists.txt after libfpp. FPP_WITH_MPI: AUTO (default) builds
# it when CMake finds MPI, ON requires MPI, OFF skips it. libfpp itself never links MPI.
set(FPP_WITH_MPI AUTO CACHE STRING "Build libfpp_mpi, the MPI executor: AUTO (when MPI is found), ON or OFF")
set_property(CACHE FPP_WITH_MPI PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${FPP_WITH_MPI}" _fpp_with_mpi)
if(_fpp_with_mpi STREQUAL "OFF")
  message(STATUS "fpp: libfpp_mpi off (FPP_WITH_MPI=OFF)")
  return()
elseif(_fpp_with_mpi STREQUAL "ON")
  find_package(MPI REQUIRED COMPONENTS C)
elseif(_fpp_with_mpi STREQUAL "AUTO")
  find_package(MPI QUIET COMPONENTS C)
  if(NOT MPI_C_FOUND)
    message(STATUS "fpp: libfpp_mpi off (no MPI found; apt-get install libopenmpi-dev)")
    return()
  endif()
else()
  message(FATAL_ERROR "FPP_WITH_MPI must be AUTO, ON or OFF (got '${FPP_WITH_MPI}')")
endif()
message(STATUS "fpp: libfpp_mpi on (MPI ${MPI_C_VERSION}, ${MPIEXEC_EXECUTABLE})")

fpp_layer_sources(FPP_MPI_SOURCES libfpp_mpi)
# The guard (lib/mpi/guard.c): one wrapper per MPI function, generated at build time from the
# mpi.h of this build, preprocessed with MPI's own flags (cmake/mpi-guard-gen.sh).
set(_fpp_guard_dir ${PROJECT_BINARY_DIR}/mpi_guard)
file(MAKE_DIRECTORY ${_fpp_guard_dir})
file(WRITE ${_fpp_guard_dir}/mpi_h.c "#include <mpi.h>\n")
set(_fpp_guard_flags)
foreach(d ${MPI_C_INCLUDE_DIRS})
  list(APPEND _fpp_guard_flags -I${d})
endforeach()
foreach(d ${MPI_C_COMPILE_DEFINITIONS})
  list(APPEND _fpp_guard_flags -D${d})
endforeach()
add_custom_command(OUTPUT ${_fpp_guard_dir}/guard_gen.c
  COMMAND ${CMAKE_C_COMPILER} ${MPI_C_COMPILE_OPTIONS} ${_fpp_guard_flags} -E -MD -MF ${_fpp_guard_dir}/mpi_h.d
          -MT ${_fpp_guard_dir}/guard_gen.c ${_fpp_guard_dir}/mpi_h.c -o ${_fpp_guard_dir}/mpi_h.i
  COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/mpi-guard-gen.sh ${_fpp_guard_dir}/mpi_h.i ${_fpp_guard_dir}/guard_gen.c
  DEPENDS ${PROJECT_SOURCE_DIR}/cmake/mpi-guard-gen.sh ${_fpp_guard_dir}/mpi_h.c
  DEPFILE ${_fpp_guard_dir}/mpi_h.d
  COMMENT "Generating libfpp_mpi's MPI guard from mpi.h"
  VERBATIM)
list(APPEND FPP_MPI_SOURCES ${_fpp_guard_dir}/guard_gen.c)
# The library and its test build both compile guard_gen.c: one target generates it, which both
# depend on, or a parallel build runs the command twice at once and one of them reads the
# other's half-written mpi_h.i.
add_custom_target(fpp_mpi_guard DEPENDS ${_fpp_guard_dir}/guard_gen.c)
# Objects once, for the library and for the unit tests of its wire format.
add_library(fpp_mpi_objects OBJECT ${FPP_MPI_SOURCES})
add_dependencies(fpp_mpi_objects fpp_mpi_guard)
target_compile_options(fpp_mpi_objects PRIVATE ${FPP_WARNINGS})
target_compile_definitions(fpp_mpi_objects PRIVATE _GNU_SOURCE)
target_include_directories(fpp_mpi_objects PRIVATE ${PROJECT_SOURCE_DIR}/lib)
target_link_libraries(fpp_mpi_objects PUBLIC fpp MPI::MPI_C ${CMAKE_DL_LIBS})

# Shared, on libfpp.so: one copy of libfpp's globals (registry, log) in the process.
add_library(fpp_mpi SHARED $<TARGET_OBJECTS:fpp_mpi_objects>)
target_link_libraries(fpp_mpi PUBLIC fpp MPI::MPI_C PRIVATE ${CMAKE_DL_LIBS})
target_include_directories(fpp_mpi PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(fpp_mpi PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
add_library(fpp::fpp_mpi ALIAS fpp_mpi)

install(TARGETS fpp_mpi EXPORT fppMpiTargets LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES include/fpp_mpi.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT fppMpiTargets NAMESPACE fpp:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fpp)

# pkg-config: MPI's own flags are written in (every MPI has them; not every one a .pc file).
set(FPP_MPI_PC_CFLAGS "")
foreach(d ${MPI_C_INCLUDE_DIRS})
  string(APPEND FPP_MPI_PC_CFLAGS " -I${d}")
endforeach()
foreach(o ${MPI_C_COMPILE_OPTIONS})
  string(APPEND FPP_MPI_PC_CFLAGS " ${o}")
endforeach()
foreach(d ${MPI_C_COMPILE_DEFINITIONS})
  string(APPEND FPP_MPI_PC_CFLAGS " -D${d}")
endforeach()
set(FPP_MPI_PC_LIBS "")
foreach(l ${MPI_C_LIBRARIES})
  string(APPEND FPP_MPI_PC_LIBS " ${l}")
endforeach()
configure_file(fpp-mpi.pc.in ${PROJECT_BINARY_DIR}/fpp-mpi.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/fpp-mpi.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

if(FPP_BUILD_EXAMPLES)
  add_executable(mpi_primes examples/mpi_primes.c)
  target_link_libraries(mpi_primes PRIVATE fpp::fpp_mpi)
  target_compile_options(mpi_primes PRIVATE ${FPP_WARNINGS})
  target_compile_definitions(mpi_primes PRIVATE _GNU_SOURCE)
  set_target_properties(mpi_primes PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/examples)
  if(FPP_BUILD_TESTS)
    add_test(NAME mpi_example_primes
      COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 3 --oversubscribe $<TARGET_FILE:mpi_primes>)
    set_tests_properties(mpi_example_primes PROPERTIES RUN_SERIAL ON TIMEOUT 300
      ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
      PASS_REGULAR_EXPRESSION "5761455 primes below 100000000 \\(100 tasks, 1 crashed and ran again")
  endif()
endif()

if(FPP_BUILD_TESTS)
  # The test build of libfpp_mpi (core/testing.h: FPP_MPI_CHUNK), on the test build of libfpp.
  add_library(fpp_mpi_testing STATIC ${FPP_MPI_SOURCES})
  add_dependencies(fpp_mpi_testing fpp_mpi_guard)
  target_compile_options(fpp_mpi_testing PRIVATE ${FPP_WARNINGS})
  target_compile_definitions(fpp_mpi_testing PRIVATE _GNU_SOURCE FPP_TESTING)
  target_include_directories(fpp_mpi_testing PRIVATE ${PROJECT_SOURCE_DIR}/lib)
  target_link_libraries(fpp_mpi_testing PUBLIC fpp_testing MPI::MPI_C ${CMAKE_DL_LIBS})
  add_subdirectory(tests/mpi)
endif()

if(FPP_BUILD_BENCH)
  add_executable(fpp-mpi-bench bench/fpp-mpi-bench.c)
  target_link_libraries(fpp-mpi-bench PRIVATE fpp::fpp_mpi m)
  target_compile_options(fpp-mpi-bench PRIVATE ${FPP_WARNINGS})
  target_compile_definitions(fpp-mpi-bench PRIVATE _GNU_SOURCE)
  set_target_properties(fpp-mpi-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
endif()
