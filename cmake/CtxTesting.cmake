# Test helpers shared by tests/ and integrations/*/: cmocka, the timeout
# scale factor, and ctx_add_test().
find_package(PkgConfig)
if(PkgConfig_FOUND)
  pkg_check_modules(CMOCKA cmocka)
endif()
if(NOT CMOCKA_FOUND)
  find_library(CMOCKA_LIBRARIES cmocka REQUIRED)
  set(CMOCKA_INCLUDE_DIRS "")
endif()

# Scales every test's timeout: 4 under sanitizers; valgrind runs set more.
if(NOT CTX_TIMEOUT_FACTOR)
  if(CTX_SANITIZE STREQUAL "")
    set(CTX_TIMEOUT_FACTOR 1)
  else()
    set(CTX_TIMEOUT_FACTOR 4)
  endif()
endif()

# ctx_add_test(NAME SOURCES src... [LABELS l...] [TIMEOUT s] [LIBS lib...]
#              [INTERNAL])
# Links the static library. INTERNAL tests (the core's own) also see the
# private headers, to reach ctx__ test hooks; integration tests do not.
function(ctx_add_test name)
  cmake_parse_arguments(T "INTERNAL" "TIMEOUT" "SOURCES;LABELS;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_include_directories(${name} PRIVATE ${CMOCKA_INCLUDE_DIRS}
    ${PROJECT_SOURCE_DIR}/tests)
  if(T_INTERNAL)
    target_include_directories(${name} PRIVATE
      ${PROJECT_SOURCE_DIR}/src/core ${PROJECT_SOURCE_DIR}/src/platform)
  endif()
  target_compile_definitions(${name} PRIVATE _GNU_SOURCE ${CTX_DEFS})
  if(NOT T_LIBS)
    set(T_LIBS ctx_static)
  endif()
  target_link_libraries(${name} PRIVATE ${T_LIBS} ${CMOCKA_LIBRARIES})
  math(EXPR _t "${T_TIMEOUT} * ${CTX_TIMEOUT_FACTOR}")
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${_t} LABELS "${T_LABELS}"
    ENVIRONMENT "CMOCKA_MESSAGE_OUTPUT=STDOUT" SKIP_RETURN_CODE 77)
endfunction()
