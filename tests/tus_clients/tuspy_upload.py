"""tuspy, the tus project's Python client, uploading a file to chatfiles as its documentation
shows, with the session cookie and its retry options (`retries`, `retry_delay`): when a request
fails, it asks the server for the offset (HEAD) and goes on from there.

Run by tests/api/tus_clients.rs, which puts a proxy between this script and the server that cuts
the connection once in the middle of a PATCH body.

Usage: tuspy_upload.py ENDPOINT COOKIE FILE FILENAME FILETYPE CHUNK_SIZE
Prints one JSON line, {"url": <the upload's URL>, "events": [...]}: every HTTP request tuspy
sent, in order, as {"method", "offset" (its Upload-Offset), "status" (null when it got no
answer), "resultOffset" (the answer's Upload-Offset), "error"}. Exits non-zero when the upload
fails.
"""
import json
import sys

import requests
from tusclient import client

events = []


def int_or_none(value):
    return None if value is None else int(value)


# tuspy sends each request with requests' module functions (a Session of their own); every one
# passes through Session.send, which is wrapped here to write down what was sent and what came
# back, leaving tuspy itself as it is.
_send = requests.Session.send


def logged_send(self, request, **kwargs):
    event = {
        "method": request.method,
        "offset": int_or_none(request.headers.get("Upload-Offset")),
        "status": None,
        "resultOffset": None,
        "error": None,
    }
    events.append(event)
    try:
        response = _send(self, request, **kwargs)
    except requests.exceptions.RequestException as error:
        event["error"] = "{}: {}".format(type(error).__name__, error)
        raise
    event["status"] = response.status_code
    event["resultOffset"] = int_or_none(response.headers.get("Upload-Offset"))
    return response


requests.Session.send = logged_send


def main():
    endpoint, cookie, path, filename, filetype, chunk_size = sys.argv[1:]
    tus = client.TusClient(endpoint, headers={"Cookie": cookie})
    uploader = tus.uploader(
        file_path=path,
        chunk_size=int(chunk_size),
        metadata={"filename": filename, "filetype": filetype},
        # A failed chunk is tried again, from the offset the server reports, at once.
        retries=3,
        retry_delay=0,
    )
    try:
        uploader.upload()
    except Exception as error:
        print(json.dumps({"url": uploader.url, "events": events}))
        print("tuspy failed: {}: {}".format(type(error).__name__, error), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"url": uploader.url, "events": events}))


if __name__ == "__main__":
    main()
