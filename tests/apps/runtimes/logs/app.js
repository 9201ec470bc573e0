// Prints while it handles an invocation, so the inspector can show the line with its request.
exports.handler = async (event) => {
  console.log(`handling ${event.n}`);
  return { statusCode: 200, body: String(event.n) };
};
