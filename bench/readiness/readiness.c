/*
 * readiness.c - why epoll exists.
 *
 * Measures the cost of one readiness wakeup for ONE active descriptor while
 * IDLE other descriptors are being watched, for select, poll, epoll (level-
 * triggered), epoll (edge-triggered), and libev on each of its select, poll
 * and epoll backends.
 *
 *   usage: readiness MECHANISM IDLE ITERATIONS
 *          MECHANISM = select | poll | epoll-lt | epoll-et
 *                    | libev-select | libev-poll | libev-epoll
 *
 * Setup: RLIMIT_NOFILE soft limit is raised to the hard limit; IDLE eventfds
 * (never readable) are created first, then one non-blocking pipe, so the
 * active descriptor (the pipe's read end) has the highest watched number, as
 * in a busy server where the newest connection is the active one.
 *
 * Each iteration: write 1 byte to the pipe, wait with the mechanism (no
 * timeout), find the active descriptor among the results (exit 1 if anything
 * else is reported), read the byte back (epoll-et: read until EAGAIN).
 *   select : rebuild the fd_set with all IDLE+1 descriptors every time, then
 *            FD_ISSET-scan all of them (what a select server must do).
 *   poll   : pollfd array built once; scan revents of all entries.
 *   epoll-*: every descriptor registered once; epoll_wait with 64 events,
 *            handle only the returned events.
 *   libev-*: one ev_loop with only that backend (ev_loop_new(EVBACKEND_x),
 *            checked with ev_backend); an ev_io (EV_READ) per descriptor,
 *            started once; each wait is ev_run(EVRUN_ONCE), and libev finds
 *            the ready descriptor and calls its watcher, which reads the byte
 *            (level-triggered, one read). A callback for an idle descriptor,
 *            or an ev_run that did not report the active one, exits 1.
 *            libev's select backend sizes its own descriptor sets, so unlike
 *            plain select it is not limited to FD_SETSIZE.
 *
 * 10% of ITERATIONS are run as warm-up, then ITERATIONS are timed with
 * CLOCK_THREAD_CPUTIME_ID (CPU time, robust on a noisy machine) and
 * CLOCK_MONOTONIC. Output, one line:
 *   readiness: mechanism=M idle=N iterations=I cpu_ns_per_event=X wall_ns_per_event=Y
 *
 * Exit: 0 ok, 1 wrong descriptor reported, 2 syscall failure / bad usage,
 *       3 select cannot watch a descriptor >= FD_SETSIZE.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -o readiness readiness.c -lev
 *        (libev-dev: <ev.h>, libev.so)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

enum mech { M_SELECT, M_POLL, M_EPOLL_LT, M_EPOLL_ET, M_LIBEV_SELECT, M_LIBEV_POLL, M_LIBEV_EPOLL, M_COUNT };

static const char *const mech_names[M_COUNT] = {
    "select", "poll", "epoll-lt", "epoll-et", "libev-select", "libev-poll", "libev-epoll",
};

static enum mech mechanism;
static long n_idle;
static int *idle_fds;       /* n_idle idle eventfds */
static int active_rd = -1;  /* pipe read end: the watched active descriptor */
static int active_wr = -1;  /* pipe write end */
static int max_fd = -1;     /* highest watched descriptor */
static struct pollfd *pfds; /* poll: n_idle + 1 entries, built once */
static int epfd = -1;
static struct epoll_event events[64];
static fd_set rfds;
static struct ev_loop *lev;  /* libev-*: the loop, with only the chosen backend */
static ev_io *watchers;     /* libev-*: n_idle + 1 watchers, started once */
static int libev_reported;  /* libev-*: active watcher callbacks in this ev_run */

static void libev_setup(void);

static void die_errno(const char *what)
{
    int e = errno;
    fprintf(stderr, "readiness: %s failed: %s (errno %d)\n", what, strerror(e), e);
    exit(2);
}

static void die_wrong(const char *what, int fd)
{
    fprintf(stderr, "readiness: %s: unexpected descriptor %d (active is %d)\n",
            what, fd, active_rd);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: readiness select|poll|epoll-lt|epoll-et|libev-select|libev-poll|libev-epoll"
                    " IDLE ITERATIONS\n");
    exit(2);
}

