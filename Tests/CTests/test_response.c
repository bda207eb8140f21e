/*
 * test_response.c: the response writer (csrc/response.c) through a real
 * server on every event engine, under ASan, UBSan and LSan. The handler
 * calls the writer as an application would and records what each call
 * returned; the client checks the bytes on the wire.
 *
 *  - Content-Length: a short body ends with -1 from prg_end and a close, a
 *    long one is refused by prg_write_body
 *  - no Content-Length: chunked for HTTP/1.1, close-delimited for HTTP/1.0
 *  - HEAD: the head of a GET (Content-Length included), no body bytes
 *  - header refusal: Transfer-Encoding, Connection other than close, CR/LF
 *    in a value, a name that is not a token, a second Content-Length,
 *    a header after the body began
 *  - status refusal: 1xx, beyond 999, a second prg_respond
 *  - prg_response_replace: the begun answer (bytes over several links, or a
 *    file link) is taken back, the error status instead
 */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>

/* Descriptors of this process (the server runs in it) open on /dev/zero. */
static int open_dev_zero(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[64], target[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len > 0) {
            target[len] = 0;
            if (strcmp(target, "/dev/zero") == 0) n++;
        }
    }
    closedir(d);
    return n;
}

/* Return values the handler recorded (read after the answer arrived). */
static int rv[16];

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    memset(rv, 0x7f, sizeof rv);
    if (th_target_is(req, "/short")) {
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_header(c, "Content-Length", 14, "10", 2);
        rv[2] = prg_write_body(c, "12345", 5);
        rv[3] = prg_end(c);
    } else if (th_target_is(req, "/long")) {
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_header(c, "Content-Length", 14, "3", 1);
        rv[2] = prg_write_body(c, "1234", 4);
        rv[3] = prg_write_body(c, "123", 3);
        rv[4] = prg_end(c);
    } else if (th_target_is(req, "/chunked")) {
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_body(c, "abc", 3);
        rv[2] = prg_write_body(c, "0123456789abcdefX", 17);
        rv[3] = prg_end(c);
    } else if (th_target_is(req, "/send")) {
        rv[0] = prg_send(c, 200, "text/plain", 10, "hello", 5);
    } else if (th_target_is(req, "/headers")) {
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_header(c, "Transfer-Encoding", 17, "chunked", 7);
        rv[2] = prg_write_header(c, "Connection", 10, "keep-alive", 10);
        rv[3] = prg_write_header(c, "X-Bad", 5, "a\r\nInjected: 1", 15);
        rv[4] = prg_write_header(c, "Bad Name", 8, "v", 1);
        rv[5] = prg_write_header(c, "X-Good", 6, "yes", 3);
        rv[6] = prg_write_header(c, "Content-Length", 14, "2", 1);
        rv[7] = prg_write_header(c, "Content-Length", 14, "2", 1);
        rv[8] = prg_write_body(c, "ok", 2);
        rv[9] = prg_write_header(c, "X-Late", 6, "1", 1);
        rv[10] = prg_end(c);
        rv[11] = prg_end(c);
    } else if (th_target_is(req, "/status")) {
        rv[0] = prg_respond(c, 100, NULL, 0);
        rv[1] = prg_respond(c, 1000, NULL, 0);
        rv[2] = prg_respond(c, 200, "Fine\r\nX: y", 10);
        rv[3] = prg_respond(c, 201, "Made", 4);
        rv[4] = prg_respond(c, 202, NULL, 0);
        rv[5] = prg_end(c);
    } else if (th_target_is(req, "/replace")) {
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_header(c, "X-Begun", 7, "1", 1);
        static char big[40000];
        memset(big, 'p', sizeof big);
        rv[2] = prg_write_body(c, big, sizeof big);   /* spans several send-queue links */
        rv[3] = prg_response_replace(c, 200);         /* not an error status: refused */
        rv[4] = prg_response_replace(c, 500);
    } else if (th_target_is(req, "/replace-file")) {
        /* A file link in the begun answer: taken back with the rest, its
         * descriptor closed (open_dev_zero() below counts them). */
        rv[0] = prg_respond(c, 200, NULL, 0);
        rv[1] = prg_write_header(c, "Content-Length", 14, "20", 2);
        rv[2] = prg_write_body(c, "head", 4);
        int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        rv[3] = prg_write_file(c, fd, 0, 16);
        rv[4] = prg_response_replace(c, 503);
    } else if (th_target_is(req, "/replace-none")) {
        rv[0] = prg_response_replace(c, 500);         /* nothing begun */
        rv[1] = prg_send(c, 200, NULL, 0, "fine", 4);
    } else {
        rv[0] = prg_send(c, 404, NULL, 0, NULL, 0);
    }
}

