// The smallest handlers, for measuring what the runtime itself costs.
exports.handler = async () => ({ statusCode: 200 });
