/* orderapi's live change feed: GET /api/orders/changes (feed.c). */
#ifndef FEED_H
#define FEED_H

#include "api.h"

/* Starts the feed's thread (it polls the read model through api->query).
 * Stop the HTTP server before api_feed_destroy: its streams use the feed. */
ordo_status api_feed_start(api_ctx_t *api, api_feed_t **out, ordo_error_t *err);

/* Stops the thread and frees the feed (accepts NULL). */
void api_feed_destroy(api_feed_t *f);

/* Answers @p req with a stream of order changes from the position its
 * Last-Event-ID names (or from now); only @p customer's orders when not NULL. */
ordo_status api_feed_subscribe(api_feed_t *f, const ordo_http_request_t *req, const char *customer,
                               ordo_http_response_t *resp, ordo_error_t *err);

/* Whether the feed's last poll of the read model answered (NULL: false). */
bool api_feed_up(api_feed_t *f);

/* The feed's figures on /metrics. */
void api_feed_render_metrics(api_feed_t *f, ordo_buf_t *out);

#endif
