#!/usr/bin/env python3
"""Seeds a running chatfiles through its HTTP API for bench/run.sh (standard library only).

Creates one user, chats with 10, 100 and 1,000 small files, and a chat holding the 4 KiB,
1 MiB and 100 MiB blobs that run.sh generated. Writes, into the work directory:

- `seed.env`: shell assignments (session cookie, list paths, the blobs chat's path,
  chatfiles' signed URLs, the blobs' object keys and nginx secure_link URLs for the same
  objects);
- `list-100.json`: the exact bytes of the 100-file listing, for the framework ceiling.

Usage: seed.py BASE_URL WORK_DIR NGINX_BASE_URL  (env BENCH_NGINX_SECRET: secure_link secret)
"""

import base64
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

SMALL_FILE_BYTES = 1024
PARTS_PER_REQUEST = 100  # the service's limit on parts per upload
NGINX_URL_TTL = 4 * 3600


class Client:
    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname, url.port
        self.cookie = None

    def request(self, method, path, body=None, headers=None, expect=(200,)):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = f"neptun-session={self.cookie}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith("neptun-session="):
                self.cookie = value.split(";", 1)[0].split("=", 1)[1]
        conn.close()
        if resp.status not in expect:
            sys.exit(f"seed: {method} {path} answered {resp.status}: {data[:300]!r}")
        return data

    def json(self, method, path, payload=None, expect=(200,)):
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return json.loads(self.request(method, path, body, headers, expect))


def multipart(files):
    """files: (name, mime, bytes or path). Returns (content type, length, iterable body)."""
    boundary = "chatfiles-bench-" + os.urandom(12).hex()
    pieces = []  # bytes, or ("path", size)
    for name, mime, content in files:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        ).encode()
        pieces.append(head)
        if isinstance(content, bytes):
            pieces.append(content)
        else:
            pieces.append(("path", content, os.path.getsize(content)))
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    length = sum(p[2] if isinstance(p, tuple) else len(p) for p in pieces)

    def body():
        for p in pieces:
            if isinstance(p, tuple):
                with open(p[1], "rb") as f:
                    while chunk := f.read(1 << 20):
                        yield chunk
            else:
                yield p

    return f"multipart/form-data; boundary={boundary}", length, body()


def upload(client, files_path, files):
    ctype, length, body = multipart(files)
    headers = {"Content-Type": ctype, "Content-Length": str(length)}
    return json.loads(client.request("POST", files_path, body, headers, expect=(201,)))


def nginx_url(base, key, secret, expires):
    uri = f"/files/{key}"
    digest = hashlib.md5(f"{expires}{uri} {secret}".encode()).digest()
    md5 = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return f"{base}{uri}?md5={md5}&expires={expires}"


def main():
    base, work, nginx_base = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3].rstrip("/")
    nginx_secret = os.environ["BENCH_NGINX_SECRET"]
    client = Client(base)
    password = "bench password " + os.urandom(6).hex()
    user = client.json(
        "POST",
        "/api/auth/sign-up",
        {"email": "bench@example.com", "password": password, "confirmPassword": password},
        expect=(201,),
    )["user"]
    if not client.cookie:
        sys.exit("seed: sign-up set no neptun-session cookie")
    uid = user["id"]
    out = {"BENCH_COOKIE": f"neptun-session={client.cookie}", "BENCH_USER_ID": uid}

    def new_chat(name):
        return client.json("POST", f"/api/users/{uid}/chats", {"name": name}, expect=(201,))[
            "chat"
        ]["id"]

    for count in (10, 100, 1000):
        chat = new_chat(f"{count} files")
        path = f"/api/users/{uid}/chats/{chat}/files"
        for start in range(0, count, PARTS_PER_REQUEST):
            batch = [
                (f"note-{i:04d}.txt", "text/plain", os.urandom(SMALL_FILE_BYTES))
                for i in range(start, min(count, start + PARTS_PER_REQUEST))
            ]
            upload(client, path, batch)
        listing = client.request("GET", path)
        got = len(json.loads(listing)["chatFiles"])
        if got != count:
            sys.exit(f"seed: chat with {count} files lists {got}")
        out[f"BENCH_LIST_{count}"] = path
        if count == 100:
            with open(os.path.join(work, "list-100.json"), "wb") as f:
                f.write(listing)

    blobs_chat = new_chat("blobs")
    blobs_path = f"/api/users/{uid}/chats/{blobs_chat}/files"
    for label in ("4k", "1m", "100m"):
        blob = os.path.join(work, f"blob-{label}.bin")
        upload(client, blobs_path, [(f"blob-{label}.bin", "application/octet-stream", blob)])
    out["BENCH_BLOBS_PATH"] = blobs_path
    files = json.loads(client.request("GET", blobs_path))["chatFiles"]
    expires = int(time.time()) + NGINX_URL_TTL
    for label, f in zip(("4k", "1m", "100m"), files):
        if f["name"] != f"blob-{label}.bin":
            sys.exit(f"seed: unexpected listing order: {f['name']}")
        key = urllib.parse.urlsplit(f["url"]).path.rsplit("/", 1)[1]
        out[f"BENCH_KEY_{label.upper()}"] = key
        out[f"BENCH_CF_URL_{label.upper()}"] = f["url"]
        out[f"BENCH_NGX_URL_{label.upper()}"] = nginx_url(nginx_base, key, nginx_secret, expires)
    out["BENCH_NGX_URL_EXPIRED"] = nginx_url(
        nginx_base, out["BENCH_KEY_4K"], nginx_secret, int(time.time()) - 60
    )
    out["BENCH_UPLOAD_PATH"] = f"/api/users/{uid}/chats/{new_chat('uploads')}/files"

    with open(os.path.join(work, "seed.env"), "w") as f:
        for name, value in out.items():
            value = str(value)
            if "'" in value:
                sys.exit(f"seed: unexpected quote in {name}")
            f.write(f"{name}='{value}'\n")


if __name__ == "__main__":
    main()
