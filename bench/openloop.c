/*
 * openloop: an open-loop HTTP/1.1 load generator for bench/intake.sh.
 *
 * Request i is due at t0 + i / rate, whatever happened to the requests
 * before it.  When it is due it goes out on an idle keep-alive connection
 * of the pool; if all connections are busy it waits in a backlog until one
 * frees up.  Its latency is measured from the time it was DUE, not from
 * the time it was written, so a server that stalls is charged for every
 * request that piled up behind the stall (no coordinated omission).
 * How late requests went out (send lag) and how deep the backlog grew are
 * reported, so a run where the client itself fell behind can be told
 * apart from a slow server: the send lag counts only requests that found
 * an idle connection when they were due, and "waited_for_conn" counts
 * those that did not.
 *
 * Every request is the same signed delivery except for its webhook and
 * event ids (ID = ID-PREFIX followed by the request number):
 *
 *   HEAD-FILE bytes, ID, CRLF, "X-Shopify-Event-Id: ev-", ID, CRLF,
 *   "Content-Length: " size of BODY-FILE, CRLF CRLF, BODY-FILE bytes
 *
 * HEAD-FILE ends with "X-Shopify-Webhook-Id: ".
 *
 * Output: one JSON object on stdout.  With -o, the latencies (ns, native
 * uint64) of the measured requests are written to a file as well, so that
 * several runs can be merged before taking percentiles.
 *
 * Bounded: it sends exactly rate * (warmup + duration) requests at most and
 * gives up waiting for answers drain seconds after the last one was due.
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>


#define RBUF_SIZE        16384
#define IDBUF_SIZE       256
#define MAX_CONNS        4096
#define MAX_ERRORS       10000


enum { C_DEAD = 0, C_CONNECTING, C_IDLE, C_BUSY };


typedef struct {
    int        fd;
    int        state;
    uint64_t   due;          /* when the current request was due */
    size_t     sent;         /* bytes of the current request written */
    size_t     total;        /* its size */
    size_t     idlen;
    char       id[IDBUF_SIZE];
    size_t     rlen;
    char       rbuf[RBUF_SIZE];
    int        want_out;
} conn_t;


static struct {
    const char  *addr;
    int          port;
    const char  *head_file;
    const char  *body_file;
    const char  *id_prefix;
    const char  *raw_out;
    double       rate;
    double       duration;
    double       warmup;
    double       drain;
    int          conns;
} opt = {
    "127.0.0.1", 0, NULL, NULL, "ol", NULL, 0, 10, 1, 5, 64
};


static char       *head;
static size_t      head_len;
static char       *body;
static size_t      body_len;

static conn_t     *conns;
static int        *idle;          /* stack of idle connection indexes */
static int         nidle;
static int         ep;

static uint64_t    t0;            /* when request 0 is due */
static uint64_t    measure_from;  /* requests due before this are warm-up */
static uint64_t    n_total;       /* requests to send */
static uint64_t    n_sent;        /* requests handed to a connection */

static uint64_t   *lat;           /* latencies of measured requests, ns */
static uint64_t    n_lat;
static uint64_t   *lag;           /* send lag of measured requests, ns */
static uint64_t    n_lag;

static uint64_t    status_count[600];
static uint64_t    n_done;
static uint64_t    n_errors;
static uint64_t    n_reconnects;
static uint64_t    n_waited;      /* requests that found no idle connection */
static uint64_t    backlog_max;
static int         inflight;


static uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}


static uint64_t
due_of(uint64_t i)
{
    return t0 + (uint64_t) ((double) i * 1e9 / opt.rate);
}


static void
die(const char *what)
{
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(2);
}


static char *
slurp(const char *path, size_t *len)
{
    int          fd;
    char        *p;
    ssize_t      n;
    size_t       got;
    struct stat  st;

    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0) {
        die(path);
    }

    p = malloc((size_t) st.st_size + 1);
    if (p == NULL) {
        die("malloc");
    }

    for (got = 0; got < (size_t) st.st_size; got += (size_t) n) {
        n = read(fd, p + got, (size_t) st.st_size - got);
        if (n <= 0) {
            die(path);
        }
    }

    close(fd);
    *len = got;
    return p;
}


