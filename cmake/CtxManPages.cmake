# docs/reference/*.md become man pages in section 3 (man 3 ctx_with_cancel),
# converted by pandoc when it is installed; without pandoc nothing is made
# and the Markdown pages remain the reference. A page that documents several
# functions gets a .so link page per extra name (its "NAME" line lists them).
find_program(CTX_PANDOC pandoc)
option(CTX_MAN_PAGES "Make and install man pages from docs/reference (needs pandoc)" ON)
if(NOT CTX_MAN_PAGES OR NOT CTX_PANDOC)
  if(CTX_MAN_PAGES)
    message(STATUS "man pages: pandoc not found, not made")
  endif()
  return()
endif()
file(GLOB _ctx_ref_pages CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/reference/*.md)
set(_ctx_man_out ${PROJECT_BINARY_DIR}/man/man3)
set(_ctx_man_files)
foreach(_p IN LISTS _ctx_ref_pages)
  get_filename_component(_n ${_p} NAME_WE)
  if(_n STREQUAL "README")
    continue()
  endif()
  set(_out ${_ctx_man_out}/${_n}.3)
  add_custom_command(OUTPUT ${_out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_ctx_man_out}
    COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/md2man.sh ${CTX_PANDOC} ${_p} ${_out} ${_n}
    DEPENDS ${_p} ${PROJECT_SOURCE_DIR}/cmake/md2man.sh VERBATIM)
  list(APPEND _ctx_man_files ${_out})
endforeach()
add_custom_target(ctx_man ALL DEPENDS ${_ctx_man_files})
install(DIRECTORY ${_ctx_man_out} DESTINATION ${CMAKE_INSTALL_MANDIR})
