// The clients every handler shares: endpoints come from the environment, as on AWS with
// AWS_ENDPOINT_URL_* set.
const { DynamoDBClient } = require("@aws-sdk/client-dynamodb");
const { DynamoDBDocumentClient } = require("@aws-sdk/lib-dynamodb");
const { ApiGatewayManagementApiClient } = require("@aws-sdk/client-apigatewaymanagementapi");

exports.db = DynamoDBDocumentClient.from(new DynamoDBClient({}));
exports.api = new ApiGatewayManagementApiClient({});
exports.table = process.env.TABLE_NAME;
