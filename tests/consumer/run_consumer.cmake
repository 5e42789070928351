# The consumer_find_package test (cmake -P): installs the kiln build tree into a fresh
# prefix, checks the exported targets, then configures, builds and runs tests/consumer
# against that prefix with CMAKE_PREFIX_PATH, as a user's project would.
#
#   -DKILN_BINARY_DIR=<kiln build tree>  -DCONSUMER_SOURCE_DIR=<tests/consumer>
#   -DWORK_DIR=<scratch folder>  -DGENERATOR=<cmake generator>  [-DMAKE_PROGRAM=...]
#   [-DCXX_COMPILER=...]  [-DKILN_SHARED=ON|OFF]
#   [-DKILN_SOURCE_DIR=<kiln source>]: first configure and build kiln itself from source in
#   WORK_DIR as a static, CPU-only library (BUILD_SHARED_LIBS=OFF, KILN_CUDA=OFF, no tests
#   or tools) and use that build: the consumer then links libkiln.a, which only works if
#   every kernel and backend is registered without static initialisers.
cmake_minimum_required(VERSION 3.20)
if(NOT KILN_SOURCE_DIR AND NOT DEFINED KILN_BINARY_DIR)
  message(FATAL_ERROR "run_consumer.cmake: -DKILN_BINARY_DIR=... (or -DKILN_SOURCE_DIR=...) is required")
endif()
foreach(v CONSUMER_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer.cmake: -D${v}=... is required")
  endif()
endforeach()

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${step} failed (${rc}):\n${out}")
  endif()
  message(STATUS "consumer test: ${step}: ok")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${prefix} ${build})

if(KILN_SOURCE_DIR)
  set(kiln_build ${WORK_DIR}/kiln-static)
  set(kiln_configure ${CMAKE_COMMAND} -S ${KILN_SOURCE_DIR} -B ${kiln_build} -G ${GENERATOR}
      -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DKILN_CUDA=OFF
      -DKILN_BUILD_TESTS=OFF -DKILN_BUILD_TOOLS=OFF)
  if(MAKE_PROGRAM)
    list(APPEND kiln_configure -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
  endif()
  if(CXX_COMPILER)
    list(APPEND kiln_configure -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
  endif()
  run("configure a static CPU-only kiln" ${kiln_configure})
  run("build the static kiln" ${CMAKE_COMMAND} --build ${kiln_build})
  set(KILN_BINARY_DIR ${kiln_build})
  set(KILN_SHARED OFF)
  if(NOT EXISTS ${kiln_build}/libkiln.a)
    message(FATAL_ERROR "consumer test: ${kiln_build}/libkiln.a was not built")
  endif()
endif()

run("install kiln to ${prefix}" ${CMAKE_COMMAND} --install ${KILN_BINARY_DIR} --prefix ${prefix})

# The exported targets of a shared kiln must not name CUDA, cuDNN or NCCL targets: they
# are private to libkiln.so, and a consumer need not have CUDA enabled to link it.
file(GLOB_RECURSE target_files ${prefix}/KilnTargets*.cmake)
if(NOT target_files)
  message(FATAL_ERROR "consumer test: no KilnTargets*.cmake under ${prefix}")
endif()
if(NOT DEFINED KILN_SHARED OR KILN_SHARED)
  foreach(f IN LISTS target_files)
    file(READ ${f} text)
    string(REGEX MATCHALL "(CUDA|CUDNN|NCCL)::[A-Za-z_]+" leaked "${text}")
    if(leaked)
      list(REMOVE_DUPLICATES leaked)
      message(FATAL_ERROR "consumer test: ${f} references ${leaked}; a shared kiln must keep them private")
    endif()
  endforeach()
endif()

set(configure ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build} -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
if(MAKE_PROGRAM)
  list(APPEND configure -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CXX_COMPILER)
  list(APPEND configure -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
run("configure the consumer" ${configure})

# find_package must have found the fresh installation, not the build tree.
file(STRINGS ${build}/CMakeCache.txt kiln_dir REGEX "^Kiln_DIR:")
string(REGEX REPLACE "^Kiln_DIR:[A-Z]+=" "" kiln_dir "${kiln_dir}")
file(REAL_PATH ${prefix} real_prefix)
file(REAL_PATH "${kiln_dir}" real_kiln_dir)
string(FIND "${real_kiln_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "consumer test: find_package(Kiln) found ${kiln_dir}, not the installation in ${prefix}")
endif()

run("build the consumer" ${CMAKE_COMMAND} --build ${build})
run("run the consumer" ${build}/kiln_consumer)
message(STATUS "${last_output}")
