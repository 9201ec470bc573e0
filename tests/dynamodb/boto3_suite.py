"""boto3 (client and resource, Key/Attr conditions) against a DynamoDB endpoint.

Usage: boto3_suite.py ENDPOINT_URL TABLE_PREFIX
Exits non-zero with the failed assertion on the first difference from DynamoDB's behaviour.
"""

import sys
import threading
from decimal import Decimal

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, prefix = sys.argv[1], sys.argv[2]
session = boto3.session.Session(
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
    region_name="us-east-1",
)
config = Config(retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=64)
client = session.client("dynamodb", endpoint_url=endpoint, config=config)
resource = session.resource("dynamodb", endpoint_url=endpoint, config=config)


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response
    raise AssertionError("the call succeeded")


# --- Tables: create, describe, list, delete ---
messages = f"{prefix}-messages"
client.create_table(
    TableName=messages,
    KeySchema=[
        {"AttributeName": "room", "KeyType": "HASH"},
        {"AttributeName": "ts", "KeyType": "RANGE"},
    ],
    AttributeDefinitions=[
        {"AttributeName": "room", "AttributeType": "S"},
        {"AttributeName": "ts", "AttributeType": "N"},
        {"AttributeName": "author", "AttributeType": "S"},
    ],
    GlobalSecondaryIndexes=[
        {
            "IndexName": "byAuthor",
            "KeySchema": [
                {"AttributeName": "author", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ],
    BillingMode="PAY_PER_REQUEST",
)
client.get_waiter("table_exists").wait(TableName=messages)
described = client.describe_table(TableName=messages)["Table"]
assert described["TableStatus"] == "ACTIVE", described
assert described["KeySchema"][0] == {"AttributeName": "room", "KeyType": "HASH"}, described
assert described["GlobalSecondaryIndexes"][0]["IndexName"] == "byAuthor", described
assert messages in client.list_tables()["TableNames"]
code, _ = error_code(lambda: client.describe_table(TableName=f"{prefix}-absent"))
assert code == "ResourceNotFoundException", code
code, _ = error_code(lambda: client.create_table(
    TableName=messages,
    KeySchema=[{"AttributeName": "room", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "room", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
))
assert code == "ResourceInUseException", code

# --- Items with the resource API and conditions ---
table = resource.Table(messages)
table.put_item(Item={"room": "lobby", "ts": 1, "author": "ana", "text": "hi", "likes": 0})
table.put_item(
    Item={"room": "lobby", "ts": 2, "author": "bo", "text": "hello", "likes": 0},
    ConditionExpression=Attr("room").not_exists(),
)
code, _ = error_code(lambda: table.put_item(
    Item={"room": "lobby", "ts": 2, "author": "bo", "text": "again"},
    ConditionExpression=Attr("room").not_exists(),
))
assert code == "ConditionalCheckFailedException", code
item = table.get_item(Key={"room": "lobby", "ts": 2})["Item"]
assert item["text"] == "hello", item
updated = table.update_item(
    Key={"room": "lobby", "ts": 1},
    UpdateExpression="SET likes = likes + :one, #t = :t",
    ConditionExpression=Attr("author").eq("ana"),
    ExpressionAttributeNames={"#t": "text"},
    ExpressionAttributeValues={":one": 1, ":t": "hi all"},
    ReturnValues="ALL_NEW",
)["Attributes"]
assert updated["likes"] == Decimal(1) and updated["text"] == "hi all", updated
code, _ = error_code(lambda: table.update_item(
    Key={"room": "lobby", "ts": 1},
    UpdateExpression="SET likes = likes + :one",
    ConditionExpression=Attr("author").eq("zed"),
    ExpressionAttributeValues={":one": 1},
))
assert code == "ConditionalCheckFailedException", code
code, _ = error_code(lambda: table.delete_item(
    Key={"room": "lobby", "ts": 2}, ConditionExpression=Attr("likes").gt(5)
))
assert code == "ConditionalCheckFailedException", code
old = table.delete_item(
    Key={"room": "lobby", "ts": 2},
    ConditionExpression=Attr("likes").eq(0),
    ReturnValues="ALL_OLD",
)["Attributes"]
assert old["author"] == "bo", old
assert "Item" not in table.get_item(Key={"room": "lobby", "ts": 2})

# --- Batch writes, Query on the key and on the GSI, paged Scan ---
with table.batch_writer() as batch:
    for ts in range(10, 60):
        batch.put_item(Item={"room": "games", "ts": ts, "author": "cy" if ts % 2 else "di", "text": f"m{ts}"})
answer = client.batch_write_item(RequestItems={messages: [
    {"PutRequest": {"Item": {"room": {"S": "games"}, "ts": {"N": "60"}, "author": {"S": "cy"}}}},
    {"DeleteRequest": {"Key": {"room": {"S": "games"}, "ts": {"N": "10"}}}},
]})
assert answer["UnprocessedItems"] == {}, answer
got = client.batch_get_item(RequestItems={messages: {"Keys": [
    {"room": {"S": "games"}, "ts": {"N": "11"}},
    {"room": {"S": "games"}, "ts": {"N": "10"}},
]}})["Responses"][messages]
assert [i["ts"]["N"] for i in got] == ["11"], got

page = table.query(
    KeyConditionExpression=Key("room").eq("games") & Key("ts").between(20, 29),
    ScanIndexForward=False,
)
assert [int(i["ts"]) for i in page["Items"]] == list(range(29, 19, -1)), page["Items"]
by_author = table.query(
    IndexName="byAuthor",
    KeyConditionExpression=Key("author").eq("cy") & Key("ts").lt(20),
)
assert [int(i["ts"]) for i in by_author["Items"]] == [11, 13, 15, 17, 19], by_author["Items"]
filtered = table.query(
    KeyConditionExpression=Key("room").eq("games"),
    FilterExpression=Attr("text").begins_with("m5"),
)
assert filtered["Count"] == 10 and filtered["ScannedCount"] == 50, filtered

seen, pages, start = [], 0, None
while True:
    kwargs = {"Limit": 7}
    if start:
        kwargs["ExclusiveStartKey"] = start
    page = table.scan(**kwargs)
    pages += 1
    seen.extend(page["Items"])
    start = page.get("LastEvaluatedKey")
    if not start:
        break
assert len(seen) == 51, len(seen)  # 50 games (one deleted, one added) + lobby's one
assert len({(i["room"], int(i["ts"])) for i in seen}) == 51
assert pages >= 8, pages
paginator = client.get_paginator("scan")
total = sum(p["Count"] for p in paginator.paginate(TableName=messages, PaginationConfig={"PageSize": 10}))
assert total == 51, total

# --- A cancelled transaction carries its reasons ---
code, response = error_code(lambda: client.transact_write_items(TransactItems=[
    {"Put": {"TableName": messages, "Item": {"room": {"S": "tx"}, "ts": {"N": "1"}}}},
    {"ConditionCheck": {
        "TableName": messages,
        "Key": {"room": {"S": "lobby"}, "ts": {"N": "1"}},
        "ConditionExpression": "author = :who",
        "ExpressionAttributeValues": {":who": {"S": "nobody"}},
    }},
]))
assert code == "TransactionCanceledException", code
reasons = [r["Code"] for r in response["CancellationReasons"]]
assert reasons == ["None", "ConditionalCheckFailed"], reasons
assert "Item" not in table.get_item(Key={"room": "tx", "ts": 1}), "nothing of it was applied"
client.transact_write_items(TransactItems=[
    {"Put": {"TableName": messages, "Item": {"room": {"S": "tx"}, "ts": {"N": "1"}}}},
    {"Update": {
        "TableName": messages,
        "Key": {"room": {"S": "lobby"}, "ts": {"N": "1"}},
        "UpdateExpression": "SET likes = likes + :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }},
])
assert table.get_item(Key={"room": "lobby", "ts": 1})["Item"]["likes"] == 2

# --- 50 concurrent conditional increments of one counter end at 50 ---
counters = f"{prefix}-counters"
client.create_table(
    TableName=counters,
    KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)
counter = resource.Table(counters)
counter.put_item(Item={"id": "c", "n": 0})
failures = []


def increment():
    # Read, then write only if nobody wrote in between (optimistic concurrency).
    thread_client = session.client("dynamodb", endpoint_url=endpoint, config=config)
    while True:
        current = int(thread_client.get_item(
            TableName=counters, Key={"id": {"S": "c"}}, ConsistentRead=True
        )["Item"]["n"]["N"])
        try:
            thread_client.update_item(
                TableName=counters,
                Key={"id": {"S": "c"}},
                UpdateExpression="SET n = :next",
                ConditionExpression="n = :seen",
                ExpressionAttributeValues={":next": {"N": str(current + 1)}, ":seen": {"N": str(current)}},
            )
            return
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                failures.append(e)
                return


threads = [threading.Thread(target=increment) for _ in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not failures, failures
final = counter.get_item(Key={"id": "c"}, ConsistentRead=True)["Item"]["n"]
assert final == 50, final

# --- Delete ---
client.delete_table(TableName=counters)
code, _ = error_code(lambda: client.describe_table(TableName=counters))
assert code == "ResourceNotFoundException", code
assert counters not in client.list_tables()["TableNames"]
print("boto3 suite passed")
