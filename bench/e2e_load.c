/*
 * e2e_load: the end-to-end benchmark. Threads (one HTTP/1.1 keep-alive
 * connection each) POST orders to orderapi at a fixed total rate (or as fast
 * as they can with --rate 0) for a fixed time; then it waits until the read
 * model shows every accepted order in a final status, and prints:
 *   orders/s accepted, POST latency percentiles, and POST-to-final latency
 *   percentiles (from the POST's send time to orderquery writing the final
 *   status, orders.applied_at — both on this machine's clock). At a fixed
 *   --rate both are measured from the time the POST was scheduled, so that
 *   a send held back by a slow answer counts its wait (no coordinated
 *   omission). A run with errors or unfinished orders says so on its line.
 * One order in --fail-every gets a price over the payment limit and one in
 * --reject-every a SOLD-OUT item, so every saga path is in the mix.
 * With --ca it speaks HTTPS (OpenSSL, the server checked against the CA and
 * the address), with --api-key-file it sends Authorization: Bearer <key>:
 * orderapi as scripts/up.sh runs it.
 * With --streams N it holds N GET /api/orders/changes streams open through
 * the run (one thread, epoll) and prints the events they received and their
 * delay from the read model's write (applied_at) to arrival.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ordo/buf.h"
#include "ordo/config.h"
#include "ordo/retry.h"
#include "samples.h"

typedef struct e2e_config {
    const char *api_addr, *database_url, *label, *ca, *api_key_file;
    int threads, rate, seconds, fail_every, reject_every, wait_s, streams;
    bool timeline;
} e2e_config_t;

#define OPT(...) ORDO_OPTION(e2e_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("api-addr", NULL, "127.0.0.1:8080", ORDO_OPT_STRING, api_addr, 0, 0, "orderapi host:port (IPv4)"),
    OPT("database-url", "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ordo", ORDO_OPT_STRING, database_url, 0, 0, "the read model's database"),
    OPT("label", NULL, "e2e", ORDO_OPT_STRING, label, 0, 0, "name printed with the results"),
    OPT("threads", NULL, "16", ORDO_OPT_INT, threads, 1, 1024, "HTTP connections"),
    OPT("rate", NULL, "0", ORDO_OPT_INT, rate, 0, 1000000, "orders/s in all (0: as fast as possible)"),
    OPT("seconds", NULL, "10", ORDO_OPT_INT, seconds, 1, 3600, "duration"),
    OPT("fail-every", NULL, "10", ORDO_OPT_INT, fail_every, 0, 1000000, "every Nth order fails payment (0: none)"),
    OPT("reject-every", NULL, "7", ORDO_OPT_INT, reject_every, 0, 1000000, "every Nth order is rejected and refunded (0: none)"),
    OPT("ca", "ORDO_CA", "", ORDO_OPT_STRING, ca, 0, 0, "CA file: speak HTTPS and check orderapi's certificate against it"),
    OPT("api-key-file", "ORDO_API_KEY_FILE", "", ORDO_OPT_STRING, api_key_file, 0, 0, "file holding an API key (sent as Authorization: Bearer)"),
    OPT("wait-s", NULL, "60", ORDO_OPT_INT, wait_s, 1, 3600, "how long to wait for the saga to finish"),
    OPT("streams", NULL, "0", ORDO_OPT_INT, streams, 0, 100000, "GET /api/orders/changes streams held open during the run"),
    OPT("timeline", NULL, "false", ORDO_OPT_BOOL, timeline, 0, 0, "print each second's orders, slowest POST and slowest saga on stderr (where a stall was)"),
};

typedef struct sent {
    char order_id[37];
    long long sent_us;
    long long created_us, final_us;   /* the read model's created_at and applied_at once final (0: not final) */
} sent_t;

/* What every connection shares: the TLS context (NULL: plain HTTP) and the
 * Authorization header line ("" without a key). Read-only once threads run. */
typedef struct client {
    SSL_CTX *tls;
    char host[64];
    char auth[256];
} client_t;

