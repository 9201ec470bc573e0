// A REQUEST authorizer: ?token= must match the stack's ChatToken parameter.
exports.handler = async (event) => {
  const token = (event.queryStringParameters || {}).token;
  if (token !== process.env.CHAT_TOKEN) {
    throw new Error("Unauthorized");
  }
  return {
    principalId: "chat-user",
    policyDocument: {
      Version: "2012-10-17",
      Statement: [{ Action: "execute-api:Invoke", Effect: "Allow", Resource: event.methodArn }],
    },
    context: { nick: (event.queryStringParameters || {}).nick || "anonymous" },
  };
};
