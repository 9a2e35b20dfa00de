# ctx_add_integration(NAME
#     PKG <pkg-config module> [<module> ...]   the dependency, by pkg-config name
#     SOURCES <src> ...                        the library's sources
#     [DESCRIPTION "..."])
#
# Builds libctx-NAME (shared and static, from one set of objects) when the
# dependency is found, as the option CTX_WITH_<NAME> (AUTO|ON|OFF) says:
# AUTO builds it if found, ON fails the configure without it, OFF skips it.
# Installs <ctx/NAME.h> (from include/ctx/), libctx-NAME.pc (Requires: libctx
# and the dependency), and the CMake component NAME: find_package(ctx
# COMPONENTS NAME) gives ctx::NAME (and ctx::NAME_static).
#
# The integration sees only the public headers (include/): no src/ path.
# It exports only ctx_NAME_* symbols. Sets CTX_HAVE_<NAME> in the caller.
function(ctx_add_integration name)
  cmake_parse_arguments(I "" "DESCRIPTION" "PKG;SOURCES" ${ARGN})
  string(TOUPPER "${name}" U)
  set(CTX_WITH_${U} AUTO CACHE STRING "Build libctx-${name}: AUTO, ON or OFF")
  set_property(CACHE CTX_WITH_${U} PROPERTY STRINGS AUTO ON OFF)
  set(CTX_HAVE_${U} OFF PARENT_SCOPE)
  if(CTX_WITH_${U} STREQUAL "OFF")
    message(STATUS "libctx-${name}: off (CTX_WITH_${U}=OFF)")
    return()
  endif()
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND)
    pkg_check_modules(CTX_DEP_${U} QUIET IMPORTED_TARGET GLOBAL ${I_PKG})
  endif()
  if(NOT CTX_DEP_${U}_FOUND)
    if(CTX_WITH_${U} STREQUAL "ON")
      message(FATAL_ERROR "libctx-${name}: CTX_WITH_${U}=ON but ${I_PKG} was not found (pkg-config)")
    endif()
    message(STATUS "libctx-${name}: skipped, ${I_PKG} not found")
    return()
  endif()
  message(STATUS "libctx-${name}: building against ${I_PKG} ${CTX_DEP_${U}_VERSION}")

  set(obj ctx_${name}_obj)
  add_library(${obj} OBJECT ${I_SOURCES})
  target_include_directories(${obj} PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_compile_definitions(${obj} PRIVATE _GNU_SOURCE)
  target_compile_options(${obj} PRIVATE ${CTX_LIB_FLAGS})
  target_link_libraries(${obj} PRIVATE PkgConfig::CTX_DEP_${U})

  add_library(ctx_${name} SHARED $<TARGET_OBJECTS:${obj}>)
  add_library(ctx_${name}_static STATIC $<TARGET_OBJECTS:${obj}>)
  target_link_libraries(ctx_${name} PUBLIC ctx_shared PkgConfig::CTX_DEP_${U})
  target_link_libraries(ctx_${name}_static PUBLIC ctx_static PkgConfig::CTX_DEP_${U})
  set(map ${CMAKE_CURRENT_BINARY_DIR}/libctx-${name}.map)
  file(WRITE ${map} "LIBCTX_${U}_${CTX_SOVERSION} {\n  global: ctx_${name}_*;\n  local: *;\n};\n")
  ctx_shared_link_options(ctx_${name} ${map})
  set_target_properties(ctx_${name} PROPERTIES OUTPUT_NAME ctx-${name}
    VERSION ${PROJECT_VERSION} SOVERSION ${CTX_SOVERSION} EXPORT_NAME ${name})
  set_target_properties(ctx_${name}_static PROPERTIES OUTPUT_NAME ctx-${name}
    EXPORT_NAME ${name}_static)
  add_library(ctx::${name} ALIAS ctx_${name})
  add_library(ctx::${name}_static ALIAS ctx_${name}_static)

  install(FILES ${PROJECT_SOURCE_DIR}/include/ctx/${name}.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ctx)
  install(TARGETS ctx_${name} ctx_${name}_static EXPORT ctx-${name}Targets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT ctx-${name}Targets NAMESPACE ctx:: DESTINATION ${CTX_CMAKE_DIR})
  # What the component's targets link to, recreated in the consumer.
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/ctx-${name}Deps.cmake
"find_package(PkgConfig REQUIRED QUIET)
if(NOT TARGET PkgConfig::CTX_DEP_${U})
  pkg_check_modules(CTX_DEP_${U} REQUIRED QUIET IMPORTED_TARGET GLOBAL ${I_PKG})
endif()
")
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ctx-${name}Deps.cmake DESTINATION ${CTX_CMAKE_DIR})
  if(NOT I_DESCRIPTION)
    set(I_DESCRIPTION "libctx integration: ${name}")
  endif()
  list(JOIN I_PKG " " _req)
  ctx_pkgconfig(libctx-${name} "${I_DESCRIPTION}" "libctx ${_req}" "-lctx-${name}" "")
  set_property(GLOBAL APPEND PROPERTY CTX_BUILT_INTEGRATIONS ${name})
  set(CTX_HAVE_${U} ON PARENT_SCOPE)
endfunction()
