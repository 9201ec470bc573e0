"""switchboard's Python runtime loop: loads `module.function` the way Lambda's Python runtime
does and runs invocations from the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API). Written to
the data directory and started as `python3 -u python.py` in the function's code directory;
needs nothing but the standard library."""

import decimal
import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
HANDLER = os.environ.get("_HANDLER", "")
TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())

host, port = API.split(":")
connection = http.client.HTTPConnection(host, int(port))


def request(method, path, body=None, headers=None):
    global connection
    for attempt in (1, 2):
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        except (http.client.HTTPException, ConnectionError):
            if attempt == 2:
                raise
            connection = http.client.HTTPConnection(host, int(port))


class RuntimeError_(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def error_body(error, error_type=None):
    return json.dumps(
        {
            "errorType": error_type or type(error).__name__,
            "errorMessage": str(error),
            "stackTrace": traceback.format_tb(error.__traceback__),
        }
    )


def post_error(path, error, error_type=None):
    error_type = error_type or type(error).__name__
    request(
        "POST",
        path,
        error_body(error, error_type),
        {"content-type": "application/json", "lambda-runtime-function-error-type": error_type},
    )


def load_handler():
    module_name, _, function_name = HANDLER.rpartition(".")
    if not module_name or not function_name:
        raise RuntimeError_("Runtime.MalformedHandlerName", f"Bad handler '{HANDLER}': use module.function")
    sys.path.insert(0, TASK_ROOT)
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as e:
        raise RuntimeError_("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {e}")
    except ImportError as e:
        raise RuntimeError_("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}")
    handler = getattr(module, function_name, None)
    if handler is None:
        raise RuntimeError_(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return handler


class Context:
    """The `context` argument, as Lambda's Python runtime builds it."""

    def __init__(self, headers):
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = None
        self.client_context = None
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def to_json(value):
    # DynamoDB numbers come back from boto3 as Decimal.
    def default(o):
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    return json.dumps(value, default=default)


def main():
    try:
        handler = load_handler()
    except Exception as e:
        error_type = getattr(e, "error_type", None) or "Runtime.ImportModuleError"
        print(f"[ERROR] {error_type}: {e}", file=sys.stderr, flush=True)
        post_error("/2018-06-01/runtime/init/error", e, error_type)
        sys.exit(1)
    while True:
        status, headers, body = request("GET", "/2018-06-01/runtime/invocation/next")
        if status != 200:
            sys.exit(0)
        request_id = headers.get("lambda-runtime-aws-request-id")
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        try:
            event = json.loads(body)
            result = handler(event, Context(headers))
            payload = to_json(result)
        except Exception as e:
            traceback.print_exc()
            post_error(f"/2018-06-01/runtime/invocation/{request_id}/error", e)
            continue
        request(
            "POST",
            f"/2018-06-01/runtime/invocation/{request_id}/response",
            payload,
            {"content-type": "application/json"},
        )


if __name__ == "__main__":
    main()
