// An ES module by its extension.
import { basename } from "node:path";

export const handler = async (event, context) => ({
  statusCode: 200,
  body: JSON.stringify({ style: "mjs", file: basename(import.meta.url), fn: context.functionName }),
});
