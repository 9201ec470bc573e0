module.exports.main = async () => ({ statusCode: 200, body: "nested path" });
