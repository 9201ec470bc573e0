// Callback-style, nested exports and a thrown error, in CommonJS.
exports.handler = (event, context, callback) => {
  setTimeout(() => {
    callback(null, {
      statusCode: 200,
      body: JSON.stringify({
        style: "callback",
        functionName: context.functionName,
        awsRequestId: context.awsRequestId,
        remaining: context.getRemainingTimeInMillis(),
        waits: context.callbackWaitsForEmptyEventLoop,
        memory: context.memoryLimitInMB,
        arn: context.invokedFunctionArn,
        echo: event.body,
        pid: process.pid,
      }),
    });
  }, 1);
};

exports.api = { v1: { handler: async () => ({ statusCode: 200, body: "nested export" }) } };

exports.fails = async () => {
  throw new TypeError("bad input");
};

exports.slow = async (event) => {
  await new Promise((r) => setTimeout(r, Number(event.ms || 300)));
  return { statusCode: 200, body: String(process.pid) };
};

exports.notAFunction = 42;
