/*
 * handoff.c: a restart that drops nothing. The serving process offers its
 * listening sockets on a Unix socket; a new process of the same user
 * fetches them (SCM_RIGHTS), starts serving them, and confirms; the old one
 * then stops offering and, on SIGTERM, drains. Both processes accept from the
 * same kernel queues in between, so when the old one closes its copies
 * nothing queued is reset (unlike SO_REUSEPORT alone, where a closing
 * listener's queue is reset unless net.ipv4.tcp_migrate_req is on).
 *
 * The conversation, one line each way at a time:
 *   new -> old  "PEREGRINE-HANDOFF 1\n"
 *   old -> new  "LISTENERS <n>\n" with the n descriptors attached
 *   new -> old  "READY\n"            (it serves them now)
 *   old -> new  "BYE\n"              (it no longer offers: the name is free)
 * A refusal is "ERR <why>\n" and a close. A new process that goes away
 * before READY leaves the offer standing: the old one still serves.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HELLO "PEREGRINE-HANDOFF 1\n"
/* How long the old process waits for each line of a session. */
#define SESSION_TIMEOUT_MS 10000

struct prg_handoff {
    int sock;            /* the listening Unix socket */
    int wake[2];         /* pipe: prg_handoff_close wakes the thread */
    int fds[PRG_HANDOFF_MAX_FDS];
    int n;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];   /* filesystem name to unlink, or "" */
    atomic_int taken;
    pthread_t thread;
};

/* name -> address. Returns the address length, or -EINVAL (empty, too long). */
static int unix_address(const char *name, struct sockaddr_un *a) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || (name[0] == '@' && len == 1) || len >= sizeof a->sun_path) return -EINVAL;
    memcpy(a->sun_path, name, len);
    if (name[0] == '@') a->sun_path[0] = '\0';   /* abstract: no file, gone with the socket */
    return (int)(offsetof(struct sockaddr_un, sun_path) + len);
}

/* Waits until fd is readable. 0, -ETIMEDOUT, -ECANCELED (cancel, when not
 * -1, became readable: prg_handoff_close), or -errno. */
static int wait_readable(int fd, int timeout_ms, int cancel) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN, .revents = 0}, {.fd = cancel, .events = POLLIN, .revents = 0}};
    for (;;) {
        int r = poll(p, cancel >= 0 ? 2 : 1, timeout_ms);
        if (r > 0) return p[1].revents ? -ECANCELED : 0;
        if (r == 0) return -ETIMEDOUT;
        if (errno != EINTR) return -errno;
    }
}

/* Reads one line (up to and without its '\n') into buf. Returns its length,
 * -EPROTO (EOF before a line, or longer than buf), -ETIMEDOUT, -ECANCELED,
 * or -errno. Reads byte by byte: nothing beyond the line is consumed. */
static int read_line(int fd, char *buf, size_t cap, int timeout_ms, int cancel) {
    size_t n = 0;
    while (n + 1 < cap) {
        int rc = wait_readable(fd, timeout_ms, cancel);
        if (rc != 0) return rc;
        char ch;
        ssize_t r = recv(fd, &ch, 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -EPROTO;
        if (ch == '\n') {
            buf[n] = '\0';
            return (int)n;
        }
        buf[n++] = ch;
    }
    return -EPROTO;
}

static int send_all(int fd, const char *s) {
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        s += w;
        len -= (size_t)w;
    }
    return 0;
}

static int peer_is_our_user(int fd, struct ucred *cred) {
    socklen_t len = sizeof *cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0) return -errno;
    return cred->uid == geteuid() ? 0 : -EACCES;
}

/* ------------------------------------------------------------ new process */

