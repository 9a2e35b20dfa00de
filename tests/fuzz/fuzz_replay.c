/* A main() for a fuzz target without libFuzzer: runs every file in the
 * directories (or files) named on the command line (or in
 * $CTX_FUZZ_CORPUS) through LLVMFuzzerTestOneInput once, each from an
 * exact-size copy so that a read past the input is caught. The
 * fuzz_replay_* tests (the propagation parsers) and rel_fuzz_replay (the
 * core's model-based harness) run their committed corpus this way in every
 * build configuration (gcc, ASan, TSan, i386); it also replays a crash
 * file. */
/* 64-bit inode numbers and sizes on 32-bit ABIs too: without it readdir()
 * and stat() fail with EOVERFLOW on file systems with large inode numbers
 * (seen in the i386 build of make test). */
#define _FILE_OFFSET_BITS 64
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long runs;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (nb == NULL) {
                fclose(f);
                free(buf);
                return 1;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    /* An exact-size copy, so that a read past the input is caught. */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL) {
        free(buf);
        return 1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    runs++;
    return 0;
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    struct dirent **ents;
    int n = scandir(path, &ents, NULL, alphasort);
    if (n < 0) {
        perror(path);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.') {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, ents[i]->d_name);
            bad |= run_file(p);
        }
        free(ents[i]);
    }
    free(ents);
    return bad;
}

int main(int argc, char **argv)
{
    const char *what;
    int bad = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            bad |= run_path(argv[i]);
        what = argv[1];
    } else {
        what = getenv("CTX_FUZZ_CORPUS");
        if (what == NULL) {
            fprintf(stderr, "usage: %s file-or-dir... (or CTX_FUZZ_CORPUS)\n",
                    argv[0]);
            return 2;
        }
        bad |= run_path(what);
    }
    printf("fuzz replay %s: %ld inputs, every check held\n", what, runs);
    return bad || runs == 0;
}
