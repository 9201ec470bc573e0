// Preloaded into switchboard's Node.js function processes (NODE_OPTIONS=--require): sends
// connections to the AWS hostnames of the services switchboard serves
// (`*.execute-api.*.amazonaws.com`, `dynamodb.*.amazonaws.com`) to switchboard's listener,
// keeping the name for TLS (SNI and certificate checks), so handlers that build those URLs
// reach switchboard without a change. Only this process is affected; the machine's DNS is not.
"use strict";

const net = require("net");
const tls = require("tls");

const target = process.env.SWITCHBOARD_REDIRECT ? new URL(process.env.SWITCHBOARD_REDIRECT) : null;
const SERVED = [/^[a-z0-9-]+\.execute-api\.[a-z0-9-]+\.amazonaws\.com$/i, /^dynamodb\.[a-z0-9-]+\.amazonaws\.com$/i];

function served(host) {
  return typeof host === "string" && SERVED.some((re) => re.test(host));
}

function redirect(options) {
  if (!target || !options || typeof options !== "object" || !served(options.host)) return options;
  return {
    ...options,
    servername: options.servername || options.host,
    host: target.hostname.replace(/^\[|\]$/g, ""),
    port: Number(target.port),
  };
}

function wrap(module, name) {
  const original = module[name];
  module[name] = function (...args) {
    if (args[0] && typeof args[0] === "object") {
      args[0] = redirect(args[0]);
    } else if (typeof args[0] === "number" && served(args[1])) {
      const options = redirect({ port: args[0], host: args[1] });
      args.splice(0, 2, options);
    }
    return original.apply(this, args);
  };
}

if (target) {
  wrap(tls, "connect");
  wrap(net, "connect");
  wrap(net, "createConnection");
}
