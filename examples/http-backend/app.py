#!/usr/bin/env python3
"""The AWS tutorial's WebSocket chat as an HTTP backend for switchboard, standard library only.

switchboard POSTs API Gateway's proxy event to one path per route (examples/http-backend.toml)
and reads a Lambda-proxy result back. The handlers push to clients through the @connections API
at http://{requestContext.domainName}/{requestContext.stage}, the endpoint the AWS samples build
from the event.

    python3 examples/http-backend/app.py            # listens on 127.0.0.1:9000
    switchboard serve --config examples/http-backend.toml
"""
import argparse
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The connection table (DynamoDB in the tutorial).
connections = set()
lock = threading.Lock()


def endpoint(event):
    rc = event["requestContext"]
    return "http://" + rc["domainName"] + "/" + rc["stage"]


def connection_url(event, connection_id):
    return endpoint(event) + "/@connections/" + urllib.parse.quote(connection_id, safe="")


def post(event, connection_id, text):
    """PostToConnection; False when the connection is gone (410)."""
    request = urllib.request.Request(connection_url(event, connection_id), data=text.encode(), method="POST")
    try:
        urllib.request.urlopen(request).close()
        return True
    except urllib.error.HTTPError as e:
        if e.code == 410:
            return False
        raise


def get_connection(event, connection_id):
    with urllib.request.urlopen(connection_url(event, connection_id)) as r:
        return json.load(r)


def on_connect(event):
    with lock:
        connections.add(event["requestContext"]["connectionId"])
    return {"statusCode": 200, "body": "Connected."}


def on_disconnect(event):
    with lock:
        connections.discard(event["requestContext"]["connectionId"])
    return {"statusCode": 200, "body": "Disconnected."}


def send_message(event):
    sender = event["requestContext"]["connectionId"]
    message = json.loads(event["body"]).get("message", "")
    with lock:
        targets = [c for c in connections if c != sender]
    for target in targets:
        if not post(event, target, message):
            # The client left without $disconnect running: forget it.
            with lock:
                connections.discard(target)
    return {"statusCode": 200, "body": "Data sent."}


def default(event):
    connection_id = event["requestContext"]["connectionId"]
    info = get_connection(event, connection_id)
    reply = {
        "ConnectedAt": info["connectedAt"],
        "Identity": {"SourceIp": info["identity"]["sourceIp"], "UserAgent": info["identity"].get("userAgent")},
        "LastActiveAt": info["lastActiveAt"],
        "connectionID": connection_id,
    }
    post(event, connection_id, "Use the sendmessage route to send a message. Your info: " + json.dumps(reply, separators=(",", ":")))
    return {"statusCode": 200, "body": "Data sent."}


ROUTES = {"/connect": on_connect, "/disconnect": on_disconnect, "/sendmessage": send_message, "/default": default}


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, so that switchboard reuses its connections to the backend.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        route = ROUTES.get(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        event = json.loads(self.rfile.read(length) or b"{}")
        if route is None:
            self.answer(404, {"message": "no route " + self.path})
            return
        try:
            self.answer(200, route(event))
        except Exception as e:  # reported to switchboard as a failed integration
            print("handler error:", repr(e), file=sys.stderr, flush=True)
            self.answer(500, {"message": "handler error"})

    def answer(self, status, result):
        body = json.dumps(result).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
