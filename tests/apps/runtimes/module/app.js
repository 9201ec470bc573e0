// An ES module by its package.json.
export async function handler() {
  return { statusCode: 200, body: "type module" };
}
