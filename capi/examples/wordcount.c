/*
 * Word count through Spillway's C ABI: every maximal run of ASCII letters with the number of
 * its occurrences, "word<TAB>count", in byte order, as `spillway wordcount` writes it.
 *
 *   wordcount OUTPUT_FILE INPUT...      (inputs: files or directories)
 *
 * Build (from the workspace, after `cargo build --release -p spillway-capi`):
 *   cc -Icapi/include capi/examples/wordcount.c -Ltarget/release -lspillway_capi \
 *      -Wl,-rpath,$PWD/target/release -o wordcount
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "spillway.h"

static int is_letter(uint8_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

/* Values are counts: 8 bytes, native byte order (memcpy: value bytes are not aligned). */
static int map(void *user, const uint8_t *text, size_t len, spillway_emitter *emitter) {
    (void)user;
    const uint64_t one = 1;
    size_t i = 0;
    while (i < len) {
        while (i < len && !is_letter(text[i])) i++;
        size_t start = i;
        while (i < len && is_letter(text[i])) i++;
        if (i > start &&
            spillway_emit(emitter, text + start, i - start, (const uint8_t *)&one, sizeof one) !=
                SPILLWAY_STATUS_OK) {
            return 1; /* the engine reports its own error */
        }
    }
    return 0;
}

static int combine(void *user, const uint8_t *acc, size_t acc_len, const uint8_t *value,
                   size_t value_len, spillway_writer *out) {
    (void)user;
    uint64_t a, b;
    if (acc_len != sizeof a || value_len != sizeof b) {
        spillway_fail("a count is not 8 bytes");
        return 1;
    }
    memcpy(&a, acc, sizeof a);
    memcpy(&b, value, sizeof b);
    a += b;
    return spillway_write(out, (const uint8_t *)&a, sizeof a) != SPILLWAY_STATUS_OK;
}

static int reduce(void *user, const uint8_t *key, size_t key_len, spillway_values *values,
                  spillway_writer *out) {
    (void)user;
    uint64_t total = 0, n;
    const uint8_t *value;
    size_t len;
    while (spillway_values_next(values, &value, &len) == SPILLWAY_STATUS_OK) {
        memcpy(&n, value, sizeof n);
        total += n;
    }
    char line[32];
    int digits = snprintf(line, sizeof line, "\t%llu\n", (unsigned long long)total);
    if (spillway_write(out, key, key_len) != SPILLWAY_STATUS_OK ||
        spillway_write(out, (const uint8_t *)line, (size_t)digits) != SPILLWAY_STATUS_OK) {
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OUTPUT_FILE INPUT...\n", argv[0]);
        return 2;
    }
    spillway_config *config = NULL;
    spillway_job *job = NULL;
    char *metrics = NULL;
    int status = spillway_config_new(&config);
    if (status == SPILLWAY_STATUS_OK) status = spillway_config_set_threads(config, 2);
    if (status == SPILLWAY_STATUS_OK) status = spillway_config_set_memory_budget(config, 64u << 20);
    if (status == SPILLWAY_STATUS_OK) status = spillway_job_new(map, combine, reduce, NULL, &job);
    if (status == SPILLWAY_STATUS_OK) {
        status = spillway_run(config, job, (const char *const *)(argv + 2), (size_t)(argc - 2),
                              SPILLWAY_OUTPUT_FILE, argv[1], &metrics);
    }
    if (status != SPILLWAY_STATUS_OK) {
        fprintf(stderr, "wordcount: error %d: %s\n", status, spillway_last_error());
    } else {
        fprintf(stderr, "wordcount: metrics %s\n", metrics);
    }
    spillway_string_free(metrics);
    spillway_job_free(job);
    spillway_config_free(config);
    return status == SPILLWAY_STATUS_OK ? 0 : 1;
}
