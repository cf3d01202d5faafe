rockspec_format = "3.0"
package = "ocap"
version = "scm-1"
-- From a checkout, `luarocks make rockspec/ocap-scm-1.rockspec` builds and
-- installs the checkout itself, offline. `luarocks install` of this file
-- clones source.url instead: the git repository at /usr/src/ocap (a clone
-- or a symlink to one), also offline. See README.md.
source = {
  url = "git+file:///usr/src/ocap",
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
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  LEVELDB = { header = "leveldb/c.h", library = "leveldb" },
  LIBUV = { header = "uv.h", library = "uv" },
  LIBSODIUM = { header = "sodium.h", library = "sodium" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    CMAKE_INCLUDE_PATH = "$(LEVELDB_INCDIR);$(LIBUV_INCDIR);$(LIBSODIUM_INCDIR);$(OPENSSL_INCDIR)",
    CMAKE_LIBRARY_PATH = "$(LEVELDB_LIBDIR);$(LIBUV_LIBDIR);$(LIBSODIUM_LIBDIR);$(OPENSSL_LIBDIR)",
    OCAP_LUADIR = "$(LUADIR)",
    OCAP_LIBDIR = "$(LIBDIR)",
    OCAP_BUILD_TESTS = "OFF",
  },
}
