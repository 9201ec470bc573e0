#!/usr/bin/env python3
"""The connection table of the usual API Gateway WebSocket app, as a custom-runtime function:
$connect puts the connection id, $disconnect deletes it, `sendmessage` scans the table and
posts to every connection (deleting the ones that answer 410).

boto3 finds both endpoints through the environment switchboard gives functions
(AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI); the code names none.
"""
import json
import os
import urllib.request

import boto3

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
TABLE = os.environ.get("TABLE_NAME", "connections")
dynamodb = boto3.client("dynamodb")
management = boto3.client("apigatewaymanagementapi")


def call(url, data=None):
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request) as r:
        return r.headers, r.read()


def handle(event):
    context = event["requestContext"]
    connection_id = context["connectionId"]
    kind = context["eventType"]
    if kind == "CONNECT":
        dynamodb.put_item(TableName=TABLE, Item={"connectionId": {"S": connection_id}})
        return {"statusCode": 200}
    if kind == "DISCONNECT":
        dynamodb.delete_item(TableName=TABLE, Key={"connectionId": {"S": connection_id}})
        return {"statusCode": 200}
    body = json.loads(event["body"])
    if body.get("action") == "endpoint":
        return {"statusCode": 200, "body": os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", "")}
    data = body.get("data", "")
    for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE):
        for item in page["Items"]:
            target = item["connectionId"]["S"]
            try:
                management.post_to_connection(ConnectionId=target, Data=data.encode())
            except management.exceptions.GoneException:
                dynamodb.delete_item(TableName=TABLE, Key={"connectionId": {"S": target}})
    return {"statusCode": 200}


def main():
    while True:
        headers, raw = call(API + "/invocation/next")
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        try:
            result = json.dumps(handle(json.loads(raw))).encode()
            call(API + "/invocation/" + request_id + "/response", result)
        except Exception as e:  # reported to the runtime API like Lambda's own runtimes do
            error = {"errorMessage": str(e), "errorType": type(e).__name__}
            call(API + "/invocation/" + request_id + "/error", json.dumps(error).encode())


if __name__ == "__main__":
    main()
