"""One sequence of DynamoDB operations against switchboard and against moto's server; the
answers (items, counts, error types) must be the same.

Usage: differential.py SWITCHBOARD_URL
Starts moto's server (`moto[server]`) on a free loopback port and stops it at the end.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import ClientError

deserialize = TypeDeserializer().deserialize


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url):
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )


def plain(value):
    """Attribute values as plain data, sets sorted, so answers compare by content."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in (
        "S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"
    ):
        value = deserialize(value)
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "as_tuple"):  # Decimal
        return str(value.normalize()) if value == value.to_integral() else str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def key(item):
    return json.dumps(item, sort_keys=True)


def items(answer, ordered):
    found = [plain(i) for i in answer.get("Items", [])]
    return found if ordered else sorted(found, key=key)


def describe(table):
    return {
        "TableName": table["TableName"],
        "TableStatus": table["TableStatus"],
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(table["AttributeDefinitions"], key=key),
        "ItemCount": table.get("ItemCount"),
        "GlobalSecondaryIndexes": sorted(
            (
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in table.get("GlobalSecondaryIndexes", [])
            ),
            key=key,
        ),
    }


def run(c):
    """The sequence; each step's outcome is its answer (normalised) or its error's code."""
    out = []

    def step(name, call, shape=lambda a: None):
        try:
            answer = call()
        except ClientError as e:
            error = {"error": e.response["Error"]["Code"]}
            reasons = e.response.get("CancellationReasons")
            if reasons:
                error["reasons"] = [r.get("Code") for r in reasons]
            out.append((name, error))
            return
        out.append((name, {"ok": shape(answer)}))

    t = "diff-orders"
    step("create", lambda: c.create_table(
        TableName=t,
        KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "customer", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
            {"AttributeName": "status", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": "byStatus",
            "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    ), lambda a: describe(a["TableDescription"])["KeySchema"])
    step("create again", lambda: c.create_table(
        TableName=t,
        KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "customer", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    ))
    for i in range(1, 21):
        customer = f"c{i % 3}"
        status = ["open", "paid", "sent"][i % 3 if i % 2 else 1]
        step(f"put {i}", lambda: c.put_item(TableName=t, Item={
            "customer": {"S": customer}, "n": {"N": str(i)}, "status": {"S": status},
            "total": {"N": str(i * 1.5)}, "tags": {"SS": ["a", f"t{i % 4}"]},
        }))
    step("describe", lambda: c.describe_table(TableName=t), lambda a: describe(a["Table"]))
    step("put if absent fails", lambda: c.put_item(
        TableName=t, Item={"customer": {"S": "c1"}, "n": {"N": "1"}},
        ConditionExpression="attribute_not_exists(customer)",
    ))
    step("put without a key", lambda: c.put_item(TableName=t, Item={"customer": {"S": "c1"}}))
    step("put a wrong key type", lambda: c.put_item(TableName=t, Item={"customer": {"S": "c1"}, "n": {"S": "x"}}))
    step("get", lambda: c.get_item(TableName=t, Key={"customer": {"S": "c1"}, "n": {"N": "4"}}),
         lambda a: plain(a.get("Item")))
    step("get absent", lambda: c.get_item(TableName=t, Key={"customer": {"S": "zz"}, "n": {"N": "4"}}),
         lambda a: plain(a.get("Item")))
    step("get projected", lambda: c.get_item(
        TableName=t, Key={"customer": {"S": "c1"}, "n": {"N": "4"}},
        ProjectionExpression="#s, total", ExpressionAttributeNames={"#s": "status"},
    ), lambda a: plain(a.get("Item")))
    step("update", lambda: c.update_item(
        TableName=t, Key={"customer": {"S": "c1"}, "n": {"N": "4"}},
        UpdateExpression="SET total = total + :d, note = :note ADD tags :more REMOVE #s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":d": {"N": "10"}, ":note": {"S": "rush"}, ":more": {"SS": ["z"]}},
        ReturnValues="ALL_NEW",
    ), lambda a: plain(a["Attributes"]))
    step("update if fails", lambda: c.update_item(
        TableName=t, Key={"customer": {"S": "c1"}, "n": {"N": "4"}},
        UpdateExpression="SET note = :n", ConditionExpression="total < :small",
        ExpressionAttributeValues={":n": {"S": "x"}, ":small": {"N": "1"}},
    ))
    step("update creates", lambda: c.update_item(
        TableName=t, Key={"customer": {"S": "c9"}, "n": {"N": "99"}},
        UpdateExpression="SET visits = if_not_exists(visits, :zero) + :one",
        ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}},
        # ALL_NEW: moto answers UPDATED_NEW with the key attributes too, which DynamoDB
        # leaves out (keys are never updated).
        ReturnValues="ALL_NEW",
    ), lambda a: plain(a["Attributes"]))
    step("query", lambda: c.query(
        TableName=t, KeyConditionExpression="customer = :c AND n BETWEEN :a AND :b",
        ExpressionAttributeValues={":c": {"S": "c2"}, ":a": {"N": "2"}, ":b": {"N": "14"}},
    ), lambda a: (a["Count"], items(a, True)))
    step("query backwards, limited", lambda: c.query(
        TableName=t, KeyConditionExpression="customer = :c",
        ExpressionAttributeValues={":c": {"S": "c0"}}, ScanIndexForward=False, Limit=3,
    ), lambda a: (a["Count"], items(a, True), plain(a.get("LastEvaluatedKey"))))
    step("query filtered", lambda: c.query(
        TableName=t, KeyConditionExpression="customer = :c",
        FilterExpression="total > :t AND contains(tags, :tag)",
        ExpressionAttributeValues={":c": {"S": "c1"}, ":t": {"N": "5"}, ":tag": {"S": "t1"}},
    ), lambda a: (a["Count"], a["ScannedCount"], items(a, True)))
    step("query the index", lambda: c.query(
        TableName=t, IndexName="byStatus", KeyConditionExpression="#s = :s AND n > :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "paid"}, ":n": {"N": "5"}},
    ), lambda a: (a["Count"], items(a, True)))
    step("query a bad expression", lambda: c.query(
        TableName=t, KeyConditionExpression="total = :t", ExpressionAttributeValues={":t": {"N": "1"}},
    ))
    step("scan filtered", lambda: c.scan(
        TableName=t, FilterExpression="begins_with(customer, :c) AND attribute_exists(note)",
        ExpressionAttributeValues={":c": {"S": "c"}},
    ), lambda a: (a["Count"], a["ScannedCount"], items(a, False)))

    def paged():
        seen, pages, start = [], 0, None
        while True:
            kwargs = {"TableName": t, "Limit": 6}
            if start:
                kwargs["ExclusiveStartKey"] = start
            a = c.scan(**kwargs)
            pages += 1
            seen.extend(items(a, False))
            start = a.get("LastEvaluatedKey")
            if not start:
                return {"pages": pages, "items": sorted(seen, key=key)}

    step("scan in pages", paged, lambda a: a)
    step("scan count", lambda: c.scan(TableName=t, Select="COUNT"), lambda a: (a["Count"], a["ScannedCount"]))
    step("batch write", lambda: c.batch_write_item(RequestItems={t: [
        {"PutRequest": {"Item": {"customer": {"S": "b"}, "n": {"N": str(i)}}}} for i in range(5)
    ] + [{"DeleteRequest": {"Key": {"customer": {"S": "c1"}, "n": {"N": "1"}}}}]}),
        lambda a: a["UnprocessedItems"])
    step("batch get", lambda: c.batch_get_item(RequestItems={t: {"Keys": [
        {"customer": {"S": "b"}, "n": {"N": "3"}},
        {"customer": {"S": "c1"}, "n": {"N": "1"}},
        {"customer": {"S": "c2"}, "n": {"N": "2"}},
    ]}}), lambda a: sorted((plain(i) for i in a["Responses"][t]), key=key))
    step("transaction cancelled", lambda: c.transact_write_items(TransactItems=[
        {"Put": {"TableName": t, "Item": {"customer": {"S": "tx"}, "n": {"N": "1"}}}},
        {"ConditionCheck": {
            "TableName": t, "Key": {"customer": {"S": "c2"}, "n": {"N": "2"}},
            "ConditionExpression": "attribute_not_exists(customer)",
        }},
        {"Delete": {"TableName": t, "Key": {"customer": {"S": "b"}, "n": {"N": "0"}}}},
    ]))
    step("transaction applied", lambda: c.transact_write_items(TransactItems=[
        {"Put": {"TableName": t, "Item": {"customer": {"S": "tx"}, "n": {"N": "1"}}}},
        {"Update": {
            "TableName": t, "Key": {"customer": {"S": "c2"}, "n": {"N": "2"}},
            "UpdateExpression": "SET shipped = :y", "ExpressionAttributeValues": {":y": {"BOOL": True}},
        }},
    ]))
    step("transact get", lambda: c.transact_get_items(TransactItems=[
        {"Get": {"TableName": t, "Key": {"customer": {"S": "tx"}, "n": {"N": "1"}}}},
        {"Get": {"TableName": t, "Key": {"customer": {"S": "c2"}, "n": {"N": "2"}}}},
    ]), lambda a: [plain(r.get("Item")) for r in a["Responses"]])
    step("delete if fails", lambda: c.delete_item(
        TableName=t, Key={"customer": {"S": "c2"}, "n": {"N": "2"}},
        ConditionExpression="shipped = :n", ExpressionAttributeValues={":n": {"BOOL": False}},
    ))
    step("delete", lambda: c.delete_item(
        TableName=t, Key={"customer": {"S": "c2"}, "n": {"N": "2"}}, ReturnValues="ALL_OLD",
    ), lambda a: plain(a["Attributes"]))
    step("count after", lambda: c.scan(TableName=t, Select="COUNT"), lambda a: a["Count"])
    step("ttl on", lambda: c.update_time_to_live(
        TableName=t, TimeToLiveSpecification={"AttributeName": "expires", "Enabled": True},
    ), lambda a: a["TimeToLiveSpecification"])
    step("ttl described", lambda: c.describe_time_to_live(TableName=t),
         lambda a: a["TimeToLiveDescription"])
    step("get from a missing table", lambda: c.get_item(TableName="diff-absent", Key={"k": {"S": "v"}}))
    step("list", lambda: c.list_tables(), lambda a: a["TableNames"])
    step("delete table", lambda: c.delete_table(TableName=t), lambda a: a["TableDescription"]["TableName"])
    step("describe deleted", lambda: c.describe_table(TableName=t))
    return out


def main():
    switchboard = sys.argv[1]
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        moto_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(moto_url + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or moto.poll() is not None:
                    raise SystemExit("moto's server did not start")
                time.sleep(0.1)
        ours = run(client(switchboard))
        theirs = run(client(moto_url))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    differences = [
        f"{name}:\n  switchboard {json.dumps(a, sort_keys=True)}\n  moto        {json.dumps(b, sort_keys=True)}"
        for (name, a), (_, b) in zip(ours, theirs)
        if a != b
    ]
    if differences:
        print("\n".join(differences))
        raise SystemExit(f"{len(differences)} of {len(ours)} steps differ")
    errors = sum(1 for _, outcome in ours if "error" in outcome)
    print(f"{len(ours)} steps agree ({errors} of them errors)")


main()
