/* engine_blocking.c: SCAFFOLD, being written (issue 4). */
#include "internal.h"
#include <errno.h>
static int not_yet(prg_loop *loop) { (void)loop; return -ENOSYS; }
static void nothing(prg_loop *loop) { (void)loop; }
static int no_watch(prg_conn *c) { (void)c; return -ENOSYS; }
static void no_conn(prg_conn *c) { (void)c; }
static void no_listener(prg_loop *loop, bool on) { (void)loop; (void)on; }
const prg_engine_ops prg_engine_blocking = {"blocking", not_yet, nothing, nothing, nothing, no_watch, NULL, no_conn, no_listener};
const prg_engine_ops prg_engine_threaded = {"threaded", not_yet, nothing, nothing, nothing, no_watch, NULL, no_conn, no_listener};
