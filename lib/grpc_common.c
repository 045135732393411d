/* Status mapping and byte-buffer <-> protobuf-c helpers shared by the gRPC server and client. */
#include "grpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/config.h"

int ordo_grpc_code_of(ordo_status st)
{
    switch (st) {
    case ORDO_OK: return GRPC_STATUS_OK;
    case ORDO_INVALID: return GRPC_STATUS_INVALID_ARGUMENT;
    case ORDO_CONFLICT: return GRPC_STATUS_FAILED_PRECONDITION;
    case ORDO_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case ORDO_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case ORDO_RETRY: return GRPC_STATUS_ABORTED;
    case ORDO_TOO_LARGE: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case ORDO_TIMEOUT: return GRPC_STATUS_DEADLINE_EXCEEDED;
    case ORDO_UNIMPLEMENTED: return GRPC_STATUS_UNIMPLEMENTED;
    case ORDO_NO_MEMORY: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case ORDO_INTERNAL: return GRPC_STATUS_INTERNAL;
    case ORDO_UNAUTHENTICATED: return GRPC_STATUS_UNAUTHENTICATED;
    case ORDO_FORBIDDEN: return GRPC_STATUS_PERMISSION_DENIED;
    }
    return GRPC_STATUS_UNKNOWN;
}

ordo_status ordo_status_of_grpc_code(int code)
{
    switch (code) {
    case GRPC_STATUS_OK: return ORDO_OK;
    case GRPC_STATUS_INVALID_ARGUMENT: return ORDO_INVALID;
    case GRPC_STATUS_FAILED_PRECONDITION: return ORDO_CONFLICT;
    case GRPC_STATUS_NOT_FOUND: return ORDO_NOT_FOUND;
    case GRPC_STATUS_UNAVAILABLE: return ORDO_UNAVAILABLE;
    case GRPC_STATUS_ABORTED: return ORDO_RETRY;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return ORDO_TOO_LARGE;
    case GRPC_STATUS_DEADLINE_EXCEEDED: return ORDO_TIMEOUT;
    case GRPC_STATUS_UNIMPLEMENTED: return ORDO_UNIMPLEMENTED;
    case GRPC_STATUS_UNAUTHENTICATED: return ORDO_UNAUTHENTICATED;
    case GRPC_STATUS_PERMISSION_DENIED: return ORDO_FORBIDDEN;
    default: return ORDO_INTERNAL;
    }
}

grpc_byte_buffer *ordo_grpc_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *ordo_grpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                                      GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

gpr_timespec ordo_grpc_deadline_ms(int timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

const char *ordo_grpc_role_name(ordo_grpc_role role)
{
    switch (role) {
    case ORDO_ROLE_READER: return "reader";
    case ORDO_ROLE_WRITER: return "writer";
    case ORDO_ROLE_ADMIN: return "admin";
    case ORDO_ROLE_NONE: break;
    }
    return "none";
}

bool ordo_grpc_tls_on(const ordo_grpc_tls_t *tls)
{
    return tls != NULL &&
           (ordo_opt_given(tls->ca_file) || ordo_opt_given(tls->cert_file) || ordo_opt_given(tls->key_file));
}

/* The PEM file @p path (at most 1 MiB) into a malloc'd NUL-terminated string;
 * errors name the option (@p opt @p what) and the file. */
static ordo_status read_pem(const char *path, const char *opt, const char *what, char **out, ordo_error_t *err)
{
    ordo_error_t why;

    if (ordo_file_read(path, 1 << 20, out, &why) != ORDO_OK)
        return ordo_error_set(err, why.code, "%s%s %.400s", opt, what, why.msg);
    if (strstr(*out, "-----BEGIN ") == NULL) {
        free(*out);
        *out = NULL;
        return ordo_error_set(err, ORDO_INVALID, "%s%s %s: not a PEM file", opt, what, path);
    }
    return ORDO_OK;
}

ordo_status ordo_grpc_pem_load(const ordo_grpc_tls_t *tls, ordo_grpc_pem_t *out, ordo_error_t *err)
{
    const char *opt = tls->option_prefix != NULL ? tls->option_prefix : "--tls-";
    ordo_status st;

    memset(out, 0, sizeof *out);
    if (!ordo_opt_given(tls->ca_file))
        return ordo_error_set(err, ORDO_INVALID, "TLS needs %sca (the CA that signs the peers' certificates)", opt);
    if (!ordo_opt_given(tls->cert_file))
        return ordo_error_set(err, ORDO_INVALID, "TLS needs %scert (this process's certificate)", opt);
    if (!ordo_opt_given(tls->key_file))
        return ordo_error_set(err, ORDO_INVALID, "TLS needs %skey (this process's private key)", opt);
    /* (an error names the option and the file; a file's content never reaches a message) */
    if ((st = read_pem(tls->ca_file, opt, "ca", &out->ca, err)) != ORDO_OK ||
        (st = read_pem(tls->cert_file, opt, "cert", &out->cert, err)) != ORDO_OK ||
        (st = read_pem(tls->key_file, opt, "key", &out->key, err)) != ORDO_OK)
        ordo_grpc_pem_free(out);
    return st;
}

void ordo_grpc_pem_free(ordo_grpc_pem_t *pem)
{
    free(pem->ca);
    ordo_secret_free(pem->key);
    free(pem->cert);
    memset(pem, 0, sizeof *pem);
}