/* One keep-alive connection: the socket, and its TLS session when HTTPS. */
typedef struct conn {
    int fd;
    SSL *ssl;
} conn_t;

typedef struct worker {
    const e2e_config_t *cfg;
    const client_t *client;
    struct sockaddr_in addr;
    int id;
    double start, deadline;
    sent_t *sent;
    double *post_lat;
    size_t n, cap;
    long errors;
    pthread_t thread;
} worker_t;

static long long wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void conn_close(conn_t *c)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Connects (and with TLS completes the handshake, checking the certificate
 * names the address); false, with c->fd == -1, when it cannot. */
static bool conn_open(conn_t *c, const struct sockaddr_in *addr, const client_t *client)
{
    const char *host = client->host;
    int one = 1;

    c->ssl = NULL;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return false;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        conn_close(c);
        return false;
    }
    if (client->tls == NULL)
        return true;
    if ((c->ssl = SSL_new(client->tls)) == NULL || !SSL_set_fd(c->ssl, c->fd) ||
        !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) || SSL_connect(c->ssl) != 1) {
        unsigned long e = ERR_get_error();
        fprintf(stderr, "e2e_load: TLS to %s: %s\n", host, e ? ERR_reason_error_string(e) : "handshake failed");
        conn_close(c);
        return false;
    }
    return true;
}

static bool conn_send(conn_t *c, const char *data, int len)
{
    if (c->ssl != NULL)
        return SSL_write(c->ssl, data, len) == len;
    return send(c->fd, data, (size_t)len, MSG_NOSIGNAL) == len;
}

static ssize_t conn_recv(conn_t *c, char *buf, size_t len)
{
    if (c->ssl != NULL)
        return SSL_read(c->ssl, buf, (int)len);
    return recv(c->fd, buf, len, 0);
}

/* Reads one response; returns the status code and copies order_id from a 201 body. */
static int read_response(conn_t *c, char *order_id)
{
    char buf[8192];
    size_t got = 0;
    char *body;
    long len = -1;
    int status;

    for (;;) {
        ssize_t r = conn_recv(c, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        buf[got] = '\0';
        if ((body = strstr(buf, "\r\n\r\n")) != NULL) {
            char *cl = strstr(buf, "Content-Length:");   /* as libmicrohttpd writes it */
            len = cl ? strtol(cl + 15, NULL, 10) : 0;
            if ((size_t)(body + 4 - buf) + (size_t)len <= got)
                break;
        }
        if (got >= sizeof buf - 1)
            return -1;
    }
    status = atoi(buf + 9);
    char *id = strstr(body, "\"order_id\":\"");
    if (id != NULL && status == 201)
        snprintf(order_id, 37, "%.36s", id + 12);
    return status;
}

static void keep(worker_t *w, const char *id, long long sent_us, double lat)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        w->sent = realloc(w->sent, cap * sizeof *w->sent);
        w->post_lat = realloc(w->post_lat, cap * sizeof *w->post_lat);
        w->cap = cap;
    }
    w->sent[w->n] = (sent_t){.sent_us = sent_us};
    snprintf(w->sent[w->n].order_id, 37, "%s", id);
    w->post_lat[w->n++] = lat;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const e2e_config_t *cfg = w->cfg;
    double interval = cfg->rate > 0 ? (double)cfg->threads / cfg->rate : 0, next = w->start;
    conn_t c;
    long seq = 0;

    if (!conn_open(&c, &w->addr, w->client)) {
        w->errors++;   /* a thread that cannot connect sends nothing: that is a failed run, not an idle one */
        fprintf(stderr, "e2e_load: thread %d cannot connect to %s\n", w->id, cfg->api_addr);
    }
    while (c.fd >= 0 && ordo_mono_s() < w->deadline) {
        char body[512], req[1280], order_id[37] = "";
        long k = seq++ * cfg->threads + w->id;
        bool fail = cfg->fail_every && k % cfg->fail_every == 0;
        bool reject = !fail && cfg->reject_every && k % cfg->reject_every == 0;
        double t0, sched = 0;
        long long sent;
        int blen, rlen, status;

        if (interval > 0) {
            double now = ordo_mono_s();
            sched = next;
            if (next > now)
                usleep((useconds_t)((next - now) * 1e6));
            next += interval;
        }
        blen = snprintf(body, sizeof body,
                        "{\"customer_id\":\"c-%ld\",\"restaurant_id\":\"r-1\",\"order_items\":"
                        "[{\"code\":\"%s\",\"name\":\"Bench\",\"unit_price\":%s,\"quantity\":1}]}",
                        k % 1000, reject ? "SOLD-OUT" : "PIZZA", fail ? "100000" : "12.5");
        rlen = snprintf(req, sizeof req,
                        "POST /api/orders HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n%s"
                        "Content-Length: %d\r\n\r\n%s", w->client->auth, blen, body);
        t0 = ordo_mono_s();
        sent = wall_us();
        if (interval > 0 && t0 > sched) {   /* from the scheduled send: a send made late by a slow answer */
            sent -= (long long)((t0 - sched) * 1e6);   /* counts its wait (no coordinated omission) */
            t0 = sched;
        }
        if (!conn_send(&c, req, rlen) || (status = read_response(&c, order_id)) < 0) {
            w->errors++;
            conn_close(&c);
            if (!conn_open(&c, &w->addr, w->client))
                fprintf(stderr, "e2e_load: thread %d lost its connection and cannot connect again\n", w->id);
            continue;
        }
        if (status == 201)
            keep(w, order_id, sent, ordo_mono_s() - t0);
        else
            w->errors++;
    }
    conn_close(&c);
    return NULL;
}

