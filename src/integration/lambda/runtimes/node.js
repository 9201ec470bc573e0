// switchboard's Node.js runtime loop: loads the function's handler the way Lambda's Node.js
// runtime does and runs invocations from the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API).
// Written to the data directory and started as `node node.js` in the function's code
// directory; needs nothing but Node itself.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const { pathToFileURL } = require("url");

const API = process.env.AWS_LAMBDA_RUNTIME_API;
const HANDLER = process.env._HANDLER || "";
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || process.cwd();
// A compiled module to load instead of the handler's file (TypeScript handlers).
const COMPILED = process.env.SWITCHBOARD_HANDLER_MODULE || "";
// Where the SDK the runtime provides is installed, for ES modules (NODE_PATH serves require).
const SDK_DIR = process.env.SWITCHBOARD_SDK_NODE_MODULES || "";

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, pathname, body, headers) {
  return new Promise((resolve, reject) => {
    const [host, port] = API.split(":");
    const req = http.request(
      { host, port, method, path: pathname, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function errorBody(error, type) {
  const err = error instanceof Error ? error : new Error(String(error));
  return JSON.stringify({
    errorType: type || err.name || "Error",
    errorMessage: err.message,
    stackTrace: String(err.stack || "").split("\n").slice(1).map((l) => l.trim()),
  });
}

function postError(pathname, error, type) {
  const body = errorBody(error, type);
  return request("POST", pathname, body, {
    "content-type": "application/json",
    "lambda-runtime-function-error-type": type || (error && error.name) || "Error",
  });
}

class RuntimeError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

/** `src/functions/send/handler.main` -> ["src/functions/send/handler", "main"]. */
function splitHandler(handler) {
  const slash = handler.lastIndexOf("/");
  const dot = handler.indexOf(".", slash + 1);
  if (dot <= slash + 1 || dot === handler.length - 1) {
    throw new RuntimeError("Runtime.MalformedHandlerName", `Bad handler ${handler}: use file.export`);
  }
  return [handler.slice(0, dot), handler.slice(dot + 1)];
}

function nearestPackageType(dir) {
  for (let d = dir; ; d = path.dirname(d)) {
    const file = path.join(d, "package.json");
    if (fs.existsSync(file)) {
      try {
        return JSON.parse(fs.readFileSync(file, "utf8")).type || "commonjs";
      } catch {
        return "commonjs";
      }
    }
    if (path.dirname(d) === d) return "commonjs";
  }
}

function registerSdkResolver() {
  // ES modules ignore NODE_PATH: a resolve hook retries bare specifiers from the SDK cache.
  const mod = require("module");
  if (!SDK_DIR || typeof mod.register !== "function") return;
  const hook = `
    export async function resolve(specifier, context, next) {
      try {
        return await next(specifier, context);
      } catch (e) {
        if (e.code !== "ERR_MODULE_NOT_FOUND" || specifier.startsWith(".") || specifier.startsWith("/") || specifier.includes(":")) throw e;
        return next(specifier, { ...context, parentURL: ${JSON.stringify(pathToFileURL(path.join(SDK_DIR, "x.mjs")).href)} });
      }
    }`;
  mod.register("data:text/javascript," + encodeURIComponent(hook));
}

async function loadHandler() {
  const [modulePath, exportPath] = splitHandler(HANDLER);
  let file = COMPILED;
  if (!file) {
    for (const ext of [".js", ".mjs", ".cjs"]) {
      const candidate = path.resolve(TASK_ROOT, modulePath + ext);
      if (fs.existsSync(candidate)) {
        file = candidate;
        break;
      }
    }
  }
  if (!file) {
    throw new RuntimeError(
      "Runtime.ImportModuleError",
      `Error: Cannot find module '${modulePath}'\nRequire stack:\n- ${__filename}`,
    );
  }
  const esm =
    file.endsWith(".mjs") || (file.endsWith(".js") && nearestPackageType(path.dirname(file)) === "module");
  let module;
  try {
    if (esm) {
      registerSdkResolver();
      module = await import(pathToFileURL(file).href);
    } else {
      module = require(file);
    }
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new RuntimeError("Runtime.UserCodeSyntaxError", `${e.name}: ${e.message}`);
    }
    if (e && (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_MODULE_NOT_FOUND")) {
      throw new RuntimeError("Runtime.ImportModuleError", `Error: ${e.message}`);
    }
    throw e;
  }
  const walk = (root) =>
    exportPath.split(".").reduce((v, part) => (v == null ? undefined : v[part]), root);
  let handler = walk(module);
  // A CommonJS module imported as an ES module has its exports under `default`.
  if (handler === undefined && module && module.default) handler = walk(module.default);
  if (typeof handler !== "function") {
    throw new RuntimeError(
      "Runtime.HandlerNotFound",
      `${path.basename(modulePath)}.${exportPath} is undefined or not exported`,
    );
  }
  return handler;
}

function makeContext(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const context = {
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  return context;
}

/** Runs the handler: a promise it returns, or the callback it calls, ends the invocation. */
function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(result);
    };
    // The callback-era context methods (nodejs8.10 and before).
    context.done = done;
    context.succeed = (result) => done(null, result);
    context.fail = (err) => done(err == null ? new Error("handled") : err);
    try {
      const returned = handler(event, context, done);
      if (returned && typeof returned.then === "function") {
        returned.then((r) => done(null, r), (e) => done(e == null ? new Error("rejected") : e));
      } else if (handler.length < 3) {
        done(null, returned);
      }
    } catch (e) {
      done(e);
    }
  });
}

async function main() {
  let handler;
  try {
    handler = await loadHandler();
  } catch (e) {
    console.error(`${e.name}: ${e.message}`);
    await postError("/2018-06-01/runtime/init/error", e, e.name);
    process.exit(1);
  }
  for (;;) {
    const next = await request("GET", "/2018-06-01/runtime/invocation/next");
    if (next.status !== 200) {
      // The environment is being shut down.
      process.exit(0);
    }
    const id = next.headers["lambda-runtime-aws-request-id"];
    process.env._X_AMZN_TRACE_ID = next.headers["lambda-runtime-trace-id"] || "";
    let event;
    try {
      event = JSON.parse(next.body.toString("utf8"));
    } catch (e) {
      await postError(`/2018-06-01/runtime/invocation/${id}/error`, e, "Runtime.UnmarshalError");
      continue;
    }
    try {
      const result = await invoke(handler, event, makeContext(next.headers));
      const body = JSON.stringify(result === undefined ? null : result);
      await request("POST", `/2018-06-01/runtime/invocation/${id}/response`, body, {
        "content-type": "application/json",
      });
    } catch (e) {
      console.error(`Invoke Error: ${e && e.stack ? e.stack : e}`);
      await postError(`/2018-06-01/runtime/invocation/${id}/error`, e);
    }
  }
}

main().catch((e) => {
  console.error(`switchboard runtime: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
