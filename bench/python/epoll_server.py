#!/usr/bin/env python3
"""epoll_server.py: the Python contender in Peregrine's benchmarks.

A level-triggered epoll HTTP server in the style of the classic article
"How To Use Linux epoll with Python" (Scot Doyle): a non-blocking listening
socket registered for EPOLLIN, per-connection request and response buffers in
dicts keyed by fileno, a connection switched to EPOLLOUT while it has a
response to send and back to EPOLLIN once it has been sent, and EPOLLHUP
closing the connection. Unlike the article it keeps connections alive and
answers every complete request in the buffer (split on the blank line), so
HTTP/1.1 keep-alive and pipelining work; an HTTP/1.0 request without
"Connection: keep-alive" (or any request with "Connection: close") gets
"Connection: close" and the connection is shut down once the answer is sent;
an HTTP/1.0 request with it gets "Connection: keep-alive" (as `ab -k` needs).
Requests with bodies are not supported (every request is a bare head).

Each response is assembled per request, with Server and Date headers (the
Date string is cached and rebuilt at most once a second), as TechEmpower's
plaintext rules ask.

With --echo it is a raw TCP echo server instead: same epoll structure, the
bytes read go to a per-connection outgoing queue, the connection switches to
EPOLLOUT until the queue is drained, then back to EPOLLIN.

    python3 bench/python/epoll_server.py --host 127.0.0.1 --port 8083 [--echo]

Standard library only.
"""

import argparse
import email.utils
import select
import socket
import sys
import time

BODY = b"Hello, World!"
MAX_HEAD = 65536  # a connection whose unanswered bytes grow past this is closed
RECV_SIZE = 65536

_date_second = -1
_date_value = b""


def http_date():
    """The Date header value, rebuilt at most once a second."""
    global _date_second, _date_value
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_value = email.utils.formatdate(now, usegmt=True).encode("ascii")
    return _date_value


CONNECTION = {
    "close": b"Connection: close\r\n\r\n",
    "keep-alive": b"Connection: keep-alive\r\n\r\n",  # HTTP/1.0 keep-alive must be confirmed
    None: b"\r\n",
}


def response(connection):
    """One response, assembled per request; connection is a key of CONNECTION."""
    return b"".join((
        b"HTTP/1.1 200 OK\r\nServer: python-epoll\r\nDate: ",
        http_date(),
        b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n",
        CONNECTION[connection],
        BODY,
    ))


def connection_header(head):
    """What this request head asks of the connection: "close" (answer, then
    close), "keep-alive" (an HTTP/1.0 keep-alive, to be confirmed) or None
    (HTTP/1.1 persistent connection, nothing to say)."""
    lines = head.split(b"\r\n")
    http10 = lines[0].rstrip().endswith(b"HTTP/1.0")
    connection = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"connection":
            connection = value.strip().lower()
    if connection == b"close":
        return "close"
    if http10:
        return "keep-alive" if connection == b"keep-alive" else "close"
    return None


def listen(host, port, backlog):
    serversocket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    serversocket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    serversocket.bind((host, port))
    serversocket.listen(backlog)
    serversocket.setblocking(False)
    return serversocket


def accept_all(serversocket, epoll, connections, buffers):
    """Accept every pending connection (the listener is level-triggered),
    register it for EPOLLIN and give it an empty entry in each of buffers."""
    while True:
        try:
            connection, _address = serversocket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EMFILE and the like: leave it in the backlog, try again later.
            return
        connection.setblocking(False)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fileno = connection.fileno()
        epoll.register(fileno, select.EPOLLIN)
        connections[fileno] = connection
        for buffer in buffers:
            buffer[fileno] = b""


def serve_http(serversocket):
    epoll = select.epoll()
    listener = serversocket.fileno()
    epoll.register(listener, select.EPOLLIN)
    connections = {}
    requests = {}
    responses = {}
    closing = set()  # filenos to shut down once their response is sent

    def drop(fileno):
        epoll.unregister(fileno)
        connections.pop(fileno).close()
        del requests[fileno]
        del responses[fileno]
        closing.discard(fileno)

    try:
        while True:
            events = epoll.poll()
            for fileno, event in events:
                if fileno == listener:
                    accept_all(serversocket, epoll, connections, (requests, responses))
                elif fileno not in connections:
                    continue
                elif event & select.EPOLLIN:
                    try:
                        data = connections[fileno].recv(RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        drop(fileno)
                        continue
                    buffer = requests[fileno] + data
                    out = []
                    while fileno not in closing:
                        head, sep, rest = buffer.partition(b"\r\n\r\n")
                        if not sep:
                            break
                        buffer = rest
                        connection = connection_header(head)
                        if connection == "close":
                            closing.add(fileno)
                            buffer = b""
                        out.append(response(connection))
                    if len(buffer) > MAX_HEAD:
                        drop(fileno)
                        continue
                    requests[fileno] = buffer
                    if out:
                        responses[fileno] += b"".join(out)
                        epoll.modify(fileno, select.EPOLLOUT)
                elif event & select.EPOLLOUT:
                    try:
                        byteswritten = connections[fileno].send(responses[fileno])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        drop(fileno)
                        continue
                    responses[fileno] = responses[fileno][byteswritten:]
                    if not responses[fileno]:
                        if fileno in closing:
                            # As in the article: stop watching, shut the socket
                            # down and close it when EPOLLHUP arrives.
                            epoll.modify(fileno, 0)
                            try:
                                connections[fileno].shutdown(socket.SHUT_RDWR)
                            except OSError:
                                drop(fileno)
                        else:
                            epoll.modify(fileno, select.EPOLLIN)
                elif event & (select.EPOLLHUP | select.EPOLLERR):
                    drop(fileno)
    finally:
        epoll.unregister(listener)
        epoll.close()
        serversocket.close()


def serve_echo(serversocket):
    epoll = select.epoll()
    listener = serversocket.fileno()
    epoll.register(listener, select.EPOLLIN)
    connections = {}
    outgoing = {}

    def drop(fileno):
        epoll.unregister(fileno)
        connections.pop(fileno).close()
        del outgoing[fileno]

    try:
        while True:
            events = epoll.poll()
            for fileno, event in events:
                if fileno == listener:
                    accept_all(serversocket, epoll, connections, (outgoing,))
                elif fileno not in connections:
                    continue
                elif event & select.EPOLLIN:
                    try:
                        data = connections[fileno].recv(RECV_SIZE)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        drop(fileno)
                        continue
                    outgoing[fileno] += data
                    epoll.modify(fileno, select.EPOLLOUT)
                elif event & select.EPOLLOUT:
                    try:
                        byteswritten = connections[fileno].send(outgoing[fileno])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        drop(fileno)
                        continue
                    outgoing[fileno] = outgoing[fileno][byteswritten:]
                    if not outgoing[fileno]:
                        epoll.modify(fileno, select.EPOLLIN)
                elif event & (select.EPOLLHUP | select.EPOLLERR):
                    drop(fileno)
    finally:
        epoll.unregister(listener)
        epoll.close()
        serversocket.close()


def main():
    parser = argparse.ArgumentParser(description="Python epoll contender server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--echo", action="store_true", help="raw TCP echo instead of HTTP")
    args = parser.parse_args()
    serversocket = listen(args.host, args.port, args.backlog)
    print("python-epoll: listening on %s:%d" % (args.host, args.port), file=sys.stderr, flush=True)
    try:
        if args.echo:
            serve_echo(serversocket)
        else:
            serve_http(serversocket)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
