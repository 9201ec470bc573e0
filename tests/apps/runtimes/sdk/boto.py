import boto3


def handler(event, context):
    client = boto3.client("apigatewaymanagementapi")
    return {"statusCode": 200, "body": client.meta.endpoint_url}
