/* Status mapping and byte-buffer <-> protobuf-c helpers shared by the gRPC server and client. */
#include "grpc_internal.h"

#include <dlfcn.h>
#include <grpc/byte_buffer_reader.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/config.h"

/* Debian's abseil (20220623) is built without NDEBUG, so every absl::Mutex
 * that gRPC locks also goes through abseil's deadlock detection: a graph of
 * which locks were held when, kept under one process-wide spinlock (at full
 * speed GraphCycles alone was 1% of the machine's samples). abseil's own
 * switch turns it off; it is looked up by name, as abseil is C++, and
 * skipped where another build lacks it. */
static void absl_deadlock_detection_off(void)
{
    void (*set_mode)(int);
    *(void **)&set_mode = dlsym(RTLD_DEFAULT, "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE");
    if (set_mode != NULL)
        set_mode(0);   /* absl::OnDeadlockCycle::kIgnore */
}

void ordo_grpc_library_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, absl_deadlock_detection_off);
    grpc_init();
}

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

/* Reads a varint at *p (below end) into *v; false when it is cut short. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return true;
    }
    return false;
}

/* The first string field of @p desc (or of a message inside it, @p depth
 * levels at most) whose bytes on the wire hold a NUL: protobuf-c hands
 * strings on as C strings, which would silently end at it. NULL: none (or
 * the bytes are not well formed, which the unpacking says). */
static const char *wire_nul_field(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, int depth)
{
    const uint8_t *end = p + len;

    while (p < end) {
        uint64_t key, n;
        if (!wire_varint(&p, end, &key))
            return NULL;
        switch (key & 7) {
        case 0: if (!wire_varint(&p, end, &n)) return NULL; break;
        case 1: p += 8; break;
        case 5: p += 4; break;
        case 2: {
            const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
            if (!wire_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, n) != NULL)
                return f->name;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && depth > 0) {
                const char *inner = wire_nul_field(f->descriptor, p, n, depth - 1);
                if (inner != NULL)
                    return inner;
            }
            p += n;
            break;
        }
        default: return NULL;
        }
    }
    return NULL;
}

ProtobufCMessage *ordo_grpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb, char *why,
                                   size_t why_len)
{
    grpc_byte_buffer_reader reader;
    const char *nul;
    ProtobufCMessage *msg = NULL;

    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    nul = wire_nul_field(desc, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), 16);
    if (nul == NULL)
        msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (msg == NULL && why != NULL && why_len > 0) {
        if (nul != NULL)
            snprintf(why, why_len, "malformed %s message: its string field %s holds a NUL byte", desc->name, nul);
        else
            snprintf(why, why_len, "malformed request: not a valid %s message", desc->name);
    }
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
