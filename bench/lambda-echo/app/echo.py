"""Answers every event with its body."""


def handler(event, context):
    return {"statusCode": 200, "body": event.get("body")}