/* ------------------------------------------------------------ streams */

/* One GET /api/orders/changes: its connection and where its parser is. */
typedef struct stream {
    conn_t c;
    char head[4096];          /* the response's head, until its blank line */
    size_t head_len;
    bool in_body, ok;
    int chunk;                /* -1: reading a chunk's size line; else bytes left of its data (+2 for its CRLF) */
    char size[24];
    size_t size_len;
    char line[4096];          /* the body's current line */
    size_t line_len;
    bool ended;
} stream_t;

typedef struct streams {
    const client_t *client;
    struct sockaddr_in addr;
    stream_t *s;
    int n, opened, refused;
    int ep;
    atomic_bool stop;
    pthread_t thread;
    double *lat;              /* seconds from applied_at to arrival, per event */
    size_t n_lat, cap_lat;
    long long events, dropped, ended;
} streams_t;

static void stream_line(streams_t *all, stream_t *st)
{
    const char *at;

    st->line[st->line_len < sizeof st->line ? st->line_len : sizeof st->line - 1] = '\0';
    if (strncmp(st->line, "data: ", 6) == 0 && (at = strstr(st->line, "\"applied_at\":")) != NULL) {
        all->events++;
        bench_samples_add(&all->lat, &all->n_lat, &all->cap_lat,
                          (double)(wall_us() - strtoll(at + 13, NULL, 10)) / 1e6);
    } else if (strcmp(st->line, "event: dropped") == 0) {
        all->dropped++;
    }
}

/* Feeds the body's decoded bytes to the line parser. */
static void stream_body(streams_t *all, stream_t *st, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            stream_line(all, st);
            st->line_len = 0;
        } else if (st->line_len < sizeof st->line) {
            st->line[st->line_len++] = p[i];
        }
    }
}

