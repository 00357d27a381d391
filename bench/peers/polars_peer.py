"""Word count and record sort with Polars, the benchmarks' dataframe peer.

    python polars_peer.py wordcount OUT INPUT...   word<TAB>count lines, words = [A-Za-z]+
    python polars_peer.py sort OUT INPUT...        100-byte gensort -a records ("\\r\\n" lines)

Threads: POLARS_MAX_THREADS (the bench sets 2). Inputs are read as lines (one string column;
the separator 0x1f and no quoting, so every byte of a line is kept).
"""
import sys

import polars as pl


def lines(paths):
    return pl.scan_csv(
        paths,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        schema={"line": pl.String},
        eol_char="\n",
    )


def main():
    job, out, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    if job == "wordcount":
        (
            lines(inputs)
            .select(pl.col("line").str.extract_all(r"[A-Za-z]+").alias("word"))
            .explode("word")
            .drop_nulls()
            .group_by("word")
            .agg(pl.len().alias("count"))
            .sink_csv(out, separator="\t", include_header=False, quote_style="never")
        )
    elif job == "sort":
        # The reader drops each line's "\r\n"; byte order of the lines is the order of the
        # records (all have the same length). Written back with "\r\n" after each line.
        (
            lines(inputs)
            .sort("line")
            .sink_csv(out, include_header=False, quote_style="never", line_terminator="\r\n")
        )
    else:
        sys.exit(f"unknown job {job!r}")


if __name__ == "__main__":
    main()
