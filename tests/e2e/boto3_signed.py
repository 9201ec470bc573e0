"""Signed management calls with boto3: the right key pair works, a wrong secret is refused.

Usage: boto3_signed.py ENDPOINT CONNECTION_ID ACCESS_KEY_ID SECRET
"""
import json
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, connection_id, key, secret = sys.argv[1:5]


def client(secret_access_key):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="eu-west-3",
        aws_access_key_id=key,
        aws_secret_access_key=secret_access_key,
    )


out = {}
good = client(secret)
good.post_to_connection(ConnectionId=connection_id, Data=b"signed and verified")
out["get"] = good.get_connection(ConnectionId=connection_id)["Identity"]["SourceIp"]
try:
    client("wrong-" + secret).post_to_connection(ConnectionId=connection_id, Data=b"forged")
except ClientError as e:
    out["wrong_secret"] = [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]]
print(json.dumps(out))
