#!/usr/bin/env python3
"""The Python peer of issue 13: a users/import request applied the plain way, with the
standard library only: json.load the whole file, then one sqlite transaction of upserts
keyed by email (the user's JSON as the value), committed with sqlite's default fsync.

usage: peer.py REQUEST DB
"""
import json
import sqlite3
import sys


def main():
    request, db = sys.argv[1], sys.argv[2]
    with open(request, "rb") as f:
        users = json.load(f)["users"]
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS users (email TEXT PRIMARY KEY, data TEXT NOT NULL)")
    with conn:
        conn.executemany(
            "INSERT INTO users (email, data) VALUES (?, ?) "
            "ON CONFLICT(email) DO UPDATE SET data = excluded.data",
            ((u["email"].strip().lower(), json.dumps(u, separators=(",", ":"))) for u in users),
        )
    conn.close()


if __name__ == "__main__":
    main()