/* Takes @p n bytes off the wire: the head, then the chunked body. */
static void stream_feed(streams_t *all, stream_t *st, const char *p, size_t n)
{
    while (n > 0) {
        if (!st->in_body) {
            st->head[st->head_len++] = *p++;
            n--;
            if (st->head_len >= 4 && memcmp(st->head + st->head_len - 4, "\r\n\r\n", 4) == 0) {
                st->in_body = true;
                st->ok = strncmp(st->head, "HTTP/1.1 200", 12) == 0;
                st->chunk = -1;
            } else if (st->head_len == sizeof st->head) {
                st->ended = true;
                return;
            }
        } else if (st->chunk < 0) {   /* "SIZE\r\n" */
            char ch = *p++;
            n--;
            if (ch == '\n') {
                st->size[st->size_len] = '\0';
                st->chunk = (int)strtol(st->size, NULL, 16) + 2;
                st->size_len = 0;
                if (st->chunk == 2) {   /* the last chunk: the stream ended */
                    st->ended = true;
                    return;
                }
            } else if (ch != '\r' && st->size_len + 1 < sizeof st->size) {
                st->size[st->size_len++] = ch;
            }
        } else {
            size_t take = n < (size_t)st->chunk ? n : (size_t)st->chunk;
            size_t data = st->chunk > 2 ? (take < (size_t)st->chunk - 2 ? take : (size_t)st->chunk - 2) : 0;
            stream_body(all, st, p, data);
            st->chunk -= (int)take;
            p += take;
            n -= take;
            if (st->chunk == 0)
                st->chunk = -1;
        }
    }
}

