"""Posts back to the sender through the management endpoint built three ways, with boto3."""

import os

import boto3


def _reply(endpoint_url, event, how):
    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint_url)
    connection_id = event["requestContext"]["connectionId"]
    info = client.get_connection(ConnectionId=connection_id)
    text = f"{how} ok, connected at {info['ConnectedAt'].isoformat()}"
    client.post_to_connection(ConnectionId=connection_id, Data=text.encode())
    return {"statusCode": 200}


def api_id(event, context):
    ctx = event["requestContext"]
    region = os.environ["AWS_REGION"]
    url = f"https://{ctx['apiId']}.execute-api.{region}.amazonaws.com/{ctx['stage']}"
    return _reply(url, event, "python apiId")


def domain_name(event, context):
    ctx = event["requestContext"]
    return _reply(f"https://{ctx['domainName']}/{ctx['stage']}", event, "python domainName")


def from_environment(event, context):
    return _reply(None, event, "python environment")
