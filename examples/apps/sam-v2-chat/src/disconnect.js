// $disconnect: forget the connection (a callback-style handler).
const AWS = require("aws-sdk");

const db = new AWS.DynamoDB.DocumentClient();

exports.handler = (event, context, callback) => {
  db.delete(
    { TableName: process.env.TABLE_NAME, Key: { connectionId: event.requestContext.connectionId } },
    (err) => callback(err, { statusCode: 200, body: "Disconnected." }),
  );
};
