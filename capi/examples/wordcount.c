/*
 * Word count through Spillway's C ABI: every maximal run of ASCII letters with the number of
 * its occurrences, "word<TAB>count", in byte order, as `spillway wordcount` writes it.
 *
 *   wordcount [--collect] OUTPUT_FILE INPUT...      (inputs: files or directories)
 *
 * With --collect the output comes back to this program through an output callback
 * (SPILLWAY_OUTPUT_CALLBACK: each key's line, in key order, from one thread), is collected in
 * memory, and written to OUTPUT_FILE at the end: the same bytes.
 *
 * Build (from the workspace, after `cargo build --release -p spillway-capi`):
 *   cc -Icapi/include capi/examples/wordcount.c -Ltarget/release -lspillway_capi \
 *      -Wl,-rpath,$PWD/target/release -o wordcount
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "spillway.h"

/* Bit i of the result is set iff p[i] is an ASCII letter ([A-Za-z]; bytes >= 0x80 are not):
 * SSE2 compares where there is SSE2 (every x86-64), a byte loop elsewhere. */
static inline uint64_t letter_mask(const uint8_t *p) {
    uint64_t mask = 0;
#if defined(__SSE2__)
    /* (c | 0x20) - 'a' < 26, unsigned: shifted by 128 into a signed compare. */
    const __m128i lower = _mm_set1_epi8(0x20), shift = _mm_set1_epi8((char)('a' + 128)),
                  bound = _mm_set1_epi8(26 - 128);
    for (int k = 0; k < 4; k++) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));
        __m128i offset = _mm_sub_epi8(_mm_or_si128(bytes, lower), shift);
        mask |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmplt_epi8(offset, bound)) << (16 * k);
    }
#else
    for (int i = 0; i < 64; i++) mask |= (uint64_t)((uint8_t)((p[i] | 0x20) - 'a') < 26) << i;
#endif
    return mask;
}

static inline int lowest_bit(uint64_t x) {
#if defined(__GNUC__)
    return __builtin_ctzll(x);
#else
    int i = 0;
    while (!(x & 1)) x >>= 1, i++;
    return i;
#endif
}

/* Counts are 64-bit values (spillway_job_new_u64) that the engine sums itself
 * (SPILLWAY_COMBINE_SUM): map emits 1 per word, with no value to allocate and no combine
 * callback per word. Words are found 64 bytes at a time: a mask of the letters, whose edges
 * (a letter after a non-letter, a non-letter after a letter) start and end words. */
static int map(void *user, const uint8_t *text, size_t len, spillway_emitter *emitter) {
    (void)user;
    uint64_t before = 0; /* 1 if the byte before this block is a letter */
    size_t start = 0;    /* where the current word began */
    for (size_t base = 0; base < len; base += 64) {
        uint64_t mask;
        if (len - base >= 64) {
            mask = letter_mask(text + base);
        } else {
            uint8_t last[64] = {0}; /* zero padding ends a trailing word at `len` */
            memcpy(last, text + base, len - base);
            mask = letter_mask(last);
        }
        uint64_t edges = mask ^ (mask << 1 | before);
        while (edges) {
            int i = lowest_bit(edges);
            edges &= edges - 1;
            if (mask >> i & 1) {
                start = base + (size_t)i;
            } else if (spillway_emit_u64(emitter, text + start, base + (size_t)i - start, 1) !=
                       SPILLWAY_STATUS_OK) {
                return 1; /* the engine reports its own error */
            }
        }
        before = mask >> 63;
    }
    if (before && spillway_emit_u64(emitter, text + start, len - start, 1) != SPILLWAY_STATUS_OK) {
        return 1;
    }
    return 0;
}

static int reduce(void *user, const uint8_t *key, size_t key_len, spillway_values *values,
                  spillway_writer *out) {
    (void)user;
    uint64_t total = 0, n;
    while (spillway_values_next_u64(values, &n) == SPILLWAY_STATUS_OK) total += n;
    char line[32];
    int digits = snprintf(line, sizeof line, "\t%llu\n", (unsigned long long)total);
    if (spillway_write(out, key, key_len) != SPILLWAY_STATUS_OK ||
        spillway_write(out, (const uint8_t *)line, (size_t)digits) != SPILLWAY_STATUS_OK) {
        return 1;
    }
    return 0;
}

/* What the output callback collects into (its `user` pointer). */
struct collected {
    uint8_t *bytes;
    size_t len, cap;
    uint8_t last_key[256];
    size_t last_key_len;
    size_t keys;
};

static int collect(void *user, const uint8_t *key, size_t key_len, const uint8_t *data, size_t len) {
    struct collected *c = user;
    /* Keys arrive in byte order: check it (a key longer than 256 bytes is not checked). */
    size_t common = key_len < c->last_key_len ? key_len : c->last_key_len;
    int order = memcmp(key, c->last_key, common);
    if (c->keys > 0 && (order < 0 || (order == 0 && key_len <= c->last_key_len))) {
        spillway_fail("keys out of order");
        return 1;
    }
    if (key_len <= sizeof c->last_key) {
        memcpy(c->last_key, key, key_len);
        c->last_key_len = key_len;
    }
    c->keys++;
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len) cap *= 2;
        uint8_t *bytes = realloc(c->bytes, cap);
        if (bytes == NULL) {
            spillway_fail("out of memory");
            return 1;
        }
        c->bytes = bytes;
        c->cap = cap;
    }
    if (len > 0) memcpy(c->bytes + c->len, data, len);
    c->len += len;
    return 0;
}

int main(int argc, char **argv) {
    int collecting = argc > 1 && strcmp(argv[1], "--collect") == 0;
    argv += collecting;
    argc -= collecting;
    if (argc < 3) {
        fprintf(stderr, "usage: wordcount [--collect] OUTPUT_FILE INPUT...\n");
        return 2;
    }
    struct collected collected = {0};
    spillway_config *config = NULL;
    spillway_job *job = NULL;
    char *metrics = NULL;
    int status = spillway_config_new(&config);
    /* 2 worker threads, or SPILLWAY_THREADS (the benchmark sets it). */
    const char *threads = getenv("SPILLWAY_THREADS");
    if (status == SPILLWAY_STATUS_OK)
        status = spillway_config_set_threads(config, threads ? (size_t)strtoul(threads, NULL, 10) : 2);
    if (status == SPILLWAY_STATUS_OK) status = spillway_config_set_memory_budget(config, 64u << 20);
    if (status == SPILLWAY_STATUS_OK)
        status = spillway_job_new_u64(map, SPILLWAY_COMBINE_SUM, reduce, NULL, &job);
    if (status == SPILLWAY_STATUS_OK && collecting) {
        status = spillway_config_set_output_callback(config, collect, &collected);
    }
    if (status == SPILLWAY_STATUS_OK) {
        status = spillway_run(config, job, (const char *const *)(argv + 2), (size_t)(argc - 2),
                              collecting ? SPILLWAY_OUTPUT_CALLBACK : SPILLWAY_OUTPUT_FILE,
                              collecting ? NULL : argv[1], &metrics);
    }
    if (status == SPILLWAY_STATUS_OK && collecting) {
        FILE *out = fopen(argv[1], "wb");
        int written = out != NULL && fwrite(collected.bytes, 1, collected.len, out) == collected.len;
        if (out != NULL && fclose(out) != 0) written = 0;
        if (!written) {
            fprintf(stderr, "wordcount: cannot write %s\n", argv[1]);
            status = SPILLWAY_STATUS_IO;
        } else {
            fprintf(stderr, "wordcount: collected %zu keys\n", collected.keys);
        }
    }
    free(collected.bytes);
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
