// Answers every event with its body.
exports.handler = async (event) => ({ statusCode: 200, body: event.body });
