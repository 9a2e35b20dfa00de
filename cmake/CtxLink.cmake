# Link options every shared library of libctx gets (GNU ld, gold, lld):
#  - a version script: only the public names are exported;
#  - -z nodelete: the library's threads (timer, executor, signal watcher) and
#    its thread-exit destructors outlive any call, so dlclose() must not unmap
#    it (language bindings dlclose their libraries);
#  - -z defs: no undefined symbol slips through (not under sanitizers, whose
#    runtime provides symbols at load time);
#  - -Bsymbolic-functions: the library's calls to its own public functions
#    go straight to them, not through the PLT (with the compile flag
#    -fno-semantic-interposition: see CTX_LIB_FLAGS in CMakeLists.txt).
function(ctx_shared_link_options target map)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "GNU|Clang" OR APPLE)
    return()
  endif()
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${map}" "LINKER:-z,nodelete"
    "LINKER:-Bsymbolic-functions")
  if(CTX_SANITIZE STREQUAL "")
    target_link_options(${target} PRIVATE "LINKER:-z,defs")
  endif()
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${map})
endfunction()
