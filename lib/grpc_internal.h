/* Private to lib/: helpers shared by grpc_server.c and grpc_client.c. */
#ifndef ORDO_GRPC_INTERNAL_H
#define ORDO_GRPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "ordo/grpc.h"

/** Packs @p msg into a new byte buffer (caller destroys it). */
grpc_byte_buffer *ordo_grpc_pack(const ProtobufCMessage *msg);

/** Unpacks @p bb with @p desc; NULL when it is not a valid message or a
 *  string field in it holds a NUL byte (which a C string would silently cut
 *  short), saying which in @p why (may be NULL). */
ProtobufCMessage *ordo_grpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, char *why,
                                   size_t why_len);

/** A channel argument with an integer value, for an initialiser list of grpc_arg. */
#define ORDO_GRPC_INT_ARG(name, v) {.type = GRPC_ARG_INTEGER, .key = (char *)(name), .value.integer = (v)}

/** The PEM files of @p tls read into memory (NUL-terminated, malloc'd, freed
 *  with ordo_grpc_pem_free), once it names all three; errors name the
 *  option (tls->option_prefix) and the file. */
typedef struct ordo_grpc_pem {
    char *ca, *cert, *key;
} ordo_grpc_pem_t;
ordo_status ordo_grpc_pem_load(const ordo_grpc_tls_t *tls, ordo_grpc_pem_t *out, ordo_error_t *err);
void ordo_grpc_pem_free(ordo_grpc_pem_t *pem);

/** Now + @p timeout_ms on the realtime clock; infinite for timeout_ms <= 0. */
gpr_timespec ordo_grpc_deadline_ms(int timeout_ms);

#endif
