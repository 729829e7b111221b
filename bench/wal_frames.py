#!/usr/bin/env python3
"""Which B-trees each SQLite commit writes to the WAL, from a trace of the process's writes.

SQLite writes each WAL frame as a 24-byte header (page number, and on a commit's last frame the database size)
followed by the page. Tracing the headers gives the pages of every commit; the database, opened afterwards, tells
which table or index each page belongs to (through SQLite's `dbstat` table, which the SQLite
that Debian's Python uses is built with).

    cargo build --release -p switchyard-bench --example group_commits
    mkdir -p /tmp/gc && TMPDIR=/tmp/gc strace -f -e trace=pwrite64 -s 24 -xx -o /tmp/wal.trace \\
        target/release/examples/group_commits 1 300 100000 0 20 &
    sleep 12; pkill -9 -f 'group_commits 1 300 100000'   # killed, so its temporary database stays
    python3 bench/wal_frames.py /tmp/wal.trace /tmp/gc/.tmp*/bench.db

Prints the frames per commit, and per B-tree the pages it wrote per commit, over the last `--commits` commits.
"""
import argparse
import collections
import re
import sqlite3

HEADER = re.compile(r'pwrite64\(\d+, "((?:\\x[0-9a-f]{2})+)"\.*, 24, \d+\)')


def commits(trace_path):
    """The page numbers of each committed transaction, in order."""
    pages = []
    for line in open(trace_path):
        match = HEADER.search(line)
        if not match:
            continue
        header = bytes(int(h, 16) for h in match.group(1).split("\\x")[1:])
        pages.append(int.from_bytes(header[0:4], "big"))
        if int.from_bytes(header[4:8], "big"):  # the database size: set on a commit's last frame only
            yield pages
            pages = []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("database")
    parser.add_argument("--commits", type=int, default=200, help="how many of the last commits to count")
    args = parser.parse_args()
    last = list(commits(args.trace))[-args.commits:]
    if not last:
        raise SystemExit("no WAL commit in the trace: was it taken with -s 24 -xx?")
    owner = dict(sqlite3.connect(args.database).execute("SELECT pageno, name FROM dbstat"))
    per_btree = collections.Counter(owner.get(page, "(page not in the database now)") for c in last for page in c)
    frames = sum(len(c) for c in last)
    print(f"{len(last)} commits, {frames / len(last):.1f} frames per commit")
    for name, count in per_btree.most_common():
        print(f"{count / len(last):6.2f}  {name}")


if __name__ == "__main__":
    main()
