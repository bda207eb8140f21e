/*
 * server.c: listeners and threads. One loop per thread, each with its own
 * listening socket bound to the same port with SO_REUSEPORT (the kernel
 * spreads new connections across them), so loops share nothing.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void prg_config_default(prg_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->host = NULL;
    cfg->port = 8080;
    cfg->threads = 1;
    cfg->backlog = 1024;
    cfg->engine = PRG_ENGINE_EPOLL;
    cfg->trigger = PRG_TRIGGER_LEVEL;
    cfg->libev_backend = PRG_LIBEV_EPOLL;
    cfg->max_threads = 512;
    cfg->mode = PRG_MODE_HTTP;
    cfg->tcp_nodelay = 1;
    cfg->tcp_cork = 0;
    prg_http_limits_default(&cfg->limits);
    cfg->max_streamed_body = (uint64_t)1 << 30;
    cfg->max_output = 1u << 20;
    cfg->header_timeout_s = 10;
    cfg->idle_timeout_s = 60;
    cfg->handler_timeout_s = 60;
    cfg->server_name = NULL;
}

/* The kernel silently caps listen()'s backlog at net.core.somaxconn. */
static int read_somaxconn(void) {
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
    int v = 4096;
    if (f) {
        if (fscanf(f, "%d", &v) != 1) v = 4096;
        fclose(f);
    }
    return v;
}

static int resolve(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host && *host ? host : "0.0.0.0", service, &hints, &res);
    if (rc != 0 || !res) return -EINVAL;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int open_listener(const prg_server *s, const struct sockaddr_storage *addr, socklen_t len) {
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    /* TCP_NODELAY set here is copied to every accepted socket (Linux), so
     * connections cost no setsockopt for it (see prg_loop_open_conn). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (s->loop_count > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        (s->cfg.tcp_nodelay && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) ||
        /* HTTP clients speak first: the kernel hands over a connection once
         * its first bytes are in (or after a second without any), so the
         * loop can read the request right after accept (read_on_accept). */
        (s->cfg.mode == PRG_MODE_HTTP && setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one) != 0) ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, s->effective_backlog) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* An inherited descriptor (socket activation, handoff): a listening TCP
 * socket, made non-blocking for the event loops. Returns a dup the server
 * owns, or -errno (-ENOTSOCK: not a listening TCP socket). */
static int adopt_listener(int fd) {
    int type = 0, listening = 0;
    socklen_t l1 = sizeof type, l2 = sizeof listening;
    struct sockaddr_storage addr;
    socklen_t alen = sizeof addr;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l2) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &alen) != 0)
        return errno == EBADF ? -EBADF : -ENOTSOCK;
    if (type != SOCK_STREAM || !listening || (addr.ss_family != AF_INET && addr.ss_family != AF_INET6))
        return -ENOTSOCK;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0) return -errno;
    int fl = fcntl(own, F_GETFL);
    if (fl < 0 || fcntl(own, F_SETFL, fl | O_NONBLOCK) != 0) {
        int err = -errno;
        close(own);
        return err;
    }
    return own;
}

static int bound_port(int fd) {
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) return -errno;
    return ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                             : ((struct sockaddr_in *)&bound)->sin_port);
}

static void set_port(struct sockaddr_storage *addr, int port) {
    if (addr->ss_family == AF_INET6) ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    else ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
}