static long parse_count(const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > INT_MAX / 2)
        usage();
    return v;
}

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0)
        die_errno("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void setup(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die_errno("getrlimit(RLIMIT_NOFILE)");
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            die_errno("setrlimit(RLIMIT_NOFILE)");
    }

    idle_fds = calloc(n_idle > 0 ? (size_t)n_idle : 1, sizeof *idle_fds);
    if (idle_fds == NULL)
        die_errno("calloc");
    for (long i = 0; i < n_idle; i++) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0)
            die_errno("eventfd");
        idle_fds[i] = fd;
        if (fd > max_fd)
            max_fd = fd;
    }

    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        die_errno("pipe2");
    active_rd = p[0];
    active_wr = p[1];
    if (active_rd > max_fd)
        max_fd = active_rd;

    switch (mechanism) {
    case M_SELECT:
        /* max_fd is the highest watched descriptor (the pipe's read end). */
        if (max_fd >= FD_SETSIZE) {
            printf("readiness: select cannot watch descriptor %d >= FD_SETSIZE (%d)\n",
                   max_fd, FD_SETSIZE);
            fflush(stdout);
            exit(3);
        }
        break;
    case M_POLL:
        pfds = calloc((size_t)n_idle + 1, sizeof *pfds);
        if (pfds == NULL)
            die_errno("calloc");
        for (long i = 0; i < n_idle; i++) {
            pfds[i].fd = idle_fds[i];
            pfds[i].events = POLLIN;
        }
        pfds[n_idle].fd = active_rd;
        pfds[n_idle].events = POLLIN;
        break;
    case M_EPOLL_LT:
    case M_EPOLL_ET: {
        epfd = epoll_create1(EPOLL_CLOEXEC);
        if (epfd < 0)
            die_errno("epoll_create1");
        uint32_t flags = EPOLLIN | (mechanism == M_EPOLL_ET ? (uint32_t)EPOLLET : 0u);
        for (long i = 0; i <= n_idle; i++) {
            struct epoll_event ev;
            memset(&ev, 0, sizeof ev);
            ev.events = flags;
            ev.data.fd = i < n_idle ? idle_fds[i] : active_rd;
            if (epoll_ctl(epfd, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0)
                die_errno("epoll_ctl(EPOLL_CTL_ADD)");
        }
        break;
    }
    case M_LIBEV_SELECT:
    case M_LIBEV_POLL:
    case M_LIBEV_EPOLL:
        libev_setup();
        break;
    case M_COUNT:
        break;
    }
}

static void drain_active(void)
{
    char buf[16];
    if (mechanism == M_EPOLL_ET) {
        /* Edge-triggered: must read until EAGAIN or the next edge is lost. */
        long total = 0;
        for (;;) {
            ssize_t r = read(active_rd, buf, sizeof buf);
            if (r > 0) {
                total += r;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            if (r == 0) {
                fprintf(stderr, "readiness: read: unexpected EOF on active pipe\n");
                exit(2);
            }
            die_errno("read");
        }
        if (total != 1) {
            fprintf(stderr, "readiness: read %ld bytes, expected 1\n", total);
            exit(2);
        }
    } else {
        ssize_t r = read(active_rd, buf, 1);
        if (r < 0)
            die_errno("read");
        if (r != 1) {
            fprintf(stderr, "readiness: read returned %zd, expected 1\n", r);
            exit(2);
        }
    }
}

static void libev_idle_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    die_wrong("libev", w->fd);
}

static void libev_active_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    if (!(revents & EV_READ))
        die_wrong("libev (no EV_READ)", w->fd);
    drain_active();
    libev_reported++;
}

static void libev_setup(void)
{
    unsigned backend = mechanism == M_LIBEV_SELECT ? EVBACKEND_SELECT
                     : mechanism == M_LIBEV_POLL   ? EVBACKEND_POLL
                                                   : EVBACKEND_EPOLL;
    if (!(ev_supported_backends() & backend)) {
        fprintf(stderr, "readiness: libev was built without backend 0x%x\n", backend);
        exit(2);
    }
    /* Only that backend; LIBEV_FLAGS in the environment must not change it. */
    lev = ev_loop_new(backend | EVFLAG_NOENV | EVFLAG_NOSIGMASK | EVFLAG_NOTIMERFD);
    if (lev == NULL)
        die_errno("ev_loop_new");
    if (ev_backend(lev) != backend) {
        fprintf(stderr, "readiness: libev gave backend 0x%x, not 0x%x\n", ev_backend(lev), backend);
        exit(2);
    }
    watchers = calloc((size_t)n_idle + 1, sizeof *watchers);
    if (watchers == NULL)
        die_errno("calloc");
    for (long i = 0; i <= n_idle; i++) {
        ev_io *w = &watchers[i];
        if (i < n_idle)
            ev_io_init(w, libev_idle_cb, idle_fds[i], EV_READ);
        else
            ev_io_init(w, libev_active_cb, active_rd, EV_READ);
        ev_io_start(lev, w);
    }
}

