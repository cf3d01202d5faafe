/* The identity of a kernel on the `tcp-tls` netlayer, from OpenSSL: its
 * long-term Ed25519 key (kept by Lua in the database as PKCS#8), the
 * self-signed certificate that carries the key, and the TLS 1.3 context
 * that presents it and asks peers for theirs. The designator of a key is
 * the lower-case hex SHA-256 of its 32 raw bytes: a URL names the key it
 * must reach, and no authority vouches for it. lnet.c runs the connections
 * of a context over memory BIOs; nothing here touches a socket. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "hex.h"
#include "lnet.h"
#include "lrpc.h"

#define CONTEXT_MT "ocap.tls.context"

typedef struct {
  SSL_CTX *ctx;
  char designator[LTLS_DESIGNATOR_LEN + 1];
} contextbox_t;

int ltls_designator(EVP_PKEY *pk, char out[LTLS_DESIGNATOR_LEN + 1]) {
  unsigned char raw[32], digest[32];
  size_t n = sizeof raw;
  unsigned int dn = sizeof digest;
  if (!pk || EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(pk, raw, &n) != 1 || n != sizeof raw ||
      EVP_Digest(raw, n, digest, &dn, EVP_sha256(), NULL) != 1 || dn != sizeof digest)
    return -1;
  ocap_hex_encode(out, digest, sizeof digest);
  return 0;
}

/* Replaces the check of the peer's chain against a store of authorities,
 * which this netlayer has none of: the peer's key is judged by its
 * designator once the handshake is done (lnet.c). The certificate must
 * hold an Ed25519 key, the only kind a designator names; TLS 1.3 has
 * already checked that the peer holds its private half. */
static int verify_peer(X509_STORE_CTX *store, void *arg) {
  X509 *cert = X509_STORE_CTX_get0_cert(store);
  EVP_PKEY *pk = cert ? X509_get0_pubkey(cert) : NULL;
  if (!pk || EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    return 0;
  }
  return 1;
}

/* A self-signed X.509 certificate of pk. Its dates are wide and never
 * checked: what a peer trusts is the key, through the designator. NULL on
 * failure. */
static X509 *self_signed(EVP_PKEY *pk) {
  X509 *x = X509_new();
  if (!x)
    return NULL;
  X509_NAME *name = X509_get_subject_name(x);
  int ok = X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
           X509_gmtime_adj(X509_getm_notBefore(x), -86400) &&
           X509_time_adj_ex(X509_getm_notAfter(x), 36500, 0, NULL) &&
           X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"ocap", -1,
                                      -1, 0) &&
           X509_set_issuer_name(x, name) && X509_set_pubkey(x, pk) && X509_sign(x, pk, NULL) > 0;
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* The TLS 1.3 context of key pk: it presents pk's certificate, requires
 * the peer's, and signs only with Ed25519. NULL on failure. */
static SSL_CTX *make_context(EVP_PKEY *pk) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  X509 *cert = self_signed(pk);
  int ok = ctx && cert && SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) &&
           SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, pk) == 1 &&
           SSL_CTX_check_private_key(ctx) == 1 && SSL_CTX_set1_sigalgs_list(ctx, "ed25519") == 1;
  X509_free(cert);
  if (!ok) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  SSL_CTX_set_cert_verify_callback(ctx, verify_peer, NULL);
  /* Every connection is a new CapTP session: nothing to resume, so no
   * tickets to send and no cache to keep. */
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

SSL_CTX *ltls_checkcontext(lua_State *L, int idx) {
  contextbox_t *box = luaL_checkudata(L, idx, CONTEXT_MT);
  if (!box->ctx)
    luaL_argerror(L, idx, "TLS context is closed");
  return box->ctx;
}

/* [-0, +1, m] Pushes OpenSSL's reason for the last failure, after prefix,
 * and clears its error queue. */
static void push_reason(lua_State *L, const char *prefix) {
  unsigned long e = ERR_get_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  lua_pushfstring(L, "%s: %s", prefix, why ? why : "unknown error");
}

/* tls.newKey() -> pkcs8  [-0, +1, e]
 * A fresh Ed25519 private key, as PKCS#8 DER bytes. */
static int tls_new_key(lua_State *L) {
  EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  PKCS8_PRIV_KEY_INFO *p8 = pk ? EVP_PKEY2PKCS8(pk) : NULL;
  unsigned char *der = NULL;
  int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
  PKCS8_PRIV_KEY_INFO_free(p8);
  EVP_PKEY_free(pk);
  if (n <= 0) {
    push_reason(L, "tls.newKey");
    return lua_error(L);
  }
  lua_pushlstring(L, (const char *)der, (size_t)n);
  OPENSSL_clear_free(der, (size_t)n);
  return 1;
}

/* tls.context(pkcs8) -> context | nil, err  [-0, +1|2, e]
 * The TLS context of the key in pkcs8 (from tls.newKey); nil and why when
 * the bytes are not an Ed25519 private key. */
static int tls_context(lua_State *L) {
  size_t n;
  const unsigned char *der = (const unsigned char *)luaL_checklstring(L, 1, &n);
  contextbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->ctx = NULL;
  luaL_setmetatable(L, CONTEXT_MT);
  const unsigned char *p = der;
  PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)n);
  EVP_PKEY *pk = p8 && p == der + n ? EVP_PKCS82PKEY(p8) : NULL;
  PKCS8_PRIV_KEY_INFO_free(p8);
  if (!pk || ltls_designator(pk, box->designator) != 0) {
    EVP_PKEY_free(pk);
    ERR_clear_error();
    lua_pushnil(L);
    lua_pushliteral(L, "not an Ed25519 private key in PKCS#8");
    return 2;
  }
  box->ctx = make_context(pk);
  EVP_PKEY_free(pk);
  if (!box->ctx) {
    lua_pushnil(L);
    push_reason(L, "cannot make the TLS context");
    return 2;
  }
  return 1;
}

/* context:designator() -> string  [-0, +1, e]
 * The designator of the context's key: 64 hex digits. */
static int context_designator(lua_State *L) {
  ltls_checkcontext(L, 1);
  contextbox_t *box = lua_touserdata(L, 1);
  lua_pushstring(L, box->designator);
  return 1;
}

/* [-0, +0, -] The context goes; connections made with it keep their own
 * reference to it (SSL_new takes one). */
static int context_gc(lua_State *L) {
  contextbox_t *box = luaL_checkudata(L, 1, CONTEXT_MT);
  SSL_CTX_free(box->ctx);
  box->ctx = NULL;
  return 0;
}

static const luaL_Reg context_methods[] = {
    {"designator", context_designator},
    {NULL, NULL},
};

static const luaL_Reg tls_functions[] = {
    {"newKey", tls_new_key},
    {"context", tls_context},
    {NULL, NULL},
};

int ltls_open(lua_State *L) {
  lrpc_class(L, CONTEXT_MT, context_methods);
  luaL_getmetatable(L, CONTEXT_MT);
  lua_pushcfunction(L, context_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, tls_functions);
  return 1;
}