prg_server *prg_server_create(const prg_config *cfg, const prg_callbacks *cb, int *err) {
    *err = 0;
    if (cfg->threads < 1 || cfg->threads > 1024 || cfg->port < 0 || cfg->port > 65535 ||
        (cfg->mode == PRG_MODE_HTTP && !cb->on_request) || (cfg->mode == PRG_MODE_RAW && !cb->on_data) ||
        cfg->limits.max_headers == 0 || cfg->header_timeout_s < 0 || cfg->idle_timeout_s < 0 || cfg->handler_timeout_s < 0 ||
        !prg_engine_for(cfg->engine) || cfg->max_threads < 1 ||
        (unsigned)cfg->trigger > PRG_TRIGGER_ONESHOT || (unsigned)cfg->libev_backend > PRG_LIBEV_SELECT ||
        (unsigned)cfg->mode > PRG_MODE_RAW ||
        (cfg->engine != PRG_ENGINE_EPOLL && cfg->trigger != PRG_TRIGGER_LEVEL) ||
        ((cfg->engine == PRG_ENGINE_BLOCKING || cfg->engine == PRG_ENGINE_THREADED) && cfg->threads != 1) ||
        cfg->listen_fd_count < 0 || (cfg->listen_fd_count > 0 && !cfg->listen_fds) ||
        cfg->listen_fd_count > cfg->threads ||
        /* Their wake-up shuts the listener down, which would stop it for
         * every process that shares it. */
        (cfg->listen_fd_count > 0 && cfg->engine != PRG_ENGINE_EPOLL && cfg->engine != PRG_ENGINE_LIBEV) ||
        /* streamed bodies need all three callbacks */
        (!cb->on_head != !cb->on_body || !cb->on_head != !cb->on_body_end)) {
        *err = -EINVAL;
        return NULL;
    }
    /* A connection's receive buffer holds a head, a body and some framing,
     * and its length is 32-bit: refuse limits it could not hold. */
    const prg_http_limits *l = &cfg->limits;
    size_t ceiling = UINT32_MAX / 4;
    if (l->max_header_bytes > ceiling || l->max_body > ceiling || l->max_request_line > ceiling ||
        2 * l->max_header_bytes + l->max_body + l->max_request_line > ceiling) {
        *err = -EINVAL;
        return NULL;
    }
    prg_server *s = calloc(1, sizeof *s);
    if (!s) { *err = -ENOMEM; return NULL; }
    s->cfg = *cfg;
    s->cb = *cb;
    /* Until on_head has chosen, a body may be streamed or buffered: the
     * head and the bytes that came with it are parsed under the larger
     * limit, and the chosen one is applied when it is known. */
    s->head_limits = cfg->limits;
    s->stream_limits = cfg->limits;
    s->stream_limits.max_body =
        (size_t)(cfg->max_streamed_body < (uint64_t)SIZE_MAX ? cfg->max_streamed_body : (uint64_t)SIZE_MAX);
    if (cb->on_head && s->stream_limits.max_body > cfg->limits.max_body)
        s->head_limits.max_body = s->stream_limits.max_body;
    s->loop_count = cfg->threads;
    atomic_init(&s->drain, 0);
    atomic_init(&s->drain_deadline_ms, 0);
    atomic_init(&s->drain_idle_until_ms, 0);
    int somaxconn = read_somaxconn();
    int backlog = cfg->backlog > 0 ? cfg->backlog : 1024;
    s->effective_backlog = backlog < somaxconn ? backlog : somaxconn;
    s->loops = calloc((size_t)s->loop_count, sizeof(prg_loop));
    if (!s->loops) { free(s); *err = -ENOMEM; return NULL; }
    for (int i = 0; i < s->loop_count; i++) {
        s->loops[i].listen_fd = s->loops[i].epfd = s->loops[i].wake_fd = s->loops[i].reserve_fd = -1;
    }

    struct sockaddr_storage addr;
    socklen_t len;
    int rc = cfg->listen_fd_count > 0 ? 0 : resolve(cfg->host, cfg->port, &addr, &len);
    for (int i = 0; rc == 0 && i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        loop->server = s;
        loop->index = i;
        atomic_init(&loop->stop, 0);
        if (cfg->listen_fd_count > 0) {
            int fd = adopt_listener(cfg->listen_fds[i % cfg->listen_fd_count]);
            if (fd < 0) { rc = fd; break; }
            loop->listen_fd = fd;
            if (i == 0 && (s->port = bound_port(fd)) < 0) { rc = s->port; break; }
            rc = prg_loop_init(loop);
            continue;
        }
        int fd = open_listener(s, &addr, len);
        if (fd < 0) { rc = fd; break; }
        loop->listen_fd = fd;
        loop->nodelay_inherited = cfg->tcp_nodelay;   /* set on the listener above */
        loop->read_on_accept = cfg->mode == PRG_MODE_HTTP;   /* TCP_DEFER_ACCEPT, above */
        if (i == 0) {
            /* Port 0: the others bind the port the kernel picked. */
            if ((s->port = bound_port(fd)) < 0) { rc = s->port; break; }
            set_port(&addr, s->port);
        }
        rc = prg_loop_init(loop);
    }
    /* The caller's strings are read only here: no dangling copy stays. */
    s->cfg.host = NULL;
    s->cfg.server_name = NULL;
    s->cfg.listen_fds = NULL;
    if (rc != 0) {
        *err = rc;
        prg_server_destroy(s);
        return NULL;
    }
    return s;
}

