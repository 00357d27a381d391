/*
 * Failures through the C ABI: `fail MODE OUTPUT INPUT` where MODE is `map`, `combine` or
 * `reduce` (that callback fails, with a message), `huge` (map emits a key of length SIZE_MAX - 7),
 * `kind` (map of a job with 64-bit values calls spillway_emit, for byte values),
 * `output` (the output callback fails, with a
 * message), or `misuse` (NULL handles and bad
 * arguments, each must give an error code and a message). Prints "status=N message=M" for
 * the run and exits 0 when everything answered as an error should.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "spillway.h"

static const char *mode;

static int map(void *user, const uint8_t *text, size_t len, spillway_emitter *emitter) {
    (void)user;
    if (strcmp(mode, "map") == 0) {
        spillway_fail("map refuses this split");
        return 7;
    }
    if (strcmp(mode, "huge") == 0) {
        /* A length no buffer has (a negative length cast to size_t): made into a slice it
         * would abort the process; it must come back as an error code and a message. */
        const uint8_t one = 1;
        spillway_status status = spillway_emit(emitter, text, (size_t)-8, &one, 1);
        if (status != SPILLWAY_STATUS_INVALID_ARGUMENT) return 99;
        spillway_fail(spillway_last_error());
        return 1;
    }
    if (strcmp(mode, "kind") == 0) {
        const uint8_t one = 1;
        spillway_status status = spillway_emit(emitter, text, 1, &one, 1);
        if (status != SPILLWAY_STATUS_INVALID_ARGUMENT) return 99;
        spillway_fail(spillway_last_error());
        return 1;
    }
    const uint8_t one = 1;
    for (size_t i = 0; i < len; i++) {
        if (spillway_emit(emitter, text + i, 1, &one, 1) != SPILLWAY_STATUS_OK) return 1;
    }
    return 0;
}

static int combine(void *user, const uint8_t *acc, size_t acc_len, const uint8_t *value,
                   size_t value_len, spillway_writer *out) {
    (void)user;
    (void)value;
    (void)value_len;
    if (strcmp(mode, "combine") == 0) {
        spillway_fail("combine cannot add these");
        return 1;
    }
    return spillway_write(out, acc, acc_len) != SPILLWAY_STATUS_OK;
}

static int reduce(void *user, const uint8_t *key, size_t key_len, spillway_values *values,
                  spillway_writer *out) {
    (void)user;
    (void)values;
    if (strcmp(mode, "reduce") == 0) return 42; /* no message: the code is reported */
    return spillway_write(out, key, key_len) != SPILLWAY_STATUS_OK;
}

static int output(void *user, const uint8_t *key, size_t key_len, const uint8_t *data, size_t len) {
    (void)user;
    (void)data;
    (void)len;
    if (key_len == 1 && key[0] == 'l') {
        spillway_fail("the output callback has no room for l");
        return 1;
    }
    return 0;
}

