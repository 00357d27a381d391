"""Word count and record sort with DuckDB, the benchmarks' SQL peer.

    python duckdb_peer.py wordcount OUT INPUT...   word<TAB>count lines, words = [A-Za-z]+
    python duckdb_peer.py sort OUT INPUT...        100-byte gensort -a records ("\\r\\n" lines)

Threads: DUCKDB_THREADS (the bench sets 2); temporary files in DUCKDB_TEMP (default: /tmp).
Inputs are read as lines (one VARCHAR column; separator 0x1f, no quoting or escaping).
"""
import os
import sys

import duckdb


def main():
    job, out, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    con = duckdb.connect()
    con.execute(f"SET threads = {int(os.environ.get('DUCKDB_THREADS', '2'))}")
    con.execute("SET temp_directory = ?", [os.environ.get("DUCKDB_TEMP", "/tmp")])
    con.execute("SET preserve_insertion_order = false")
    newline = "\\r\\n" if job == "sort" else "\\n"
    src = (
        "read_csv(?, columns = {'line': 'VARCHAR'}, delim = '\x1f', quote = '', escape = '', "
        f"header = false, auto_detect = false, new_line = '{newline}')"
    )
    if job == "wordcount":
        con.execute(
            f"""COPY (SELECT word, count(*) FROM
                  (SELECT unnest(regexp_extract_all(line, '[A-Za-z]+')) AS word FROM {src})
                GROUP BY word)
              TO '{out}' (FORMAT csv, DELIMITER '\t', HEADER false, QUOTE '')""",
            [inputs],
        )
    elif job == "sort":
        con.execute("SET preserve_insertion_order = true")
        con.execute(
            f"""COPY (SELECT line FROM {src} ORDER BY line)
              TO '{out}' (FORMAT csv, DELIMITER '\x1f', HEADER false, QUOTE '', NEW_LINE '\r\n')""",
            [inputs],
        )
    else:
        sys.exit(f"unknown job {job!r}")


if __name__ == "__main__":
    main()
