// dynalite (in memory) on loopback: node dynalite.cjs PORT
const dynalite = require("dynalite");
const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
server.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("listening"));
