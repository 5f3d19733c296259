/*
 * scan: walk directory trees through the fdbroker broker and print a hash of every
 * regular file in them, as a scanner that may not open anything itself would.
 *
 *     scan [-s SOCKET] DIR...
 *
 * Each directory is listed by the broker with fdb_read_dir (which leaves out what the
 * policy hides); the files in it are opened with one fdb_open_many per directory and
 * hashed (64-bit FNV-1a) as they are read. Prints "HASH  PATH" per file. A failure is
 * reported on stderr as "scan: PATH: reason (ERRNO)" and makes the exit status 1;
 * the walk goes on. Without -s the library finds the broker itself (FDBROKER_FD,
 * FDBROKER_SOCKET, then the default socket).
 *
 * Build (after worker/ffi/install.sh):
 *     cc -o scan scan.c $(pkg-config --cflags --libs fdbroker-client)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fdbroker.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int status = 0;

/* Report a failure: the library's words when there are some (they name the path and
 * give the broker's reason), else the system's. */
static void fail(const char *path, int err, const char *why)
{
    const char *name = strerrorname_np(err);
    if (why)
        fprintf(stderr, "scan: %s (%s)\n", why, name ? name : "?");
    else
        fprintf(stderr, "scan: %s: %s (%s)\n", path, strerror(err), name ? name : "?");
    status = 1;
}

/* 64-bit FNV-1a of everything readable from fd. */
static int hash_fd(int fd, uint64_t *out)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            h ^= buf[i];
            h *= 0x100000001b3ULL;
        }
    }
    *out = h;
    return 0;
}

/* A growable list of strings. */
struct list {
    char **items;
    size_t len, cap;
};

static int push(struct list *l, const char *s)
{
    if (l->len == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return -1;
        l->items = items;
        l->cap = cap;
    }
    if (!(l->items[l->len] = strdup(s)))
        return -1;
    l->len++;
    return 0;
}

static void clear(struct list *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->len = l->cap = 0;
}

static int join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s%s%s", dir,
                     dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return n > 0 && n < PATH_MAX ? 0 : -1;
}

static void scan_dir(fdb_client *broker, const char *dir);

/* Open every path in `files` in one batch and hash each; those that turn out to be
 * directories (readdir could not tell) are walked instead. */
static void scan_files(fdb_client *broker, struct list *files)
{
    if (files->len == 0)
        return;
    int *fds = calloc(files->len, sizeof *fds);
    int *errs = calloc(files->len, sizeof *errs);
    if (!fds || !errs) {
        fail(files->items[0], ENOMEM, NULL);
        goto out;
    }
    if (fdb_open_many(broker, (const char *const *)files->items, files->len, O_RDONLY,
                      fds, errs) < 0) {
        fail(files->items[0], errno, fdb_last_error());
        goto out;
    }
    for (size_t i = 0; i < files->len; i++) {
        uint64_t h;
        if (fds[i] < 0) {
            if (errs[i] == EISDIR)
                scan_dir(broker, files->items[i]);
            else
                fail(files->items[i], errs[i], NULL);
            continue;
        }
        if (hash_fd(fds[i], &h) < 0)
            fail(files->items[i], errno, NULL);
        else
            printf("%016llx  %s\n", (unsigned long long)h, files->items[i]);
        close(fds[i]);
    }
out:
    free(fds);
    free(errs);
}

/* What fdb_read_dir's callback fills: the directory's files and subdirectories. */
struct listing {
    const char *dir;
    struct list files, dirs;
};

static int on_entry(void *ctx, const char *name, int type)
{
    struct listing *l = ctx;
    char path[PATH_MAX];
    if (join(path, l->dir, name) < 0) {
        fail(l->dir, ENAMETOOLONG, NULL);
        return 0;
    }
    /* DT_UNKNOWN is tried as a file: the broker says EISDIR if it is not. */
    int ok = 0;
    if (type == DT_DIR)
        ok = push(&l->dirs, path);
    else if (type == DT_REG || type == DT_UNKNOWN)
        ok = push(&l->files, path);
    if (ok < 0) {
        fail(path, ENOMEM, NULL);
        return 1;
    }
    return 0;
}

static void scan_dir(fdb_client *broker, const char *dir)
{
    struct listing l = {.dir = dir};
    if (fdb_read_dir(broker, dir, on_entry, &l) < 0)
        fail(dir, errno, fdb_last_error());
    scan_files(broker, &l.files);
    for (size_t i = 0; i < l.dirs.len; i++)
        scan_dir(broker, l.dirs.items[i]);
    clear(&l.files);
    clear(&l.dirs);
}

int main(int argc, char **argv)
{
    const char *socket = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:")) != -1) {
        if (opt == 's')
            socket = optarg;
        else {
            fprintf(stderr, "usage: scan [-s SOCKET] DIR...\n");
            return 2;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "usage: scan [-s SOCKET] DIR...\n");
        return 2;
    }
    fdb_client *broker = fdb_connect(socket);
    if (!broker) {
        fail(socket ? socket : "the broker", errno, fdb_last_error());
        return 1;
    }
    for (int i = optind; i < argc; i++)
        scan_dir(broker, argv[i]);
    fdb_close(broker);
    return status;
}
