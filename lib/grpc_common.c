/* Status mapping and byte-buffer <-> protobuf-c helpers shared by the gRPC server and client. */
#include "grpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <stdlib.h>
#include <string.h>

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