static void
ep_set(conn_t *c, int idx, int out)
{
    struct epoll_event  ev;

    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t) idx;

    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        die("epoll_ctl mod");
    }

    c->want_out = out;
}


static void
conn_open(int idx)
{
    int                  fd, one;
    conn_t              *c;
    struct sockaddr_in   sin;
    struct epoll_event   ev;

    c = &conns[idx];

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket");
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) opt.port);

    if (inet_pton(AF_INET, opt.addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "openloop: bad address %s\n", opt.addr);
        exit(2);
    }

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0
        && errno != EINPROGRESS)
    {
        die("connect");
    }

    c->fd = fd;
    c->state = C_CONNECTING;
    c->rlen = 0;
    c->want_out = 1;

    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u32 = (uint32_t) idx;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl add");
    }
}


static void
conn_reopen(int idx, int failed)
{
    conn_t  *c;

    c = &conns[idx];

    if (c->state == C_BUSY) {
        inflight--;

    } else if (c->state == C_IDLE) {
        /* closed by the server while idle: it must not be handed out */
        for (int k = 0; k < nidle; k++) {
            if (idle[k] == idx) {
                idle[k] = idle[--nidle];
                break;
            }
        }
    }

    if (failed) {
        n_errors++;

        if (n_errors > MAX_ERRORS) {
            fprintf(stderr, "openloop: too many errors, giving up\n");
            exit(3);
        }
    }

    (void) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = C_DEAD;

    n_reconnects++;
    conn_open(idx);
}


static int
conn_write(int idx)
{
    ssize_t       n;
    size_t        off, skip;
    conn_t       *c;
    struct iovec  iov[3], *v;
    int           niov;

    c = &conns[idx];

    while (c->sent < c->total) {
        struct iovec  all[3] = {
            { head, head_len },
            { c->id, c->idlen },
            { body, body_len }
        };

        /* skip what is already written */
        off = c->sent;
        niov = 0;

        for (int k = 0; k < 3; k++) {
            v = &all[k];

            if (off >= v->iov_len) {
                off -= v->iov_len;
                continue;
            }

            skip = off;
            off = 0;
            iov[niov].iov_base = (char *) v->iov_base + skip;
            iov[niov].iov_len = v->iov_len - skip;
            niov++;
        }

        n = writev(c->fd, iov, niov);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->want_out) {
                    ep_set(c, idx, 1);
                }
                return 0;
            }

            if (errno == EINTR) {
                continue;
            }

            conn_reopen(idx, 1);
            return -1;
        }

        c->sent += (size_t) n;
    }

    if (c->want_out) {
        ep_set(c, idx, 0);
    }

    return 0;
}


static void
send_request(int idx, uint64_t i, uint64_t now, int waited)
{
    int      len;
    conn_t  *c;

    c = &conns[idx];

    len = snprintf(c->id, sizeof(c->id), "%s%" PRIu64
                   "\r\nX-Shopify-Event-Id: ev-%s%" PRIu64
                   "\r\nContent-Length: %zu\r\n\r\n",
                   opt.id_prefix, i, opt.id_prefix, i, body_len);

    c->idlen = (size_t) len;
    c->due = due_of(i);
    c->sent = 0;
    c->total = head_len + c->idlen + body_len;
    c->state = C_BUSY;
    inflight++;

    /* the client's own lateness, not the wait for a free connection */
    if (c->due >= measure_from && !waited) {
        lag[n_lag++] = now > c->due ? now - c->due : 0;
    }

    (void) conn_write(idx);
}


/*
 * Looks for one whole response in the buffer: returns its length, 0 when
 * more bytes are needed, -1 when it cannot be parsed.
 */

