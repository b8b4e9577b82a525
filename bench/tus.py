#!/usr/bin/env python3
"""One tus 1.0.0 upload of a file, timed, for bench/run.sh (standard library only).

What a plain tus client does: `POST <base><uploads path>` with `Upload-Length` and
`Upload-Metadata` (the file's name, application/octet-stream), then one `PATCH <Location>` per
chunk, each read from the file just before it is sent, all over one keep-alive connection (the
session cookie on each request; no `Origin` or `Sec-Fetch-Site`, as from any non-browser
client, so the cross-site check lets it through). The time runs from before the connection is
opened until the last PATCH's 204 is read: the file is made by that last PATCH, before its
answer. Then, untimed, `GET <Location>` must answer 200 `{"chatFile": ...}` with the file's
size.

Prints one line, `<status> <seconds> <connections>`: status 200 (the GET's) when everything
went as the protocol says, else the failing answer's status (or `error`); connections is how
many TCP connections were opened (1 unless the server closed one). Writes the GET's body, or
what went wrong, to OUT_JSON.

Usage: tus.py BASE_URL UPLOADS_PATH COOKIE FILE CHUNK_BYTES OUT_JSON
"""

import base64
import http.client
import json
import os
import sys
import time
import urllib.parse


class Counted(http.client.HTTPConnection):
    """An HTTP/1.1 connection that counts how often it had to (re)connect."""

    connects = 0

    def connect(self):
        Counted.connects += 1
        super().connect()  # sets TCP_NODELAY, as curl does


class Failed(Exception):
    def __init__(self, status, what):
        super().__init__(what)
        self.status = status


def b64(text):
    return base64.b64encode(text.encode()).decode()


def call(conn, method, path, headers, body=None, expect=204):
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != expect:
        raise Failed(resp.status, f"{method} {path} answered {resp.status}: {data[:300]!r}")
    return resp, data


def main():
    base, uploads, cookie, path, chunk, out = sys.argv[1:7]
    chunk = int(chunk)
    size = os.path.getsize(path)
    base_url = urllib.parse.urlsplit(base)
    auth = {"Cookie": cookie, "Tus-Resumable": "1.0.0"}
    metadata = f"filename {b64(os.path.basename(path))},filetype {b64('application/octet-stream')}"
    status, secs, body = "error", 0.0, b""
    try:
        with open(path, "rb") as f:
            t0 = time.perf_counter()
            conn = Counted(base_url.hostname, base_url.port, timeout=300)
            resp, _ = call(
                conn,
                "POST",
                uploads,
                {**auth, "Upload-Length": str(size), "Upload-Metadata": metadata},
                expect=201,
            )
            location = urllib.parse.urlsplit(resp.getheader("Location") or "")
            if not location.scheme or not location.netloc:
                raise Failed(resp.status, f"POST gave no absolute Location: {location.geturl()!r}")
            if (location.hostname, location.port) != (base_url.hostname, base_url.port):
                conn.close()  # elsewhere: a client follows it there
                conn = Counted(location.hostname, location.port, timeout=300)
            offset = int(resp.getheader("Upload-Offset", "-1"))
            if offset != 0:
                raise Failed(resp.status, f"POST answered Upload-Offset {offset}, not 0")
            while offset < size:
                data = f.read(chunk)
                if not data:
                    raise Failed("error", f"{path} ended at {offset} of {size} bytes")
                resp, _ = call(
                    conn,
                    "PATCH",
                    location.path,
                    {
                        **auth,
                        "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream",
                    },
                    data,
                )
                new = int(resp.getheader("Upload-Offset", "-1"))
                if new != offset + len(data):
                    raise Failed(resp.status, f"PATCH at {offset} answered Upload-Offset {new}")
                offset = new
            secs = time.perf_counter() - t0
            resp, body = call(conn, "GET", location.path, {"Cookie": cookie}, expect=200)
            conn.close()
        got = json.loads(body)["chatFile"]["size"]
        if got != size:
            raise Failed(resp.status, f"GET says the file holds {got} bytes, not {size}")
        status = resp.status
    except Failed as e:
        status, body = e.status, str(e).encode()
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
        body = f"{type(e).__name__}: {e}".encode()
    with open(out, "wb") as f:
        f.write(body)
    print(status, f"{secs:.3f}", Counted.connects)


if __name__ == "__main__":
    main()