int prg_handoff_fetch(const char *name, int *fds, int max, int *session, int timeout_ms) {
    *session = -1;
    struct sockaddr_un a;
    int alen = unix_address(name, &a);
    if (alen < 0 || max < 1 || timeout_ms < 0) return -EINVAL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&a, (socklen_t)alen) != 0) {
        int err = errno;
        close(fd);
        /* Nobody offers (a filesystem name may be a stale file). */
        return err == ENOENT || err == ECONNREFUSED ? 0 : -err;
    }
    struct ucred cred;
    int rc = peer_is_our_user(fd, &cred);   /* never take descriptors from someone else */
    if (rc == 0) rc = send_all(fd, HELLO);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    rc = wait_readable(fd, timeout_ms, -1);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    char line[64];
    struct iovec iov = {.iov_base = line, .iov_len = sizeof line - 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * PRG_HANDOFF_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t r;
    do r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    line[r] = '\0';
    /* Whatever arrived is ours to close, whether or not the line is good. */
    int got = 0;
    int received[PRG_HANDOFF_MAX_FDS];
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && got < PRG_HANDOFF_MAX_FDS; i++) memcpy(&received[got++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    int n = -1;
    char tail = 0;
    if (strncmp(line, "ERR", 3) == 0) rc = -EACCES;
    else if (sscanf(line, "LISTENERS %d%c", &n, &tail) != 2 || tail != '\n' || n < 1 || n != got ||
             (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
        rc = -EPROTO;
    else if (n > max) rc = -E2BIG;
    if (rc != 0) {
        for (int i = 0; i < got; i++) close(received[i]);
        close(fd);
        return rc;
    }
    memcpy(fds, received, sizeof(int) * (size_t)n);
    *session = fd;
    return n;
}

int prg_handoff_confirm(int session, int timeout_ms) {
    int rc = send_all(session, "READY\n");
    char line[16];
    if (rc == 0) rc = read_line(session, line, sizeof line, timeout_ms, -1);
    if (rc >= 0) rc = strcmp(line, "BYE") == 0 ? 0 : -EPROTO;
    close(session);
    return rc;
}

/* ------------------------------------------------------- serving process */

/* One conversation. Returns 1 when the peer confirmed (the offer ends). */
static int serve_session(prg_handoff *h, int peer) {
    struct ucred cred;
    int rc = peer_is_our_user(peer, &cred);
    if (rc != 0) {
        (void)send_all(peer, "ERR not the same user\n");
        fprintf(stderr, "peregrine: handoff: refused pid %d (uid %u): not our user\n", (int)cred.pid,
                (unsigned)cred.uid);
        return 0;
    }
    char line[64];
    rc = read_line(peer, line, sizeof line, SESSION_TIMEOUT_MS, h->wake[0]);
    if (rc < 0 || strcmp(line, "PEREGRINE-HANDOFF 1") != 0) {
        (void)send_all(peer, "ERR expected PEREGRINE-HANDOFF 1\n");
        return 0;
    }
    char head[32];
    int len = snprintf(head, sizeof head, "LISTENERS %d\n", h->n);
    struct iovec iov = {.iov_base = head, .iov_len = (size_t)len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * PRG_HANDOFF_MAX_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)h->n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)h->n);
    memcpy(CMSG_DATA(c), h->fds, sizeof(int) * (size_t)h->n);
    ssize_t w;
    do w = sendmsg(peer, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w != len) return 0;
    /* The new process died or gave up: we still serve, the offer stands. */
    /* prg_handoff_close meanwhile (our SIGTERM): the peer has the sockets but
     * no BYE; it serves them anyway, and we drain as if not handed off. */
    if (read_line(peer, line, sizeof line, SESSION_TIMEOUT_MS, h->wake[0]) < 0 || strcmp(line, "READY") != 0) return 0;
    /* Free the name before BYE: the new process offers it next. */
    if (h->path[0]) unlink(h->path);
    close(h->sock);
    h->sock = -1;
    atomic_store(&h->taken, 1);
    (void)send_all(peer, "BYE\n");
    fprintf(stderr, "peregrine: handoff: pid %d serves our listeners now\n", (int)cred.pid);
    return 1;
}

static void *offer_thread(void *arg) {
    prg_handoff *h = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = h->sock, .events = POLLIN, .revents = 0},
                              {.fd = h->wake[0], .events = POLLIN, .revents = 0}};
        int r = poll(p, 2, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || p[1].revents) break;
        int peer = accept4(h->sock, NULL, NULL, SOCK_CLOEXEC);
        if (peer < 0) continue;
        int done = serve_session(h, peer);
        close(peer);
        if (done) break;
    }
    return NULL;
}

/* Binds name. A filesystem name left by a process that died (nobody
 * answers on it) is removed first. 0 or -errno. */
static int bind_name(prg_handoff *h, const char *name) {
    struct sockaddr_un a;
    int alen = unix_address(name, &a);
    if (alen < 0) return alen;
    for (int attempt = 0; attempt < 2; attempt++) {
        h->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (h->sock < 0) return -errno;
        if (bind(h->sock, (struct sockaddr *)&a, (socklen_t)alen) == 0 && listen(h->sock, 16) == 0) {
            if (name[0] != '@') snprintf(h->path, sizeof h->path, "%s", name);
            return 0;
        }
        int err = errno;
        close(h->sock);
        h->sock = -1;
        if (err != EADDRINUSE || name[0] == '@' || attempt > 0) return -err;
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) return -errno;
        int live = connect(probe, (struct sockaddr *)&a, (socklen_t)alen) == 0 || errno != ECONNREFUSED;
        close(probe);
        if (live) return -EADDRINUSE;
        unlink(name);   /* stale: its process is gone */
    }
    return -EADDRINUSE;
}

int prg_handoff_offer(const char *name, const int *fds, int n, prg_handoff **out) {
    *out = NULL;
    if (n < 1) return -EINVAL;
    if (n > PRG_HANDOFF_MAX_FDS) return -E2BIG;
    prg_handoff *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    h->sock = h->wake[0] = h->wake[1] = -1;
    atomic_init(&h->taken, 0);
    int rc = 0;
    for (h->n = 0; h->n < n; h->n++) {
        h->fds[h->n] = fcntl(fds[h->n], F_DUPFD_CLOEXEC, 3);
        if (h->fds[h->n] < 0) { rc = -errno; break; }
    }
    if (rc == 0 && pipe2(h->wake, O_CLOEXEC) != 0) rc = -errno;
    if (rc == 0) rc = bind_name(h, name);
    if (rc == 0) {
        /* The thread takes no signals: they stay with the application. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        rc = -pthread_create(&h->thread, NULL, offer_thread, h);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rc != 0) {
        if (h->sock >= 0) {
            if (h->path[0]) unlink(h->path);
            close(h->sock);
        }
        for (int i = 0; i < h->n; i++) close(h->fds[i]);
        if (h->wake[0] >= 0) close(h->wake[0]);
        if (h->wake[1] >= 0) close(h->wake[1]);
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

int prg_handoff_taken(prg_handoff *h) { return atomic_load(&h->taken); }

int prg_handoff_close(prg_handoff *h) {
    if (!h) return 0;
    char one = 1;
    ssize_t w = write(h->wake[1], &one, 1);
    (void)w;
    pthread_join(h->thread, NULL);
    if (h->sock >= 0) {
        if (h->path[0]) unlink(h->path);
        close(h->sock);
    }
    for (int i = 0; i < h->n; i++) close(h->fds[i]);
    close(h->wake[0]);
    close(h->wake[1]);
    int taken = atomic_load(&h->taken);
    free(h);
    return taken;
}