static int expect(const char *what, spillway_status got, spillway_status want) {
    const char *msg = spillway_last_error();
    printf("%s: status=%d message=%s\n", what, got, msg ? msg : "(none)");
    if (got != want || msg == NULL || msg[0] == '\0') {
        printf("%s: expected status %d with a message\n", what, want);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    mode = argv[1];
    const char *inputs[] = {argv[3]};
    spillway_config *config = NULL;
    spillway_job *job = NULL;
    if (spillway_config_new(&config) != SPILLWAY_STATUS_OK) return 3;
    if (spillway_config_set_threads(config, 2) != SPILLWAY_STATUS_OK) return 3;
    if (spillway_config_set_max_attempts(config, 2) != SPILLWAY_STATUS_OK) return 3;
    spillway_status made = strcmp(mode, "kind") == 0
                               ? spillway_job_new_u64(map, SPILLWAY_COMBINE_SUM, reduce, NULL, &job)
                               : spillway_job_new(map, combine, reduce, NULL, &job);
    if (made != SPILLWAY_STATUS_OK) return 3;
    int bad = 0;
    if (strcmp(mode, "misuse") == 0) {
        spillway_job *none = NULL;
        bad |= expect("config_new(NULL)", spillway_config_new(NULL), SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("set_threads(NULL)", spillway_config_set_threads(NULL, 1),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("set_threads(0)", spillway_config_set_threads(config, 0),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("job_new(no map)", spillway_job_new(NULL, NULL, reduce, NULL, &none),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("job_new_u64(no map)",
                      spillway_job_new_u64(NULL, SPILLWAY_COMBINE_SUM, reduce, NULL, &none),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("job_new_u64(combine 9)", spillway_job_new_u64(map, 9, reduce, NULL, &none),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("set_split(records, 0)", spillway_job_set_split(job, SPILLWAY_SPLIT_RECORDS, 0),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("run(NULL job)",
                      spillway_run(config, NULL, inputs, 1, SPILLWAY_OUTPUT_FILE, argv[2], NULL),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("run(NULL inputs)",
                      spillway_run(config, job, NULL, 1, SPILLWAY_OUTPUT_FILE, argv[2], NULL),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        const char *missing[] = {"/nonexistent/spillway-input"};
        bad |= expect("run(missing input)",
                      spillway_run(config, job, missing, 1, SPILLWAY_OUTPUT_FILE, argv[2], NULL),
                      SPILLWAY_STATUS_INPUT);
        if (spillway_config_set_memory_budget(config, 1) != SPILLWAY_STATUS_OK) bad = 1;
        bad |= expect("run(1-byte budget)",
                      spillway_run(config, job, inputs, 1, SPILLWAY_OUTPUT_FILE, argv[2], NULL),
                      SPILLWAY_STATUS_CONFIG);
        bad |= expect("run(kind 7)", spillway_run(config, job, inputs, 1, 7, argv[2], NULL),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("run(kind -1)", spillway_run(config, job, inputs, 1, -1, argv[2], NULL),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("set_split(9)", spillway_job_set_split(job, 9, 0),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("run(callback unset)",
                      spillway_run(config, job, inputs, 1, SPILLWAY_OUTPUT_CALLBACK, NULL, NULL),
                      SPILLWAY_STATUS_INVALID_ARGUMENT);
        bad |= expect("set_output_callback(NULL)",
                      spillway_config_set_output_callback(NULL, output, NULL),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        const uint8_t *value = NULL;
        size_t value_len = 0;
        bad |= expect("emit(NULL emitter)", spillway_emit(NULL, (const uint8_t *)"k", 1, NULL, 0),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("emit_u64(NULL emitter)", spillway_emit_u64(NULL, (const uint8_t *)"k", 1, 1),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        uint64_t number = 0;
        bad |= expect("values_next_u64(NULL)", spillway_values_next_u64(NULL, &number),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("values_next(NULL)", spillway_values_next(NULL, &value, &value_len),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("write(NULL)", spillway_write(NULL, (const uint8_t *)"x", 1),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        bad |= expect("emitter_input(NULL)", spillway_emitter_input(NULL, NULL, NULL),
                      SPILLWAY_STATUS_NULL_ARGUMENT);
        spillway_config_free(NULL);
        spillway_job_free(NULL);
        spillway_string_free(NULL);
    } else if (strcmp(mode, "output") == 0) {
        if (spillway_config_set_output_callback(config, output, NULL) != SPILLWAY_STATUS_OK) return 3;
        spillway_status status =
            spillway_run(config, job, inputs, 1, SPILLWAY_OUTPUT_CALLBACK, NULL, NULL);
        bad |= expect("run", status, SPILLWAY_STATUS_OUTPUT);
    } else {
        spillway_status status =
            spillway_run(config, job, inputs, 1, SPILLWAY_OUTPUT_FILE, argv[2], NULL);
        bad |= expect("run", status, SPILLWAY_STATUS_JOB);
    }
    spillway_job_free(job);
    spillway_config_free(config);
    return bad;
}