static long
parse_response(conn_t *c, int *status, int *close_after)
{
    char    *end, *p, *line, *eol;
    long     hlen, clen;

    if (c->rlen < 12) {
        return 0;
    }

    end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (end == NULL) {
        return c->rlen >= RBUF_SIZE ? -1 : 0;
    }

    hlen = end - c->rbuf + 4;

    if (memcmp(c->rbuf, "HTTP/1.", 7) != 0) {
        return -1;
    }

    *status = atoi(c->rbuf + 9);
    *close_after = 0;
    clen = -1;

    line = memchr(c->rbuf, '\n', (size_t) hlen) + 1;

    while (line < end) {
        eol = memchr(line, '\n', (size_t) (end + 2 - line));
        if (eol == NULL) {
            break;
        }

        if (strncasecmp(line, "content-length:", 15) == 0) {
            clen = strtol(line + 15, NULL, 10);

        } else if (strncasecmp(line, "connection:", 11) == 0) {
            for (p = line + 11; *p == ' '; p++) { /* void */ }

            if (strncasecmp(p, "close", 5) == 0) {
                *close_after = 1;
            }

        } else if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
            return -1;   /* nginx sends lengths for these answers */
        }

        line = eol + 1;
    }

    if (clen < 0) {
        clen = 0;
    }

    if (hlen + clen > RBUF_SIZE) {
        return -1;
    }

    if ((long) c->rlen < hlen + clen) {
        return 0;
    }

    return hlen + clen;
}


static void
conn_read(int idx, uint64_t *now)
{
    int       status, close_after;
    long      len;
    ssize_t   n;
    conn_t   *c;

    c = &conns[idx];

    for ( ;; ) {
        n = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }

            if (errno == EINTR) {
                continue;
            }

            conn_reopen(idx, c->state == C_BUSY);
            return;
        }

        if (n == 0) {
            /* keep-alive limit or server gone: an error only mid-request */
            conn_reopen(idx, c->state == C_BUSY);
            return;
        }

        c->rlen += (size_t) n;

        if (c->state != C_BUSY) {
            /* bytes nobody asked for */
            conn_reopen(idx, 1);
            return;
        }

        len = parse_response(c, &status, &close_after);

        if (len < 0) {
            conn_reopen(idx, 1);
            return;
        }

        if (len == 0) {
            continue;
        }

        *now = now_ns();

        if (c->due >= measure_from) {
            lat[n_lat++] = *now - c->due;
        }

        if (status > 0 && status < 600) {
            status_count[status]++;
        }

        n_done++;
        inflight--;

        if (close_after || (size_t) len != c->rlen) {
            c->state = C_DEAD;      /* answered: nothing is in flight */
            conn_reopen(idx, (size_t) len != c->rlen);
            return;
        }

        c->rlen = 0;
        c->state = C_IDLE;
        idle[nidle++] = idx;
        return;
    }
}


static int
cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


static double
pct_us(uint64_t *v, uint64_t n, double p)
{
    uint64_t  k;

    if (n == 0) {
        return -1;
    }

    /* nearest rank */
    k = (uint64_t) (p / 100.0 * (double) n + 0.999999);
    if (k < 1) {
        k = 1;
    }

    if (k > n) {
        k = n;
    }

    return (double) v[k - 1] / 1000.0;
}


