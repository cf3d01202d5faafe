/*
 * errors.h -- error codes shared by every core module.
 *
 * Core C functions return 0 on success or one of these negative codes;
 * ocap_strerror() turns a code into a short English phrase.
 */
#ifndef OCAP_ERRORS_H
#define OCAP_ERRORS_H

#define OCAP_OK 0
#define OCAP_ENOMEM (-1)    /* out of memory */
#define OCAP_EIO (-2)       /* input/output error from the database */
#define OCAP_ELOCKED (-3)   /* the database is in use by another process */
#define OCAP_ECORRUPT (-4)  /* the database is corrupt */
#define OCAP_ENOTDB (-5)    /* the directory is not an ocap database */
#define OCAP_EVERSION (-6)  /* the database has another schema version */
#define OCAP_EINVAL (-7)    /* invalid argument */
#define OCAP_ENOTFOUND (-8) /* no such key, vat or reference */
#define OCAP_EFATAL (-9)    /* a vat failed fatally */
#define OCAP_EREFUSED (-10) /* a delivery was refused; the vat is kept */
#define OCAP_ESCRIPT (-11)  /* Lua code (a host script, a config) failed */
#define OCAP_ESTOPPED (-12) /* the host is being freed */

const char *ocap_strerror(int code);

#endif
