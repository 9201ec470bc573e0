// $connect: remember the connection and the nick the authorizer passed on.
const AWS = require("aws-sdk");

const db = new AWS.DynamoDB.DocumentClient();

exports.handler = async (event) => {
  const { connectionId, authorizer } = event.requestContext;
  await db
    .put({
      TableName: process.env.TABLE_NAME,
      Item: { connectionId, nick: authorizer.nick },
    })
    .promise();
  return { statusCode: 200, body: "Connected." };
};
