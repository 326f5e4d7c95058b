# The Debian package, and what is installed only for it: manual pages, the systemd unit and its
# options file, the HAProxy example.  Included last from the top-level CMakeLists.txt.
#
#   cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr
#   cmake --build build-deb && (cd build-deb && cpack -G DEB)     # -> build-deb/appmsg_*.deb
#
# One package, appmsg: the shared library libappmsg.so.0 and the static one, the headers,
# appmsg.pc, the CMake package, the programs in /usr/bin, app-server(1) and app-client(1), and
# appmsg-server.service.
if(NOT APPMSG_TOP_LEVEL)
  return()
endif()

# ---- manual pages: hand-written roff in doc/, compressed as Debian installs them ---------------
set(APPMSG_MAN_PAGES app-server.1 app-client.1)
find_program(APPMSG_GZIP gzip)
set(man_files "")
foreach(page ${APPMSG_MAN_PAGES})
  if(APPMSG_GZIP)
    set(out ${PROJECT_BINARY_DIR}/doc/${page}.gz)
    # -n: no name or time stamp inside, so the same page gives the same bytes.
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/doc
      COMMAND ${APPMSG_GZIP} -9 -n -c ${PROJECT_SOURCE_DIR}/doc/${page} > ${out}
      DEPENDS ${PROJECT_SOURCE_DIR}/doc/${page}
      COMMENT "Compressing the manual page ${page}" VERBATIM)
  else()
    set(out ${PROJECT_SOURCE_DIR}/doc/${page})
  endif()
  list(APPEND man_files ${out})
endforeach()
add_custom_target(appmsg_man_pages ALL DEPENDS ${man_files})
install(FILES ${man_files} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# ---- the service ----------------------------------------------------------------------------------
# The unit under <prefix>/lib/systemd/system (systemd reads /usr/lib/systemd/system); the options
# file in /etc/default when the prefix is /usr (as for the package), else under the prefix.
set(APPMSG_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "Where appmsg-server.service is installed (relative: under the prefix)")
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/appmsg-server.service
        DESTINATION ${APPMSG_SYSTEMD_UNIT_DIR})
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(APPMSG_DEFAULT_DIR "/etc/default")
else()
  set(APPMSG_DEFAULT_DIR "${CMAKE_INSTALL_SYSCONFDIR}/default")
endif()
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/appmsg-server.default
        DESTINATION ${APPMSG_DEFAULT_DIR} RENAME appmsg-server)
# The HAProxy configuration, as an example to start from.
install(FILES ${PROJECT_SOURCE_DIR}/deploy/haproxy/appmsg.cfg
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples RENAME haproxy.cfg)
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- the package ------------------------------------------------------------------------------------
set(CPACK_PACKAGE_NAME appmsg)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "the appmsg authors")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "framework for request/response protocols over TCP (application messages)")
# The long description, under the summary line (CPack indents it).
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "appmsg speaks the application message of the Socket Programming in Python
guide: a 2-byte header length, a JSON header, then the content, over TCP or
TLS.  This package
has the library (shared and static), its headers, pkg-config file and CMake
package, the programs app-server, app-client, kv-server, kv-client and the
guide's echo and multiconn programs, and appmsg-server.service, app-server as
a sandboxed systemd service.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # appmsg_0.2.0_amd64.deb
# Programs and the shared library without their debugging symbols (the static library keeps
# its symbol table).
set(CPACK_STRIP_FILES ON)
# Run-time dependencies from the binaries themselves (dpkg-shlibdeps): libc6, libssl3,
# and libhiredis0.14 when app-server is built with its Redis store.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Building against the package needs the headers of OpenSSL (the static library uses it, and
# appmsgConfig.cmake and appmsg.pc ask for it) and pkg-config.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libssl-dev, libhttp-parser-dev, pkg-config")
# appmsg/adapters/hiredis.h, for programs that run hiredis on appmsg's loop, needs hiredis's.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libhiredis-dev")
# A shlibs file, so that packages built against libappmsg.so.0 depend on this one.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# Maintainer scripts and control files: the options file is a conffile (kept, or asked about, on
# upgrade); ldconfig runs after the library comes or goes (a trigger); the service is stopped
# before removal and systemd told about the unit.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/deploy/debian/conffiles ${PROJECT_SOURCE_DIR}/deploy/debian/triggers
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_GENERATOR DEB)
set(CPACK_SOURCE_GENERATOR TGZ)
include(CPack)