static void one_event(void)
{
    static const char byte = 'x';
    ssize_t w = write(active_wr, &byte, 1);
    if (w < 0)
        die_errno("write");
    if (w != 1) {
        fprintf(stderr, "readiness: write returned %zd, expected 1\n", w);
        exit(2);
    }

    switch (mechanism) {
    case M_SELECT: {
        /* A select server must rebuild the set every call... */
        FD_ZERO(&rfds);
        for (long i = 0; i < n_idle; i++)
            FD_SET(idle_fds[i], &rfds);
        FD_SET(active_rd, &rfds);
        int n = select(max_fd + 1, &rfds, NULL, NULL, NULL);
        if (n < 0)
            die_errno("select");
        if (n != 1) {
            fprintf(stderr, "readiness: select returned %d, expected 1\n", n);
            exit(1);
        }
        /* ...and scan every descriptor to find the ready ones. */
        int found = 0;
        for (long i = 0; i < n_idle; i++)
            if (FD_ISSET(idle_fds[i], &rfds))
                die_wrong("select", idle_fds[i]);
        if (FD_ISSET(active_rd, &rfds))
            found = 1;
        if (!found)
            die_wrong("select", -1);
        break;
    }
    case M_POLL: {
        int n = poll(pfds, (nfds_t)n_idle + 1, -1);
        if (n < 0)
            die_errno("poll");
        if (n != 1) {
            fprintf(stderr, "readiness: poll returned %d, expected 1\n", n);
            exit(1);
        }
        for (long i = 0; i < n_idle; i++)
            if (pfds[i].revents != 0)
                die_wrong("poll", pfds[i].fd);
        if (!(pfds[n_idle].revents & POLLIN))
            die_wrong("poll", -1);
        break;
    }
    case M_EPOLL_LT:
    case M_EPOLL_ET: {
        int n = epoll_wait(epfd, events, (int)(sizeof events / sizeof events[0]), -1);
        if (n < 0)
            die_errno("epoll_wait");
        if (n != 1) {
            fprintf(stderr, "readiness: epoll_wait returned %d, expected 1\n", n);
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd != active_rd || !(events[i].events & EPOLLIN))
                die_wrong("epoll_wait", events[i].data.fd);
        }
        break;
    }
    case M_LIBEV_SELECT:
    case M_LIBEV_POLL:
    case M_LIBEV_EPOLL:
        /* The active watcher's callback reads the byte. */
        libev_reported = 0;
        ev_run(lev, EVRUN_ONCE);
        if (libev_reported != 1) {
            fprintf(stderr, "readiness: ev_run reported the active descriptor %d times, expected 1\n",
                    libev_reported);
            exit(1);
        }
        return;
    case M_COUNT:
        break;
    }

    drain_active();
}

int main(int argc, char **argv)
{
    if (argc != 4)
        usage();
    int m;
    for (m = 0; m < M_COUNT; m++)
        if (strcmp(argv[1], mech_names[m]) == 0)
            break;
    if (m == M_COUNT)
        usage();
    mechanism = (enum mech)m;
    n_idle = parse_count(argv[2], 0);
    long iterations = parse_count(argv[3], 1);

    setup();

    long warmup = iterations / 10;
    for (long i = 0; i < warmup; i++)
        one_event();

    uint64_t cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t wall0 = now_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < iterations; i++)
        one_event();
    uint64_t wall1 = now_ns(CLOCK_MONOTONIC);
    uint64_t cpu1 = now_ns(CLOCK_THREAD_CPUTIME_ID);

    printf("readiness: mechanism=%s idle=%ld iterations=%ld cpu_ns_per_event=%.1f wall_ns_per_event=%.1f\n",
           mech_names[mechanism], n_idle, iterations,
           (double)(cpu1 - cpu0) / (double)iterations,
           (double)(wall1 - wall0) / (double)iterations);
    if (fflush(stdout) != 0)
        die_errno("fflush(stdout)");
    return 0;
}
