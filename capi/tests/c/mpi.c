/*
 * An MPI program embedding Spillway through the C ABI (feature `mpi`): it initializes MPI
 * itself, runs a word count on MPI_COMM_WORLD, then one on each half of a split world at the
 * same time, and goes on using MPI afterwards (an MPI_Allreduce checking that every rank read
 * the same totals from the world's output). tests/mpi.rs runs it under mpirun with 1-4 ranks.
 *
 *   mpi OUT_DIR INPUT...      writes OUT_DIR/world.tsv, OUT_DIR/half-0.tsv (and half-1.tsv)
 *   mpi --funneled            checks that a thread level below MPI_THREAD_MULTIPLE is refused
 */
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spillway.h"

static uint8_t letter[256];

static int map(void *user, const uint8_t *text, size_t len, spillway_emitter *emitter) {
    (void)user;
    size_t i = 0;
    while (i < len) {
        while (i < len && !letter[text[i]]) i++;
        size_t start = i;
        while (i < len && letter[text[i]]) i++;
        if (i > start && spillway_emit_u64(emitter, text + start, i - start, 1) != SPILLWAY_STATUS_OK)
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
    return spillway_write(out, key, key_len) != SPILLWAY_STATUS_OK ||
           spillway_write(out, (const uint8_t *)line, (size_t)digits) != SPILLWAY_STATUS_OK;
}

static int world_rank(void) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

/* Ends the whole job: a failed job on one rank would leave the others waiting. */
static void fail(const char *what, int status) {
    fprintf(stderr, "mpi: rank %d: %s failed (%d): %s\n", world_rank(), what, status,
            spillway_last_error() ? spillway_last_error() : "(no message)");
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* The word count of `inputs` on the ranks of `comm`, into the file `out` (rank 0 of `comm`
 * writes it). */
static void word_count(MPI_Comm comm, const char *out, char **inputs, int n) {
    spillway_config *config = NULL;
    spillway_job *job = NULL;
    int status;
    if ((status = spillway_config_new(&config)) != SPILLWAY_STATUS_OK) fail("config_new", status);
    if ((status = spillway_config_set_threads(config, 2)) != SPILLWAY_STATUS_OK) fail("set_threads", status);
    if ((status = spillway_config_set_memory_budget(config, 64u << 20)) != SPILLWAY_STATUS_OK)
        fail("set_memory_budget", status);
    if ((status = spillway_config_set_comm(config, comm)) != SPILLWAY_STATUS_OK) fail("set_comm", status);
    if ((status = spillway_job_new_u64(map, SPILLWAY_COMBINE_SUM, reduce, NULL, &job)) != SPILLWAY_STATUS_OK)
        fail("job_new_u64", status);
    status = spillway_run(config, job, (const char *const *)inputs, (size_t)n, SPILLWAY_OUTPUT_FILE, out, NULL);
    if (status != SPILLWAY_STATUS_OK) fail(out, status);
    spillway_job_free(job);
    spillway_config_free(config); /* frees the config's duplicate of comm */
}

/* The sum of the counts in the word count file `path`, and its lines. */
static void totals(const char *path, long long *words, long long *lines) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "mpi: rank %d: cannot open %s\n", world_rank(), path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    char line[4096];
    *words = *lines = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        char *tab = strchr(line, '\t');
        if (tab != NULL) *words += atoll(tab + 1);
        *lines += 1;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    for (int c = 'A'; c <= 'Z'; c++) letter[c] = letter[c + 'a' - 'A'] = 1;
    int provided;
    if (argc == 2 && strcmp(argv[1], "--funneled") == 0) {
        MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
        spillway_config *config = NULL;
        spillway_config_new(&config);
        int status = spillway_config_set_comm(config, MPI_COMM_WORLD);
        printf("funneled: status %d: %s\n", status, spillway_last_error() ? spillway_last_error() : "");
        status = spillway_config_set_comm(config, MPI_COMM_NULL);
        printf("null comm: status %d: %s\n", status, spillway_last_error() ? spillway_last_error() : "");
        spillway_config_free(config);
        MPI_Finalize();
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: mpi OUT_DIR INPUT... | mpi --funneled\n");
        return 2;
    }
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    if (provided < MPI_THREAD_MULTIPLE) {
        fprintf(stderr, "mpi: this MPI provides no MPI_THREAD_MULTIPLE\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    char world_out[4096], half_out[4096];
    snprintf(world_out, sizeof world_out, "%s/world.tsv", argv[1]);

    word_count(MPI_COMM_WORLD, world_out, argv + 2, argc - 2);

    /* Two halves, each running its own job at the same time as the other. */
    int color = rank * 2 / size;
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank, &half);
    snprintf(half_out, sizeof half_out, "%s/half-%d.tsv", argv[1], color);
    word_count(half, half_out, argv + 2, argc - 2);
    MPI_Comm_free(&half);

    /* MPI is still this program's: every rank reads the world's output (committed by rank 0
     * before its job returned; the barrier orders the reads after it) and the ranks agree on
     * its totals. */
    MPI_Barrier(MPI_COMM_WORLD);
    long long mine[2], least[2], most[2];
    totals(world_out, &mine[0], &mine[1]);
    MPI_Allreduce(mine, least, 2, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(mine, most, 2, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    int ranks = 0, one = 1;
    MPI_Allreduce(&one, &ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (least[0] != most[0] || least[1] != most[1] || ranks != size || mine[0] == 0) {
        fprintf(stderr, "mpi: rank %d: the ranks disagree: %lld-%lld words, %lld-%lld keys\n", rank,
                least[0], most[0], least[1], most[1]);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0) printf("%d ranks agree: %lld words, %lld keys\n", ranks, mine[0], mine[1]);
    MPI_Finalize();
    return 0;
}
