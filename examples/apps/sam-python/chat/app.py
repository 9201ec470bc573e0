"""A chat on boto3: connections in a table, `say` to everyone, `ping` answered in place."""

import json
import os

import boto3

table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])


def connect(event, context):
    table.put_item(Item={"connection_id": event["requestContext"]["connectionId"]})
    return {"statusCode": 200}


def disconnect(event, context):
    table.delete_item(Key={"connection_id": event["requestContext"]["connectionId"]})
    return {"statusCode": 200}


def say(event, context):
    ctx = event["requestContext"]
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{ctx['domainName']}/{ctx['stage']}",
    )
    text = json.loads(event["body"]).get("text", "")
    for item in table.scan()["Items"]:
        try:
            api.post_to_connection(ConnectionId=item["connection_id"], Data=text.encode())
        except api.exceptions.GoneException:
            table.delete_item(Key={"connection_id": item["connection_id"]})
    return {"statusCode": 200}


def ping(event, context):
    """Two-way: the body comes back to the sender."""
    n = json.loads(event["body"]).get("n", 0)
    body = {
        "reply": f"{os.environ['PING_PREFIX']} {n}",
        "function": context.function_name,
        "remaining_ms_positive": context.get_remaining_time_in_millis() > 0,
    }
    return {"statusCode": 200, "body": json.dumps(body)}
