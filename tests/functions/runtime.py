#!/usr/bin/env python3
"""A custom-runtime Lambda function for the tests, speaking the Runtime API with urllib only.

It is started by switchboard like any `bootstrap`. What it does depends on the event:
- authorizer events (`"type": "REQUEST"`): the `Authorization` header decides
  (`allow`, `deny`, `unauthorized`, `error`, `garbage`);
- CONNECT: 200, or the status in the `status` query parameter;
- DISCONNECT: writes `disconnect-<connectionId>` (with the event) into $MARKER_DIR;
- MESSAGE: the body's `action` (see `message` below).
With FAIL_INIT set, it reports an init error and exits, as a runtime that cannot start.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"


def call(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers, r.read()


class FunctionError(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def authorize(event):
    verdict = (event.get("headers") or {}).get("Authorization", "")
    if verdict == "unauthorized":
        raise FunctionError("Error", "Unauthorized")
    if verdict == "error":
        raise FunctionError("Error", "the authorizer broke")
    if verdict == "garbage":
        return "not a policy"
    effect = "Allow" if verdict == "allow" else "Deny"
    return {
        "principalId": "lambda-user",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}
            ],
        },
        "context": {"source": "lambda", "level": 7, "event": json.dumps(event)},
    }


def post_to(endpoint, connection_id, data):
    url = endpoint + "/@connections/" + urllib.request.quote(connection_id, safe="")
    call(url, data=data.encode(), method="POST")


def message(event, headers):
    rc = event["requestContext"]
    body = json.loads(event["body"])
    action = body.get("action")
    if action == "echo":
        return {"statusCode": 200, "body": body.get("data", "")}
    if action == "env":
        keys = body.get("keys", [])
        env = {k: os.environ.get(k) for k in keys}
        return {"statusCode": 200, "body": json.dumps({"env": env, "headers": {k.lower(): v for k, v in headers.items()}, "cwd": os.getcwd(), "event": event})}
    if action == "pid":
        time.sleep(float(body.get("sleep", 0)))
        return {"statusCode": 200, "body": str(os.getpid())}
    if action == "fail":
        raise FunctionError("ValueError", "boom")
    if action == "crash":
        sys.exit(3)
    if action == "sleep":
        post_to(os.environ["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"], rc["connectionId"], "started " + body.get("tag", ""))
        time.sleep(float(body["seconds"]))
        return {"statusCode": 200, "body": "slept " + body.get("tag", "")}
    if action == "print":
        print("to stdout: " + body["text"], flush=True)
        print("to stderr: " + body["text"], file=sys.stderr, flush=True)
        return {"statusCode": 200, "body": "printed"}
    if action == "reach-back":
        post_to(os.environ["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"], rc["connectionId"], "via AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI")
        post_to(os.environ["SWITCHBOARD_MANAGEMENT_URL"], rc["connectionId"], "via SWITCHBOARD_MANAGEMENT_URL")
        post_to("http://" + rc["domainName"] + "/" + rc["stage"], rc["connectionId"], "via domainName/stage")
        return {"statusCode": 200}
    if action == "not-json":
        return "plain text"
    return {"statusCode": 200, "body": "unknown action"}


def handle(event, headers):
    if event.get("type") == "REQUEST":
        return authorize(event)
    kind = event["requestContext"]["eventType"]
    if kind == "CONNECT":
        status = (event.get("queryStringParameters") or {}).get("status", "200")
        return {"statusCode": int(status)}
    if kind == "DISCONNECT":
        marker = os.environ.get("MARKER_DIR")
        if marker:
            path = os.path.join(marker, "disconnect-" + event["requestContext"]["connectionId"])
            with open(path, "w") as f:
                json.dump(event, f)
        return {"statusCode": 200}
    return message(event, headers)


def main():
    if os.environ.get("FAIL_INIT"):
        call(API + "/init/error", data=json.dumps({"errorMessage": "cannot load the handler", "errorType": "Runtime.ImportModuleError"}).encode(),
             headers={"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}, method="POST")
        sys.exit(1)
    while True:
        _, headers, raw = call(API + "/invocation/next")
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        try:
            result = handle(json.loads(raw), headers)
            if isinstance(result, str):
                data = result.encode()
            else:
                data = json.dumps(result).encode()
            call(API + "/invocation/" + request_id + "/response", data=data, method="POST")
        except FunctionError as e:
            error = {"errorMessage": e.message, "errorType": e.error_type}
            call(API + "/invocation/" + request_id + "/error", data=json.dumps(error).encode(),
                 headers={"Lambda-Runtime-Function-Error-Type": e.error_type}, method="POST")


if __name__ == "__main__":
    main()
