const missing = require("a-package-nobody-installed");
exports.handler = async () => missing();