static prg_server *start(const th_engine *e) {
    prg_config cfg;
    th_config(&cfg, e);
    prg_callbacks cb = {.on_request = on_request};
    return th_start(&cfg, &cb);
}

static void test_length_mismatch(int port) {
    th_case = "content-length short";
    th_client *c = th_connect(port);
    th_send(c, "GET /short HTTP/1.1\r\nHost: t\r\n\r\n");
    /* The head promises 10 bytes; 5 come, then the close. */
    th_response r;
    CHECK(th_read_response_ex(c, &r, 1) == 0 && r.status == 200, "head");
    CHECK(strstr(r.head, "Content-Length: 10\r\n") != NULL, "declared length kept");
    ssize_t n;
    while ((n = th_fill(c)) > 0) {}
    CHECK(n == 0, "closed after the short body");
    CHECK(c->len == 5 && memcmp(c->buf, "12345", 5) == 0, "the 5 bytes written, got %zu", c->len);
    CHECK(rv[0] == 0 && rv[1] == 0 && rv[2] == 0 && rv[3] == -1, "short: prg_end must say -1 (%d %d %d %d)", rv[0],
          rv[1], rv[2], rv[3]);
    th_close(c);

    th_case = "content-length long";
    c = th_connect(port);
    th_send(c, "GET /long HTTP/1.1\r\nHost: t\r\n\r\nGET /send HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3, "long: exactly 3 bytes");
    CHECK(memcmp(r.body, "123", 3) == 0, "long: the bytes that fit");
    /* rv was overwritten by /send by now: check the framing held instead. */
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 5, "next answer framed right");
    th_close(c);
}

