"""Drives the @connections API with boto3, as a Lambda handler or script would.

Usage: boto3_management.py ENDPOINT CONNECTION_ID
Prints one JSON object describing what each call returned.
"""
import json
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, connection_id = sys.argv[1], sys.argv[2]
client = boto3.client(
    "apigatewaymanagementapi",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
)
out = {}
client.post_to_connection(ConnectionId=connection_id, Data=b"hello from boto3")
client.post_to_connection(ConnectionId=connection_id, Data="text data")
info = client.get_connection(ConnectionId=connection_id)
out["connected_at"] = info["ConnectedAt"].isoformat()
out["source_ip"] = info["Identity"]["SourceIp"]
out["last_active_at"] = info["LastActiveAt"].isoformat()
try:
    client.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1))
except ClientError as e:
    out["too_large"] = e.response["Error"]["Code"]
client.delete_connection(ConnectionId=connection_id)
try:
    client.post_to_connection(ConnectionId=connection_id, Data=b"after delete")
except client.exceptions.GoneException as e:
    out["gone"] = e.response["ResponseMetadata"]["HTTPStatusCode"]
try:
    client.get_connection(ConnectionId="not-an-id")
except ClientError as e:
    out["bad_id"] = [e.response["Error"]["Code"], e.response["Error"]["Message"]]
print(json.dumps(out))