static void
usage(void)
{
    fprintf(stderr,
        "usage: openloop -p PORT -r RATE -H HEAD-FILE -b BODY-FILE\n"
        "                [-a ADDR] [-c CONNS] [-d SECONDS] [-w WARMUP]\n"
        "                [-t DRAIN] [-i ID-PREFIX] [-o RAW-FILE]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                 ch, n, i, connected, fd_timer;
    uint64_t            now, released, deadline, stop_at, end_of_sched;
    uint64_t            expirations, backlog, i64, waited_upto;
    FILE               *f;
    struct itimerspec   its;
    struct epoll_event  ev, evs[256];

    while ((ch = getopt(argc, argv, "a:p:r:d:w:t:c:H:b:i:o:")) != -1) {
        switch (ch) {
        case 'a': opt.addr = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 't': opt.drain = atof(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'H': opt.head_file = optarg; break;
        case 'b': opt.body_file = optarg; break;
        case 'i': opt.id_prefix = optarg; break;
        case 'o': opt.raw_out = optarg; break;
        default: usage();
        }
    }

    if (opt.port <= 0 || opt.rate <= 0 || opt.head_file == NULL
        || opt.body_file == NULL || opt.conns < 1 || opt.conns > MAX_CONNS
        || opt.duration <= 0 || opt.duration > 3600 || opt.warmup < 0
        || opt.drain <= 0 || opt.rate > 1e7
        || strlen(opt.id_prefix) > 64)
    {
        usage();
    }

    /* wake up at the due time, not up to 50 us later */
    (void) prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    head = slurp(opt.head_file, &head_len);
    body = slurp(opt.body_file, &body_len);

    n_total = (uint64_t) (opt.rate * (opt.warmup + opt.duration));

    conns = calloc((size_t) opt.conns, sizeof(conn_t));
    idle = calloc((size_t) opt.conns, sizeof(int));
    lat = calloc(n_total + 1, sizeof(uint64_t));
    lag = calloc(n_total + 1, sizeof(uint64_t));

    if (conns == NULL || idle == NULL || lat == NULL || lag == NULL) {
        die("calloc");
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1");
    }

    fd_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd_timer < 0) {
        die("timerfd_create");
    }

    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd_timer, &ev) < 0) {
        die("epoll_ctl timer");
    }

    /* open the pool first, bounded to 5 seconds */

    for (i = 0; i < opt.conns; i++) {
        conn_open(i);
    }

    deadline = now_ns() + 5000000000ull;
    connected = 0;

    while (connected < opt.conns && now_ns() < deadline) {
        n = epoll_wait(ep, evs, 256, 100);

        for (int k = 0; k < n; k++) {
            int        err = 0;
            socklen_t  el = sizeof(err);
            conn_t    *c;

            if (evs[k].data.u32 == UINT32_MAX) {
                continue;
            }

            c = &conns[evs[k].data.u32];

            if (c->state != C_CONNECTING) {
                continue;
            }

            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0
                || err != 0)
            {
                errno = err;
                die("connect");
            }

            c->state = C_IDLE;
            ep_set(c, (int) evs[k].data.u32, 0);
            idle[nidle++] = (int) evs[k].data.u32;
            connected++;
        }
    }

    if (connected < opt.conns) {
        fprintf(stderr, "openloop: only %d of %d connections opened\n",
                connected, opt.conns);
        return 2;
    }

    t0 = now_ns() + 10000000ull;
    measure_from = t0 + (uint64_t) (opt.warmup * 1e9);
    end_of_sched = due_of(n_total);
    stop_at = end_of_sched + (uint64_t) (opt.drain * 1e9);

    released = 0;
    waited_upto = 0;
    now = now_ns();

    for ( ;; ) {
        /* release every request that is due, and send what can be sent */

        while (released < n_total && due_of(released) <= now) {
            released++;
        }

        backlog = released - n_sent;

        if (backlog > backlog_max) {
            backlog_max = backlog;
        }

        while (n_sent < released && nidle > 0) {
            send_request(idle[--nidle], n_sent, now, n_sent < waited_upto);
            n_sent++;
        }

        /* what is still due found every connection busy */
        for (i64 = n_sent > waited_upto ? n_sent : waited_upto;
             i64 < released; i64++)
        {
            if (due_of(i64) >= measure_from) {
                n_waited++;
            }
        }

        if (released > waited_upto) {
            waited_upto = released;
        }

        if (n_sent == n_total && inflight == 0) {
            break;
        }

        if (now >= stop_at) {
            break;
        }

        /* sleep until the next request is due or something happens */

        if (released < n_total) {
            uint64_t  next = due_of(released);

            memset(&its, 0, sizeof(its));
            its.it_value.tv_sec = (time_t) (next / 1000000000ull);
            its.it_value.tv_nsec = (long) (next % 1000000000ull);

            if (timerfd_settime(fd_timer, TFD_TIMER_ABSTIME, &its, NULL) < 0)
            {
                die("timerfd_settime");
            }

            n = epoll_wait(ep, evs, 256, -1);

        } else {
            n = epoll_wait(ep, evs, 256,
                           (int) ((stop_at - now) / 1000000ull) + 1);
        }

        if (n < 0) {
            if (errno == EINTR) {
                now = now_ns();
                continue;
            }

            die("epoll_wait");
        }

        now = now_ns();

        for (int k = 0; k < n; k++) {
            uint32_t  idx = evs[k].data.u32;
            conn_t   *c;

            if (idx == UINT32_MAX) {
                (void) read(fd_timer, &expirations, sizeof(expirations));
                continue;
            }

            c = &conns[idx];

            if (c->state == C_CONNECTING) {
                int        err = 0;
                socklen_t  el = sizeof(err);

                if (!(evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                    continue;
                }

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0
                    || err != 0)
                {
                    conn_reopen((int) idx, 1);
                    continue;
                }

                c->state = C_IDLE;
                ep_set(c, (int) idx, 0);
                idle[nidle++] = (int) idx;
                continue;
            }

            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                conn_read((int) idx, &now);

                if (conns[idx].state == C_CONNECTING) {
                    continue;
                }
            }

            if ((evs[k].events & EPOLLOUT) && c->state == C_BUSY) {
                (void) conn_write((int) idx);
            }
        }
    }

    now = now_ns();

    /* results */

    qsort(lat, n_lat, sizeof(uint64_t), cmp_u64);
    qsort(lag, n_lag, sizeof(uint64_t), cmp_u64);

    if (opt.raw_out) {
        f = fopen(opt.raw_out, "wb");
        if (f == NULL || fwrite(lat, sizeof(uint64_t), n_lat, f) != n_lat
            || fclose(f) != 0)
        {
            die(opt.raw_out);
        }
    }

    printf("{\"rate\":%.1f,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
           "\"conns\":%d,\"scheduled\":%" PRIu64 ",\"sent\":%" PRIu64 ","
           "\"completed\":%" PRIu64 ",\"measured\":%" PRIu64 ","
           "\"unanswered\":%d,\"errors\":%" PRIu64 ","
           "\"reconnects\":%" PRIu64 ",\"backlog_max\":%" PRIu64 ","
           "\"waited_for_conn\":%" PRIu64 ","
           "\"lat_p50_us\":%.1f,\"lat_p90_us\":%.1f,\"lat_p99_us\":%.1f,"
           "\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,"
           "\"send_lag_p50_us\":%.1f,\"send_lag_p99_us\":%.1f,"
           "\"send_lag_max_us\":%.1f,\"status\":{",
           opt.rate, opt.duration, opt.warmup, opt.conns, n_total, n_sent,
           n_done, n_lat, inflight, n_errors, n_reconnects, backlog_max,
           n_waited,
           pct_us(lat, n_lat, 50), pct_us(lat, n_lat, 90),
           pct_us(lat, n_lat, 99), pct_us(lat, n_lat, 99.9),
           n_lat ? (double) lat[n_lat - 1] / 1000.0 : -1,
           pct_us(lag, n_lag, 50), pct_us(lag, n_lag, 99),
           n_lag ? (double) lag[n_lag - 1] / 1000.0 : -1);

    for (i = 100, n = 0; i < 600; i++) {
        if (status_count[i]) {
            printf("%s\"%d\":%" PRIu64, n++ ? "," : "", i, status_count[i]);
        }
    }

    printf("}}\n");

    return 0;
}