static void test_long_return_values(int port) {
    th_case = "content-length long returns";
    th_client *c = th_connect(port);
    th_send(c, "GET /long HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0, "answer");
    CHECK(rv[2] == -1 && rv[3] == 0 && rv[4] == 0, "4 bytes over 3 refused, 3 fit (%d %d %d)", rv[2], rv[3], rv[4]);
    th_close(c);
}

static void test_chunked_and_close_delimited(int port) {
    th_case = "chunked";
    th_client *c = th_connect(port);
    th_send(c, "GET /chunked HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.chunked, "chunked answer");
    CHECK(r.body_len == 20 && memcmp(r.body, "abc0123456789abcdefX", 20) == 0, "decoded body");
    CHECK(rv[0] == 0 && rv[1] == 0 && rv[2] == 0 && rv[3] == 0, "chunked returns");
    th_close(c);
    /* The raw framing: sizes in hex, the terminating zero chunk. */
    c = th_connect(port);
    th_send(c, "GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ssize_t n;
    while ((n = th_fill(c)) > 0) {}
    c->buf[c->len] = 0;
    CHECK(strstr(c->buf, "\r\n\r\n3\r\nabc\r\n11\r\n0123456789abcdefX\r\n0\r\n\r\n") != NULL, "wire: %s", c->buf);
    th_close(c);

    th_case = "HTTP/1.0 close-delimited";
    c = th_connect(port);
    th_send(c, "GET /chunked HTTP/1.0\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.close_delimited && !r.chunked, "1.0: no chunking, ends with the close");
    CHECK(r.body_len == 20, "1.0 body %zu", r.body_len);
    th_close(c);
}

static void test_head(int port) {
    th_case = "HEAD";
    th_client *c = th_connect(port);
    th_send(c, "HEAD /send HTTP/1.1\r\nHost: t\r\n\r\nGET /send HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response_ex(c, &r, 1) == 0 && r.status == 200, "HEAD answer");
    CHECK(strstr(r.head, "Content-Length: 5\r\n") != NULL, "HEAD keeps the GET's length");
    /* No body bytes: the next thing on the wire is the GET's answer. */
    CHECK(th_read_response(c, &r) == 0 && r.body_len == 5 && memcmp(r.body, "hello", 5) == 0,
          "GET after HEAD, got %d", r.status);
    th_close(c);
    c = th_connect(port);
    th_send(c, "HEAD /chunked HTTP/1.1\r\nHost: t\r\n\r\nGET /send HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response_ex(c, &r, 1) == 0 && r.status == 200, "HEAD of a streamed answer");
    CHECK(strstr(r.head, "Transfer-Encoding") == NULL, "no chunking for HEAD");
    CHECK(th_read_response(c, &r) == 0 && r.body_len == 5, "GET after streamed HEAD");
    th_close(c);
}

static void test_header_rules(int port) {
    th_case = "header refusal";
    th_client *c = th_connect(port);
    th_send(c, "GET /headers HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 2, "answer");
    CHECK(rv[0] == 0, "respond");
    CHECK(rv[1] == -1, "Transfer-Encoding refused");
    CHECK(rv[2] == -1, "Connection: keep-alive refused");
    CHECK(rv[3] == -1, "CRLF in a value refused");
    CHECK(rv[4] == -1, "a name with a space refused");
    CHECK(rv[5] == 0, "X-Good accepted");
    CHECK(rv[6] == 0 && rv[7] == -1, "one Content-Length, the second refused");
    CHECK(rv[8] == 0 && rv[9] == -1, "a header after the body began refused");
    CHECK(rv[10] == 0 && rv[11] == -1, "prg_end once");
    CHECK(strstr(r.head, "Injected") == NULL && strstr(r.head, "Bad Name") == NULL &&
              strstr(r.head, "keep-alive") == NULL && strstr(r.head, "X-Late") == NULL,
          "refused headers left out: %s", r.head);
    CHECK(strstr(r.head, "X-Good: yes\r\n") != NULL, "accepted header written");
    th_close(c);

    th_case = "status refusal";
    c = th_connect(port);
    th_send(c, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 201, "the first accepted status, got %d", r.status);
    CHECK(rv[0] == -1 && rv[1] == -1 && rv[2] == -1, "1xx, 1000, CRLF reason refused");
    CHECK(rv[3] == 0 && rv[4] == -1 && rv[5] == 0, "201 taken, a second respond refused");
    CHECK(strncmp(r.head, "HTTP/1.1 201 Made\r\n", 19) == 0, "custom reason");
    th_close(c);
}

static void test_replace(int port) {
    th_case = "replace";
    th_client *c = th_connect(port);
    th_send(c, "GET /replace HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 500, "500 in place of the begun answer, got %d", r.status);
    CHECK(strstr(r.head, "X-Begun") == NULL, "begun head taken back");
    CHECK(memchr(r.body, 'p', r.body_len) == NULL, "begun body taken back");
    char v[32];
    CHECK(th_header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0, "500 closes");
    CHECK(rv[0] == 0 && rv[2] == 0 && rv[3] == -1 && rv[4] == 0, "replace returns (%d %d %d)", rv[2], rv[3], rv[4]);
    CHECK(th_closed(c), "closed after the 500");
    th_close(c);
    c = th_connect(port);
    int zero_before = open_dev_zero();
    th_send(c, "GET /replace-file HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 503, "503 in place of a begun answer with a file link, got %d",
          r.status);
    CHECK(memchr(r.body, 0, r.body_len) == NULL, "none of the file's bytes");
    CHECK(rv[3] == 0 && rv[4] == 0, "file link queued, then taken back (%d %d)", rv[3], rv[4]);
    CHECK(zero_before == 0 && open_dev_zero() == 0, "the file link's descriptor closed (%d open)", open_dev_zero());
    CHECK(th_closed(c), "closed after the 503");
    th_close(c);
    c = th_connect(port);
    th_send(c, "GET /replace-none HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 200, "nothing begun: replace refused, the answer stands");
    CHECK(rv[0] == -1, "replace with nothing begun");
    th_close(c);
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "response: %s\n", e->name);
        prg_server *s = start(e);
        int port = prg_server_port(s);
        test_length_mismatch(port);
        test_long_return_values(port);
        test_chunked_and_close_delimited(port);
        test_head(port);
        test_header_rules(port);
        test_replace(port);
        th_stop(s);
    }
    return th_report("test_response");
}
