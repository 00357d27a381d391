// Record sort with MR-MPI (libmrmpi-dev), the peer of `spillway sort` in the benchmarks:
// gensort ASCII records (100 bytes, each a line ending in "\r\n") in byte order.
//
//   mpirun -n P mrmpi_sort OUTDIR SPILLDIR MEMSIZE_MB INPUT...
//
// Map: the inputs are cut into chunks at newlines; every record becomes a key (its 100 bytes)
// with no value. aggregate() sends each record to the rank owning its first byte's range (keys
// are printable ASCII, ' ' to '~', uniform in gensort -a), sort_keys() sorts each rank's
// records with memcmp, and scan() writes them to OUTDIR/part-RANK: the part files in rank
// order are the sorted input.
#include <mpi.h>
#include <mrmpi/mapreduce.h>
#include <mrmpi/keyvalue.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace MAPREDUCE_NS;

static const int RECORD = 100;
static int nprocs = 1;

static void map_chunk(int, char *text, int size, KeyValue *kv, void *) {
    while (size > 0 && text[size - 1] == 0) size--;  // MR-MPI counts the NUL it appends
    if (size % RECORD != 0) {
        std::fprintf(stderr, "mrmpi_sort: chunk of %d bytes is not whole records\n", size);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    for (int i = 0; i < size; i += RECORD) kv->add(text + i, RECORD, nullptr, 0);
}

static int owner(char *key, int) {
    int c = (unsigned char)key[0];
    c = c < ' ' ? 0 : (c > '~' ? 94 : c - ' ');
    return c * nprocs / 95;
}

static int compare(char *a, int alen, char *b, int blen) {
    int n = std::memcmp(a, b, alen < blen ? alen : blen);
    return n != 0 ? n : alen - blen;
}

static void write_record(char *key, int keybytes, char *, int, void *out) {
    std::fwrite(key, 1, keybytes, (FILE *)out);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc < 5) {
        std::fprintf(stderr, "usage: mrmpi_sort OUTDIR SPILLDIR MEMSIZE_MB INPUT...\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int me;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &nprocs);
    MapReduce *mr = new MapReduce(MPI_COMM_WORLD);
    mr->verbosity = 0;
    mr->timer = 0;
    mr->memsize = std::atoi(argv[3]);
    mr->set_fpath(argv[2]);
    long long bytes = 0;
    for (int f = 4; f < argc; f++) {
        FILE *fp = std::fopen(argv[f], "rb");
        if (!fp) { std::perror(argv[f]); MPI_Abort(MPI_COMM_WORLD, 3); }
        std::fseek(fp, 0, SEEK_END);
        bytes += std::ftell(fp);
        std::fclose(fp);
    }
    int nmap = (int)std::max<long long>(4LL * nprocs, bytes / (32LL << 20) + 1);
    // Records end in "\r\n": cut chunks after a '\n'.
    mr->map(nmap, argc - 4, &argv[4], 0, 0, '\n', 256, map_chunk, nullptr);
    mr->aggregate(owner);
    mr->sort_keys(compare);
    char name[32];
    std::snprintf(name, sizeof name, "/part-%05d", me);
    std::string path = std::string(argv[1]) + name;
    FILE *out = std::fopen(path.c_str(), "wb");
    if (!out) { std::perror(path.c_str()); MPI_Abort(MPI_COMM_WORLD, 3); }
    std::vector<char> buf(8 << 20);
    std::setvbuf(out, buf.data(), _IOFBF, buf.size());
    mr->scan(write_record, out);
    if (std::fclose(out) != 0) { std::perror(path.c_str()); MPI_Abort(MPI_COMM_WORLD, 1); }
    delete mr;
    MPI_Finalize();
    return 0;
}
