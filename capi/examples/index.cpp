// Inverted index through Spillway's C ABI, in C++: for every word (maximal run of ASCII
// letters), the documents that contain it, "word<TAB>N<TAB>doc1,doc2,...", documents named as
// given and listed in byte order, as `spillway index` writes it.
//
//   index OUTPUT_FILE FILE...
//
// Values are document numbers (4 bytes, native order); the combiner keeps them as a sorted
// set (a value is then several numbers).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "spillway.h"

namespace {

struct Documents {
    std::vector<std::string> names;
};

bool is_letter(uint8_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

std::vector<uint32_t> decode(const uint8_t *bytes, size_t len) {
    std::vector<uint32_t> docs(len / sizeof(uint32_t));
    if (!docs.empty()) std::memcpy(docs.data(), bytes, docs.size() * sizeof(uint32_t));
    return docs;
}

int map(void *, const uint8_t *text, size_t len, spillway_emitter *emitter) {
    uint32_t doc;
    uint64_t offset;
    if (spillway_emitter_input(emitter, &doc, &offset) != SPILLWAY_STATUS_OK) return 1;
    for (size_t i = 0; i < len;) {
        while (i < len && !is_letter(text[i])) i++;
        size_t start = i;
        while (i < len && is_letter(text[i])) i++;
        if (i > start && spillway_emit(emitter, text + start, i - start,
                                       reinterpret_cast<const uint8_t *>(&doc),
                                       sizeof doc) != SPILLWAY_STATUS_OK) {
            return 1;
        }
    }
    return 0;
}

int write_docs(spillway_writer *out, const std::vector<uint32_t> &docs) {
    return spillway_write(out, reinterpret_cast<const uint8_t *>(docs.data()),
                          docs.size() * sizeof(uint32_t)) != SPILLWAY_STATUS_OK;
}

int combine(void *, const uint8_t *acc, size_t acc_len, const uint8_t *value, size_t value_len,
            spillway_writer *out) {
    std::vector<uint32_t> a = decode(acc, acc_len), b = decode(value, value_len), merged;
    std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(merged));
    return write_docs(out, merged);
}

int reduce(void *user, const uint8_t *key, size_t key_len, spillway_values *values,
           spillway_writer *out) {
    const Documents &documents = *static_cast<const Documents *>(user);
    std::vector<uint32_t> docs;
    const uint8_t *value;
    size_t len;
    while (spillway_values_next(values, &value, &len) == SPILLWAY_STATUS_OK) {
        for (uint32_t d : decode(value, len)) docs.push_back(d);
    }
    std::vector<std::string> names;
    for (uint32_t d : docs) names.push_back(documents.names.at(d));
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::string line(reinterpret_cast<const char *>(key), key_len);
    line += "\t" + std::to_string(names.size()) + "\t";
    for (size_t i = 0; i < names.size(); i++) line += (i ? "," : "") + names[i];
    line += "\n";
    return spillway_write(out, reinterpret_cast<const uint8_t *>(line.data()), line.size()) !=
           SPILLWAY_STATUS_OK;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s OUTPUT_FILE FILE...\n", argv[0]);
        return 2;
    }
    Documents documents;
    for (int i = 2; i < argc; i++) documents.names.push_back(argv[i]);
    spillway_config *config = nullptr;
    spillway_job *job = nullptr;
    spillway_status status = spillway_config_new(&config);
    if (status == SPILLWAY_STATUS_OK) status = spillway_config_set_threads(config, 2);
    if (status == SPILLWAY_STATUS_OK) status = spillway_job_new(map, combine, reduce, &documents, &job);
    if (status == SPILLWAY_STATUS_OK) {
        status = spillway_run(config, job, argv + 2, static_cast<size_t>(argc - 2),
                              SPILLWAY_OUTPUT_FILE, argv[1], nullptr);
    }
    if (status != SPILLWAY_STATUS_OK) {
        std::fprintf(stderr, "index: error %d: %s\n", status, spillway_last_error());
    }
    spillway_job_free(job);
    spillway_config_free(config);
    return status == SPILLWAY_STATUS_OK ? 0 : 1;
}
