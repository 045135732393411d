/**
 * @file envelope.h
 * The bus envelope of a committed event, written once: the relay encodes it
 * and every consumer decodes it here (docs/eventstore.md, "The bus").
 *
 * Subject: events.<aggregate_type>.<event_type>. Body: event_data as stored.
 * Headers: Nats-Msg-Id (the event id, JetStream's duplicate key) and the
 * Ordo-* headers below; metadata correlation_id and causation_id become
 * Ordo-Correlation-Id and Ordo-Causation-Id, traceparent and tracestate keep
 * their names, any other key k becomes Ordo-Meta-k.
 */
#ifndef ORDO_ENVELOPE_H
#define ORDO_ENVELOPE_H

#include <nats/nats.h>
#include <stdint.h>

#include "eventstore.pb-c.h"

#define ORDO_HDR_EVENT_ID "Nats-Msg-Id"
#define ORDO_HDR_EVENT_TYPE "Ordo-Event-Type"
#define ORDO_HDR_AGGREGATE_ID "Ordo-Aggregate-Id"
#define ORDO_HDR_AGGREGATE_TYPE "Ordo-Aggregate-Type"
#define ORDO_HDR_VERSION "Ordo-Version"
#define ORDO_HDR_POSITION "Ordo-Position"
#define ORDO_HDR_CREATED_AT "Ordo-Created-At"
#define ORDO_HDR_STREAM "Ordo-Stream"
#define ORDO_HDR_CORRELATION_ID "Ordo-Correlation-Id"
#define ORDO_HDR_CAUSATION_ID "Ordo-Causation-Id"
#define ORDO_HDR_META_PREFIX "Ordo-Meta-"
/* A parked or replayed copy carries the event id here: its Nats-Msg-Id is
 * its own (a duplicate key of the event id would make JetStream drop it). */
#define ORDO_HDR_EVENT_ID_COPY "Ordo-Event-Id"
/* Parked copies (stream PARKED, subject parked.<durable>): why, by whom,
 * from where, when (µs since the epoch). */
#define ORDO_HDR_PARKED_REASON "Ordo-Parked-Reason"
#define ORDO_HDR_PARKED_DURABLE "Ordo-Parked-Durable"
#define ORDO_HDR_PARKED_SUBJECT "Ordo-Parked-Subject"
#define ORDO_HDR_PARKED_STREAM_SEQ "Ordo-Parked-Stream-Seq"
#define ORDO_HDR_PARKED_AT "Ordo-Parked-At"
/* A replayed copy on EVENTS is for this durable alone: the others ack it unread. */
#define ORDO_HDR_REPLAY_FOR "Ordo-Replay-For"

/** One event as it came off the bus (pointers into the message; valid while it lives). */
typedef struct ordo_bus_event {
    const char *event_id;
    const char *event_type;
    const char *aggregate_id;
    const char *aggregate_type;
    const char *correlation_id;   /**< "" when absent */
    const char *traceparent;      /**< W3C trace context of the event; "" when absent */
    const char *tracestate;       /**< "" when absent */
    int64_t version;
    int64_t position;
    int64_t created_at;
    const char *data;             /**< event_data, NOT NUL-terminated */
    int data_len;
    uint64_t delivered;           /**< 1 on the first delivery */
    int round;                    /**< 1 in the consumer's first round over this delivery, more in the
                                       rounds while it holds it (ORDO_MSG_WAIT): a handler says why it
                                       waits in round 1 only */
} ordo_bus_event_t;

/**
 * The message that carries @p ev (subject, body, headers) in *@p out, which
 * the caller owns (natsMsg_Destroy, or a publish that takes it).
 * NATS_INVALID_SUBJECT when the subject does not fit.
 */
natsStatus ordo_envelope_encode(const Eventstore__Event *ev, natsMsg **out);

/**
 * Reads the envelope of @p m into @p ev: every string points into @p m
 * ("" for a missing header), numbers are 0 when missing; delivered and
 * round are 1 (the consumer sets them from the delivery).
 */
void ordo_envelope_decode(natsMsg *m, ordo_bus_event_t *ev);

/** What makes @p ev no Ordo event ("no event id", ...), NULL when it is one:
 *  an event id that is a UUID, an event type, an aggregate id and type, a
 *  version and a position of 1 or more. */
const char *ordo_envelope_problem(const ordo_bus_event_t *ev);

/**
 * The copy of @p m a consumer parks, in *@p out (the caller owns it):
 * subject parked.<@p durable>, the same body and Ordo-* headers, the event
 * id in Ordo-Event-Id, the Ordo-Parked-* headers (@p reason, the durable,
 * @p m's subject, its stream sequence @p stream_seq, the time), and a
 * Nats-Msg-Id of its own, so that parking one message twice keeps one copy.
 */
natsStatus ordo_envelope_parked_copy(natsMsg *m, const char *durable, const char *reason, uint64_t stream_seq,
                                     natsMsg **out);

/**
 * The message that replays the parked copy @p parked: its original subject,
 * body and Ordo-* headers (the event id in Ordo-Event-Id), Ordo-Replay-For
 * the durable that parked it, and a Nats-Msg-Id of its own
 * (ordo_envelope_fresh_id). NATS_INVALID_ARG when @p parked is not a parked copy.
 */
natsStatus ordo_envelope_replay_copy(natsMsg *parked, natsMsg **out);

/**
 * Gives @p m (an encoded event) a Nats-Msg-Id of its own, "<@p why>:<event
 * id>:<µs>", keeping the event id in Ordo-Event-Id: a copy sent again on
 * purpose (a replay, a re-drive) that JetStream's duplicate window must not
 * drop, and that consumers still see as the same event.
 */
natsStatus ordo_envelope_fresh_id(natsMsg *m, const char *why);

/** The value of header @p key of @p m ("" when it has none; points into @p m). */
const char *ordo_envelope_header(natsMsg *m, const char *key);

/** The Ordo-Position of @p m, -1 when it has none. */
int64_t ordo_envelope_position(natsMsg *m);

/** What JetStream says of a delivered message in its acknowledgement subject. */
typedef struct ordo_delivery {
    uint64_t delivered;     /**< deliveries so far, this one included */
    uint64_t stream_seq;
    uint64_t consumer_seq;
    uint64_t pending;       /**< messages still waiting for the consumer after this one */
} ordo_delivery_t;

/**
 * Reads @p reply, a delivered message's "$JS.ACK.<stream>.<consumer>.
 * <delivered>.<stream seq>.<consumer seq>.<time>.<pending>" (or the form with
 * domain and account hash before the stream, and a token after): false, and
 * *@p out zero, when it is not such a subject.
 */
bool ordo_delivery_of_reply(const char *reply, ordo_delivery_t *out);

/**
 * The lane (0..@p n-1) of an aggregate: FNV-1a of its id, so that one
 * aggregate's events always meet the same lane, in order. @p n >= 1.
 */
int ordo_lane_of(const char *aggregate_id, int n);

#endif
