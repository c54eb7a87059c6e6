# find_package(corofuse) for an installed corofuse (tools/install): the INTERFACE target
# corofuse::corofuse gives the include path, C++20 and liburing.
#   find_package(corofuse REQUIRED)
#   target_link_libraries(my_fs PRIVATE corofuse::corofuse)
get_filename_component(_corofuse_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

find_path(corofuse_LIBURING_INCLUDE_DIR liburing.h)
find_library(corofuse_LIBURING_LIBRARY uring)
if(NOT corofuse_LIBURING_INCLUDE_DIR OR NOT corofuse_LIBURING_LIBRARY)
  set(corofuse_FOUND FALSE)
  set(corofuse_NOT_FOUND_MESSAGE "corofuse needs liburing (Debian: apt-get install liburing-dev)")
  return()
endif()
find_package(Threads REQUIRED)

if(NOT TARGET corofuse::corofuse)
  add_library(corofuse::corofuse INTERFACE IMPORTED)
  set_target_properties(corofuse::corofuse PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_corofuse_prefix}/include;${corofuse_LIBURING_INCLUDE_DIR}"
    INTERFACE_COMPILE_FEATURES cxx_std_20
    INTERFACE_LINK_LIBRARIES "${corofuse_LIBURING_LIBRARY};Threads::Threads")
endif()
set(corofuse_INCLUDE_DIR "${_corofuse_prefix}/include")
unset(_corofuse_prefix)