/* Reads what a stream has; false once it ended (or failed). */
static bool stream_read(streams_t *all, stream_t *st)
{
    char buf[16384];

    for (;;) {
        ssize_t got = conn_recv(&st->c, buf, sizeof buf);
        if (got > 0) {
            stream_feed(all, st, buf, (size_t)got);
            if (st->ended)
                return false;
            continue;
        }
        if (st->c.ssl != NULL) {
            int e = SSL_get_error(st->c.ssl, (int)got);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
        }
        return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

static void *streams_run(void *arg)
{
    streams_t *all = arg;
    struct epoll_event evs[64];

    while (!atomic_load(&all->stop)) {
        int n = epoll_wait(all->ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            stream_t *st = evs[i].data.ptr;
            if (!st->ended && !stream_read(all, st)) {
                st->ended = true;
                all->ended++;
                epoll_ctl(all->ep, EPOLL_CTL_DEL, st->c.fd, NULL);
            }
        }
    }
    return NULL;
}

/* Opens the streams (each connected, its request sent) and starts their thread. */
static bool streams_start(streams_t *all, const e2e_config_t *cfg, const client_t *client)
{
    char req[512];
    int len = snprintf(req, sizeof req, "GET /api/orders/changes HTTP/1.1\r\nHost: %s\r\n%sAccept: text/event-stream\r\n\r\n",
                       cfg->api_addr, client->auth);

    all->client = client;
    all->n = cfg->streams;
    all->addr.sin_family = AF_INET;
    all->addr.sin_port = htons((uint16_t)atoi(strchr(cfg->api_addr, ':') + 1));
    inet_pton(AF_INET, client->host, &all->addr.sin_addr);
    atomic_init(&all->stop, false);
    if ((all->s = calloc((size_t)all->n + 1, sizeof *all->s)) == NULL || (all->ep = epoll_create1(0)) < 0)
        return false;
    for (int i = 0; i < all->n; i++) {
        stream_t *st = &all->s[i];
        st->c.fd = -1;
        if (!conn_open(&st->c, &all->addr, client) || !conn_send(&st->c, req, len)) {
            all->refused++;
            st->ended = true;
            continue;
        }
        fcntl(st->c.fd, F_SETFL, fcntl(st->c.fd, F_GETFL) | O_NONBLOCK);
        epoll_ctl(all->ep, EPOLL_CTL_ADD, st->c.fd, &(struct epoll_event){.events = EPOLLIN, .data.ptr = st});
        all->opened++;
    }
    return pthread_create(&all->thread, NULL, streams_run, all) == 0;
}

/* Stops the thread and closes the streams; counts those that were not 200. */
static int streams_stop(streams_t *all)
{
    int not_ok = 0;

    atomic_store(&all->stop, true);
    pthread_join(all->thread, NULL);
    for (int i = 0; i < all->n; i++) {
        not_ok += all->s[i].c.fd >= 0 && !all->s[i].ok;
        if (all->s[i].c.fd >= 0)
            conn_close(&all->s[i].c);
    }
    close(all->ep);
    free(all->s);
    return not_ok;
}

/* Waits until every order is final; fills lat with POST-to-final seconds and
 * *last_us with the latest final status's time (wall clock, µs). */
static size_t collect_finals(const e2e_config_t *cfg, worker_t *w, size_t total, double *lat, long long *last_us)
{
    PGconn *pg = PQconnectdb(cfg->database_url);
    ordo_buf_t ids = ORDO_BUF_INIT;
    size_t k = 0, done = 0;
    double until = ordo_mono_s() + cfg->wait_s;

    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "e2e_load: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 0;
    }
    ordo_buf_pg_array_begin(&ids);
    for (int t = 0; t < cfg->threads; t++)
        for (size_t i = 0; i < w[t].n; i++)
            ordo_buf_pg_array_text(&ids, w[t].sent[i].order_id);
    ordo_buf_pg_array_end(&ids);
    const char *params[1] = {ordo_buf_str(&ids)};
    while (ordo_mono_s() < until) {
        PGresult *res = PQexecParams(pg, "SELECT count(*) FROM orders WHERE order_id = ANY($1::text[]) AND status IN"
                                         " ('Approved','PaymentFailed','Refunded')", 1, NULL, params, NULL, NULL, 0);
        done = PQresultStatus(res) == PGRES_TUPLES_OK ? strtoull(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        PQclear(res);
        if (done >= total)
            break;
        usleep(200000);
    }
    /* each final order with its place in the array sent (1-based): the
     * orders in the workers' order, thread by thread */
    sent_t **all = malloc((total + 1) * sizeof *all);
    size_t n_all = 0;
    for (int t = 0; t < cfg->threads; t++)
        for (size_t i = 0; i < w[t].n; i++)
            all[n_all++] = &w[t].sent[i];
    PGresult *res = PQexecParams(pg, "SELECT s.n, o.applied_at, o.created_at FROM unnest($1::text[]) WITH ORDINALITY"
                                     " AS s(id, n) JOIN orders o ON o.order_id = s.id"
                                     " WHERE o.status IN ('Approved','PaymentFailed','Refunded')", 1, NULL, params, NULL,
                                 NULL, 0);
    k = 0;
    for (int r = 0; PQresultStatus(res) == PGRES_TUPLES_OK && r < PQntuples(res); r++) {
        size_t at = strtoull(PQgetvalue(res, r, 0), NULL, 10);
        long long applied = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        if (at < 1 || at > n_all)
            continue;
        sent_t *o = all[at - 1];
        if (applied > *last_us)
            *last_us = applied;
        o->created_us = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        o->final_us = applied;
        lat[k++] = (double)(applied - o->sent_us) / 1e6;
    }
    PQclear(res);
    free(all);
    PQfinish(pg);
    ordo_buf_free(&ids);
    return k;
}

/* The TLS context (with --ca) and the Authorization line (with
 * --api-key-file); false with a message when either cannot be had. */
static bool client_init(client_t *client, const e2e_config_t *cfg)
{
    ordo_error_t err;
    char *key = NULL;

    memset(client, 0, sizeof *client);
    snprintf(client->host, sizeof client->host, "%.*s", (int)(strchr(cfg->api_addr, ':') - cfg->api_addr),
             cfg->api_addr);
    if (ordo_opt_given(cfg->api_key_file)) {
        if (ordo_file_read(cfg->api_key_file, 200, &key, &err) != ORDO_OK) {
            fprintf(stderr, "e2e_load: %s\n", err.msg);
            return false;
        }
        key[strcspn(key, "\r\n")] = '\0';
        snprintf(client->auth, sizeof client->auth, "Authorization: Bearer %s\r\n", key);
        ordo_secret_free(key);
    }
    if (!ordo_opt_given(cfg->ca))
        return true;
    client->tls = SSL_CTX_new(TLS_client_method());
    if (client->tls == NULL || SSL_CTX_load_verify_locations(client->tls, cfg->ca, NULL) != 1) {
        fprintf(stderr, "e2e_load: --ca %s: not a readable PEM certificate\n", cfg->ca);
        return false;
    }
    SSL_CTX_set_verify(client->tls, SSL_VERIFY_PEER, NULL);
    return true;
}

static void client_free(client_t *client)
{
    SSL_CTX_free(client->tls);
    explicit_bzero(client->auth, sizeof client->auth);
}

static double later_of(double a, double b)
{
    return a > b ? a : b;
}

/* Each second of the run (by scheduled send), on stderr: orders sent, the
 * slowest POST among them, and of those that became final the slowest
 * POST-to-final and its two parts, send to order-created's commit (the
 * intake) and that commit to the final status (the saga): where in the run
 * a stall fell, and in which half. */
static void print_timeline(const worker_t *w, int threads, long long start_us, int seconds)
{
    for (int s = 0; s <= seconds; s++) {
        size_t n = 0;
        double worst = 0, final = 0, intake = 0, saga = 0;
        for (int i = 0; i < threads; i++)
            for (size_t j = 0; j < w[i].n; j++) {
                const sent_t *o = &w[i].sent[j];
                if ((o->sent_us - start_us) / 1000000 != s)
                    continue;
                n++;
                worst = later_of(worst, w[i].post_lat[j]);
                if (o->final_us == 0)
                    continue;
                final = later_of(final, (double)(o->final_us - o->sent_us) / 1e6);
                intake = later_of(intake, (double)(o->created_us - o->sent_us) / 1e6);
                saga = later_of(saga, (double)(o->final_us - o->created_us) / 1e6);
            }
        fprintf(stderr, "timeline t=%2ds orders=%-6zu slowest POST=%.1fms POST-to-final=%.1fms (intake %.1fms, saga %.1fms)\n",
                s, n, worst * 1e3, final * 1e3, intake * 1e3, saga * 1e3);
    }
}

int main(int argc, char **argv)
{
    client_t client;
    e2e_config_t cfg;
    worker_t *w;
    double start, elapsed, *post, *final, final_per_s;
    long long start_us, last_us = 0;
    size_t total = 0, k = 0, finals;
    long errors = 0;
    int rc, streams_bad = 0;
    streams_t streams = {0};

    memset(&cfg, 0, sizeof cfg);
    if ((rc = ordo_config_cli("e2e_load", options, sizeof options / sizeof options[0], &cfg, argc, argv)) >= 0)
        return rc;
    if (strchr(cfg.api_addr, ':') == NULL) {
        fprintf(stderr, "e2e_load: --api-addr %s: not host:port\n", cfg.api_addr);
        return 2;
    }
    if (!client_init(&client, &cfg)) {
        client_free(&client);
        return 2;
    }
    if (cfg.streams > 0 && !streams_start(&streams, &cfg, &client)) {
        fprintf(stderr, "e2e_load: cannot start the streams\n");
        return 2;
    }
    w = calloc((size_t)cfg.threads, sizeof *w);
    start = ordo_mono_s();
    start_us = wall_us();
    for (int i = 0; i < cfg.threads; i++) {
        w[i].cfg = &cfg;
        w[i].client = &client;
        w[i].id = i;
        w[i].addr.sin_family = AF_INET;
        w[i].addr.sin_port = htons((uint16_t)atoi(strchr(cfg.api_addr, ':') + 1));
        inet_pton(AF_INET, client.host, &w[i].addr.sin_addr);
        /* at a fixed rate the threads take turns, 1/rate apart: an even
         * stream of orders, not a burst of --threads every threads/rate s */
        w[i].start = start + (cfg.rate > 0 ? (double)i / cfg.rate : 0);
        w[i].deadline = start + cfg.seconds;
        pthread_create(&w[i].thread, NULL, run, &w[i]);
    }
    for (int i = 0; i < cfg.threads; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    elapsed = ordo_mono_s() - start;
    post = malloc((total + 1) * sizeof *post);
    final = malloc((total + 1) * sizeof *final);
    for (int i = 0; i < cfg.threads; i++)
        for (size_t j = 0; j < w[i].n; j++)
            post[k++] = w[i].post_lat[j];
    finals = collect_finals(&cfg, w, total, final, &last_us);
    if (cfg.timeline)
        print_timeline(w, cfg.threads, start_us, cfg.seconds);
    if (cfg.streams > 0) {   /* (the last final statuses' events: a second to arrive) */
        ordo_sleep_ms(1000);
        streams_bad = streams_stop(&streams);
        qsort(streams.lat, streams.n_lat, sizeof *streams.lat, bench_cmp_double);
    }
    /* the saga's own throughput: finished orders over the time from the first
     * POST to the last final status (below the intake when the saga lags) */
    final_per_s = last_us > start_us ? (double)finals * 1e6 / (double)(last_us - start_us) : 0;
    qsort(post, total, sizeof *post, bench_cmp_double);
    qsort(final, finals, sizeof *final, bench_cmp_double);
    printf("%-20s rate=%-6d orders/s=%-7.0f final/s=%-7.0f POST p50=%.1fms p99=%.1fms  POST-to-final p50=%.1fms p99=%.1fms p99.9=%.1fms"
           "  final=%zu/%zu errors=%ld%s\n",
           cfg.label, cfg.rate, (double)total / elapsed, final_per_s, bench_pct(post, total, 0.5) * 1e3,
           bench_pct(post, total, 0.99) * 1e3, bench_pct(final, finals, 0.5) * 1e3, bench_pct(final, finals, 0.99) * 1e3,
           bench_pct(final, finals, 0.999) * 1e3, finals, total, errors,
           errors > 0 || finals < total ? "  NOT CLEAN: errors or unfinished orders, figures not comparable" : "");
    if (cfg.streams > 0)
        printf("%-20s streams=%d (open %d, refused %d, not 200 %d, ended early %lld, dropped %lld) events=%lld (%.0f a stream)"
               "  delivery p50=%.1fms p99=%.1fms max=%.1fms\n",
               cfg.label, cfg.streams, streams.opened, streams.refused, streams_bad, streams.ended, streams.dropped,
               streams.events, streams.opened ? (double)streams.events / streams.opened : 0,
               bench_pct(streams.lat, streams.n_lat, 0.5) * 1e3, bench_pct(streams.lat, streams.n_lat, 0.99) * 1e3,
               streams.n_lat ? streams.lat[streams.n_lat - 1] * 1e3 : 0);
    printf("{\"label\":\"%s\",\"rate\":%d,\"orders_per_s\":%.0f,\"final_per_s\":%.0f,\"post_p50_ms\":%.2f,\"post_p99_ms\":%.2f,"
           "\"final_p50_ms\":%.2f,\"final_p99_ms\":%.2f,\"final\":%zu,\"accepted\":%zu,\"errors\":%ld}\n",
           cfg.label, cfg.rate, (double)total / elapsed, final_per_s, bench_pct(post, total, 0.5) * 1e3,
           bench_pct(post, total, 0.99) * 1e3, bench_pct(final, finals, 0.5) * 1e3, bench_pct(final, finals, 0.99) * 1e3, finals, total,
           errors);
    free(streams.lat);
    for (int i = 0; i < cfg.threads; i++) {
        free(w[i].sent);
        free(w[i].post_lat);
    }
    free(w);
    free(post);
    free(final);
    client_free(&client);
    if (total == 0)
        fprintf(stderr, "e2e_load: no order was accepted\n");
    return total > 0 && finals == total && errors == 0 && streams.refused == 0 && streams_bad == 0 &&
                   streams.ended == 0 && streams.dropped == 0
               ? 0
               : 1;
}