int prg_server_start(prg_server *s) {
    /* Loop threads take no signals: SIGINT and SIGTERM stay with the
     * application's main thread, which calls prg_server_stop. */
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_BLOCK, &all, &old);
    if (rc != 0) return -rc;   /* loop threads would take the application's signals */
    for (int i = 0; i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        rc = pthread_create(&loop->thread, NULL, prg_loop_run, loop);
        if (rc != 0) { rc = -rc; break; }
        loop->thread_started = true;
    }
    int restored = pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0 && restored != 0) rc = -restored;   /* the caller would be left deaf to signals */
    if (rc != 0) {
        prg_server_stop(s);
        prg_server_wait(s);
    }
    return rc;
}

void prg_server_stop(prg_server *s) {
    for (int i = 0; i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        atomic_store_explicit(&loop->stop, 1, memory_order_release);
        if (loop->engine) loop->engine->wake(loop);
    }
}

int prg_server_shutdown(prg_server *s, int deadline_ms) {
    if (deadline_ms < 0) return -EINVAL;
    /* Lock-free atomics, clock_gettime and the engines' wake only: safe in
     * a signal handler. A second call may bring the deadline closer. */
    long long at = (long long)prg_monotonic_ms() + deadline_ms;
    long long cur = atomic_load(&s->drain_deadline_ms);
    while ((cur == 0 || at < cur) && !atomic_compare_exchange_weak(&s->drain_deadline_ms, &cur, at)) {
    }
    atomic_store(&s->drain, 1);
    for (int i = 0; i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        if (loop->engine) loop->engine->wake(loop);
    }
    return 0;
}

int prg_server_shutdown_handed_off(prg_server *s, int deadline_ms, int idle_grace_ms) {
    if (deadline_ms < 0 || idle_grace_ms < 0) return -EINVAL;
    /* Set before the drain flag, which the loops read it after. */
    atomic_store(&s->drain_idle_until_ms, (long long)prg_monotonic_ms() + idle_grace_ms);
    return prg_server_shutdown(s, deadline_ms);
}

int prg_server_listeners(const prg_server *s, int *fds, int max) {
    for (int i = 0; i < s->loop_count; i++) {
        int fd = s->loops[i].listen_fd;
        if (fd < 0 || prg_drain_requested(s)) return -EBADF;
        if (i < max) fds[i] = fd;
    }
    return s->loop_count;
}

int prg_server_wait(prg_server *s) {
    int rc = 0;
    for (int i = 0; i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        if (!loop->thread_started) continue;
        int r = pthread_join(loop->thread, NULL);
        if (r != 0 && rc == 0) rc = -r;
        loop->thread_started = false;
    }
    return rc;
}

void prg_server_destroy(prg_server *s) {
    if (!s) return;
    for (int i = 0; i < s->loop_count; i++) {
        prg_loop *loop = &s->loops[i];
        /* A loop that never ran may still hold connections: none are
         * accepted before start, so only descriptors and memory remain. */
        prg_offload_loop_close(loop);   /* before wake_fd closes: late answers are dropped */
        if (loop->engine) loop->engine->destroy(loop);
        if (loop->listen_fd >= 0) close(loop->listen_fd);
        if (loop->reserve_fd >= 0) close(loop->reserve_fd);
        prg_loop_free_context(loop);
    }
    free(s->loops);
    free(s);
}

int prg_server_wake(prg_server *s, int loop_index) {
    if (!s || loop_index < 0 || loop_index >= s->loop_count) return -EINVAL;
    prg_loop *loop = &s->loops[loop_index];
    if (loop->engine != &prg_engine_epoll && loop->engine != &prg_engine_libev) return -ENOTSUP;
    loop->engine->wake(loop);
    return 0;
}

int prg_server_port(const prg_server *s) { return s->port; }
int prg_server_effective_backlog(const prg_server *s) { return s->effective_backlog; }
