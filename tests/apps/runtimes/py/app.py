"""Context, errors and Decimal results, as Lambda's Python runtime gives them."""

import decimal
import json
import os


def handler(event, context):
    return {
        "statusCode": 200,
        "body": json.dumps(
            {
                "style": "python",
                "function_name": context.function_name,
                "aws_request_id": context.aws_request_id,
                "remaining": context.get_remaining_time_in_millis(),
                "memory": context.memory_limit_in_mb,
                "echo": event.get("body"),
                "pid": os.getpid(),
            }
        ),
        "count": decimal.Decimal("3"),
    }


def fails(event, context):
    raise ValueError("no good")
