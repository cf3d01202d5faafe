/* The cryptography of CapTP sessions, from libsodium: per-session Ed25519
 * key pairs, detached signatures, SHA-256 and random bytes. Nothing here is
 * written by hand; each function is a thin, checked call into the library. */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <sodium.h>

#include "lnet.h"

/* crypto.keypair() -> public, secret  [-0, +2, e]
 * A fresh Ed25519 key pair: 32 bytes of public key, 64 of secret key. */
static int c_keypair(lua_State *L) {
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  lua_pushlstring(L, (const char *)pk, sizeof pk);
  lua_pushlstring(L, (const char *)sk, sizeof sk);
  sodium_memzero(sk, sizeof sk);
  return 2;
}

/* crypto.sign(secret, message) -> signature  [-0, +1, e]
 * The 64-byte detached Ed25519 signature of message. */
static int c_sign(lua_State *L) {
  size_t skn, n;
  const char *sk = luaL_checklstring(L, 1, &skn);
  const char *m = luaL_checklstring(L, 2, &n);
  luaL_argcheck(L, skn == crypto_sign_SECRETKEYBYTES, 1, "secret key must be 64 bytes");
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, NULL, (const unsigned char *)m, n, (const unsigned char *)sk);
  lua_pushlstring(L, (const char *)sig, sizeof sig);
  return 1;
}

/* crypto.verify(public, message, signature) -> boolean  [-0, +1, e]
 * A key or signature of the wrong length is simply not valid: both come
 * from peers. */
static int c_verify(lua_State *L) {
  size_t pkn, n, sn;
  const char *pk = luaL_checklstring(L, 1, &pkn);
  const char *m = luaL_checklstring(L, 2, &n);
  const char *sig = luaL_checklstring(L, 3, &sn);
  int ok = pkn == crypto_sign_PUBLICKEYBYTES && sn == crypto_sign_BYTES &&
           crypto_sign_verify_detached((const unsigned char *)sig, (const unsigned char *)m, n,
                                       (const unsigned char *)pk) == 0;
  lua_pushboolean(L, ok);
  return 1;
}

/* crypto.sha256(s) -> 32 bytes  [-0, +1, e] */
static int c_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, (const unsigned char *)s, n);
  lua_pushlstring(L, (const char *)h, sizeof h);
  return 1;
}

/* crypto.random(n) -> n random bytes  [-0, +1, e] */
static int c_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "between 0 and 4096 bytes");
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  randombytes_buf(p, (size_t)n);
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static const luaL_Reg crypto_functions[] = {
    {"keypair", c_keypair}, {"sign", c_sign},     {"verify", c_verify},
    {"sha256", c_sha256},   {"random", c_random}, {NULL, NULL},
};

int lcrypto_open(lua_State *L) {
  if (sodium_init() < 0)
    return luaL_error(L, "libsodium failed to initialise");
  luaL_newlib(L, crypto_functions);
  return 1;
}
