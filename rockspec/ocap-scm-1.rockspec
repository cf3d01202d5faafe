rockspec_format = "3.0"
package = "ocap"
version = "scm-1"
source = {
  url = "git+file:///dev/null",
}
description = {
  summary = "An object-capability kernel for Lua: vats, eventual send, persistence",
  detailed = [[
ocap runs independent or untrusted Lua programs ("vats") that cooperate only
through object references they were given, with a C core on LevelDB.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    OCAP_LUADIR = "$(LUADIR)",
    OCAP_LIBDIR = "$(LIBDIR)",
    OCAP_BUILD_TESTS = "OFF",
  },
}
